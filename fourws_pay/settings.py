"""Configuration: one ``Settings`` model, from keyword arguments or ``FOURWS_*`` variables.

``Settings(...)`` takes keyword arguments only and never reads the environment, so tests are
not at the mercy of a developer's shell; ``Settings.from_env()`` reads ``FOURWS_<FIELD>`` (field
name in upper case: ``FOURWS_APPLICATION_ID``, ``FOURWS_PASSWORD``, ``FOURWS_CMD_GET_GIFTCARD``)
and lets keyword arguments override it.

A shop must say which 4WS tenant it talks to: ``from_env()`` raises
``MissingConfigurationError`` naming the ``FOURWS_*`` variables of ``REQUIRED_FIELDS`` that
were given nowhere, unless ``FOURWS_SANDBOX=1`` (``sandbox=True``) asks for the sandbox's
defaults (``SANDBOX_DEFAULTS``: the address and credentials ``fourws-pay sandbox serve``
prints), which fill every tenant setting left unset.

The 4WS reference does not show every ``cmd`` name, parameter name or Data management path;
the defaults below are the reference's [inferred] guesses and are settings precisely so that
a tenant that differs needs no code change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from fourws_pay.errors import ConfigurationError, MissingConfigurationError

ENV_PREFIX = "FOURWS_"

# What a shop must give (environment or keyword arguments) unless in sandbox mode: where 4WS
# is and who we are there. The rest has working defaults (language EN, no site or entity
# restriction); these would otherwise default to a local sandbox address and empty
# credentials, and a shop would start and fail only at its first card.
REQUIRED_FIELDS: tuple[str, ...] = (
    "documents_base_url",
    "application_id",
    "namespace",
    "username",
    "password",
    "company_id",
)

# The served sandbox's own tenant (``fourws-pay sandbox serve`` on its default port, demo
# seed): in sandbox mode they fill every one of these fields that was not given.
SANDBOX_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "documents_base_url": "http://127.0.0.1:8765",
        "data_base_url": "http://127.0.0.1:8765",  # what `sandbox serve` prints too
        "application_id": "SANDBOX",
        "namespace": "sandbox",
        "language_id": "EN",
        "username": "sandbox",
        "password": "sandbox-password",
        "company_id": "XXXX",
        "site_id": "500",
        "entity_code": "440",
        # the demo seed's financial item: a sandbox sells cards as it comes
        "issuing_item_code": "GIFTCARD_IVA_TAGLIO_100",
    }
)

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})


def env_name(field: str) -> str:
    """The ``FOURWS_*`` variable of a settings field (``password`` -> ``FOURWS_PASSWORD``)."""
    return ENV_PREFIX + field.upper()


def _given(value: Any) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is not None and value != ""


def _is_true(value: Any) -> bool:
    """``sandbox`` as pydantic will read it (an unreadable value is left to its error)."""
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return value is True or value == 1


class RetryPolicy(BaseModel):
    """How idempotent reads are retried (balance-changing POSTs never are, once sent).

    Waits grow as ``backoff_base * 2**(attempt-1)`` capped at ``backoff_max``, with full
    jitter; a ``Retry-After`` from 4WS wins when present. One longer than
    ``retry_after_cap`` is not waited at all: ``RateLimitedError`` (with ``retry_after``) is
    raised at once, since retrying sooner than asked would only be refused again.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", hide_input_in_errors=True, defer_build=True
    )

    max_attempts: int = Field(default=3, ge=1, le=10)
    backoff_base: float = Field(default=0.25, ge=0)
    backoff_max: float = Field(default=8.0, ge=0)
    retry_after_cap: float = Field(default=60.0, ge=0)


class Settings(BaseModel):
    """Everything fourws-pay needs to talk to one 4WS tenant and to run payments.

    Secrets (``password``) are ``SecretStr``: they print as ``**********`` in ``repr`` and
    logs, and are revealed only when a request header is built.
    """

    # hide_input_in_errors: a value given to the wrong field may be a secret
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        hide_input_in_errors=True,
        defer_build=True,  # validators built on first use: keeps `import` fast
    )

    # Sandbox mode (FOURWS_SANDBOX=1): unset tenant settings take SANDBOX_DEFAULTS, and
    # nothing is required. Off, from_env() refuses to run without REQUIRED_FIELDS.
    sandbox: bool = False

    # Where 4WS lives. The reference never shows a host; it is handed over per tenant.
    documents_base_url: str = "http://127.0.0.1:8765"
    data_base_url: str | None = None  # Data management API; defaults to documents_base_url

    # Documents API credentials, sent as headers on every call (docs/4ws-reference.md §2).
    application_id: str = ""
    namespace: str = ""
    language_id: str = "EN"
    username: str = ""
    password: SecretStr = SecretStr("")
    company_id: str = ""
    site_id: str = ""
    load_roles: bool = True
    entity_code: str = ""  # this shop's entity; cards with flgNetworkUsage=N must match it

    # HTTP behaviour.
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=15.0, gt=0)
    retry: RetryPolicy = RetryPolicy()

    # Documents API cmd names ([inferred] where the reference does not show them).
    cmd_get_giftcard: str = "getGiftcard_v1"
    cmd_update_giftcard: str = "updateGiftcard_v1"
    cmd_generate_giftcards: str = "generateGiftcards_v1"
    cmd_giftcard_pdf: str = "generateGiftcardPdf_v1"
    cmd_loyalty_vouchers: str = "getLoyaltyVouchers_v1"
    cmd_loyalty_vouchers_between: str = "getLoyaltyVouchersByInterval_v1"
    cmd_last_loyalty_vouchers: str = "getLastLoyaltyVouchers_v1"
    # Query parameter names ([inferred] where not shown).
    param_giftcard_barcode: str = "barcode"
    param_card_barcode: str = "cardBarcode"
    param_interval_start: str = "startDate"
    param_interval_end: str = "endDate"
    param_last_from: str = "fromDateTime"
    # updateGiftcard is documented as text/plain with a JS literal; we send strict JSON
    # (also a valid JS literal) under this content type.
    update_giftcard_content_type: str = "text/plain"

    # Data management API paths ([inferred] except insert barcode, which is documented).
    path_login: str = "/api/v1/login"
    path_insert_barcode: str = "/api/v1/products/{item_code}/barcodes"
    path_sku_from_barcode: str = "/api/v1/barcodes/{barcode}"
    path_delete_barcode: str = "/api/v1/products/{item_code}/barcodes/{barcode}"
    path_generate_missing_barcodes: str = "/api/v1/products/{item_code}/barcodes/generate"
    token_refresh_margin: float = Field(default=30.0, ge=0)  # seconds before expiry

    # Payments.
    reservation_ttl: float = Field(default=900.0, gt=0)  # seconds a hold lives
    callback_base_url: str = "http://127.0.0.1:8000/fourws/callback"
    callback_timeout: float = Field(default=600.0, gt=0)  # seconds to wait for 4WS's callback
    reconcile_window: float = Field(default=3600.0, gt=0)  # then manual review
    # A balance that moved by exactly the amount settles an ambiguous operation as applied;
    # False: never (only 4WS's callback or an operator's resolve), see docs/operations.md.
    settle_by_balance: bool = True
    # Seconds after which reconcile reads the card of an enqueued operation that others
    # are queued behind, instead of waiting callback_timeout for its callback.
    queue_probe_after: float = Field(default=30.0, gt=0)
    check_cache_ttl: float = Field(default=5.0, ge=0)  # 0 disables the check() cache
    forfeit_partial_remainder: bool = False  # flgPartiallyUsage=N: allow spending less
    # Selling cards (``issue_cards``): the 4WS financial item generated for a sold card,
    # and the activation's insert-only fields (updateGiftcard; unset ones are not sent).
    issuing_item_code: str = ""
    issuing_country: str | None = None
    issuing_branch_code: str | None = None
    issuing_price_list: str | None = None
    delivery_retry_after: float = Field(default=300.0, gt=0)  # a stuck delivery is retried
    ledger_url: str = "sqlite:///fourws-pay-ledger.db"
    throttle_window: float = Field(default=600.0, gt=0)
    throttle_limit: int = Field(default=10, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _sandbox_defaults(cls, values: Any) -> Any:
        """In sandbox mode, what was not given is the sandbox's, never what was given (even
        empty: ``Settings(**s.model_dump())`` rebuilds ``s`` exactly)."""
        if isinstance(values, Mapping) and _is_true(values.get("sandbox")):
            return {**SANDBOX_DEFAULTS, **values}
        return values

    @field_validator("documents_base_url", "data_base_url", "callback_base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator(
        "application_id",
        "namespace",
        "language_id",
        "username",
        "password",
        "company_id",
        "site_id",
    )
    @classmethod
    def _header_safe(cls, value: str | SecretStr) -> str | SecretStr:
        """These travel as HTTP headers: a CR/LF would split the request (or make the HTTP
        library refuse it mid-send, which looks like a failure after sending)."""
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
            raise ValueError("must not contain control characters (it is sent as a header)")
        return value

    @property
    def data_url(self) -> str:
        """Base URL of the Data management API."""
        return self.data_base_url or self.documents_base_url

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        require_tenant: bool = True,
        **overrides: Any,
    ) -> Settings:
        """Build settings from ``FOURWS_*`` variables, then ``overrides``.

        Retry fields are ``FOURWS_RETRY_MAX_ATTEMPTS`` and so on. Raises
        ``ConfigurationError`` naming the offending variable, never the secret's value, and
        ``MissingConfigurationError`` naming the variables of ``REQUIRED_FIELDS`` given
        neither in ``environ`` nor in ``overrides`` (empty counts as not given), unless
        sandbox mode is on. ``require_tenant=False`` skips that check, for callers that do
        not talk to 4WS (the command line's ledger commands).
        """
        values, sources = cls._from_env(environ, overrides)
        if require_tenant:
            missing = cls._missing(values)  # before building: an empty URL is missing too
            if missing:
                raise MissingConfigurationError(missing)
        return cls._build(values, sources)

    @classmethod
    def missing_from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> tuple[str, ...]:
        """The ``FOURWS_*`` variables ``from_env`` would call missing (empty in sandbox
        mode); bad values raise ``ConfigurationError`` as ``from_env`` does."""
        values, sources = cls._from_env(environ, overrides)
        missing = cls._missing(values)
        cls._build(values, sources)
        return missing

    @staticmethod
    def _missing(values: Mapping[str, Any]) -> tuple[str, ...]:
        """Required fields not given (empty is not given), none in sandbox mode."""
        if _is_true(values.get("sandbox")):
            return ()
        return tuple(env_name(f) for f in REQUIRED_FIELDS if not _given(values.get(f)))

    @classmethod
    def _from_env(
        cls, environ: Mapping[str, str] | None, overrides: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The field values (variables, then overrides) and which variable gave which."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        retry: dict[str, Any] = {}
        sources: dict[str, str] = {}  # field path -> the variable it came from
        for name in cls.model_fields:
            key = env_name(name)
            if name == "retry":
                for sub in RetryPolicy.model_fields:
                    sub_key = f"{ENV_PREFIX}RETRY_{sub.upper()}"
                    if sub_key in env:
                        retry[sub] = env[sub_key]
                        sources[f"retry.{sub}"] = sub_key
            elif key in env:
                values[name] = env[key]
                sources[name] = key
        if retry:
            values["retry"] = retry
        values.update(overrides)
        for name in overrides:
            for path in [p for p in sources if p == name or p.startswith(name + ".")]:
                del sources[path]
        return values, sources

    @classmethod
    def build(cls, **values: Any) -> Settings:
        """Like ``Settings(**values)`` but raising ``ConfigurationError`` on bad values."""
        return cls._build(values, {})

    @classmethod
    def _build(cls, values: dict[str, Any], sources: Mapping[str, str]) -> Settings:
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                path = ".".join(str(p) for p in err["loc"])
                where = f"{sources[path]} ({path})" if path in sources else path
                problems.append(f"{where}: {err['msg']}")
            raise ConfigurationError(
                f"invalid fourws-pay settings: {'; '.join(problems)}"
            ) from None
