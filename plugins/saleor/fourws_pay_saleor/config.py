"""The App's own settings: where Saleor reaches it, where it keeps its state, whom it trusts.

Separate from ``fourws_pay.Settings`` (which describes the 4WS tenant) because one 4WS tenant
can serve several Saleor instances and the App is deployed on its own. Read from keyword
arguments, or ``FOURWS_SALEOR_<FIELD>`` variables through ``AppConfig.from_env()``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fourws_pay.errors import ConfigurationError

ENV_PREFIX = "FOURWS_SALEOR_"


class AppConfig(BaseModel):
    """Settings of one running App.

    ``app_url`` is the public base URL at which Saleor can reach this App; every URL in the
    manifest is built from it. ``allowed_saleor_api_urls`` restricts which Saleor instances
    may install the App: leave it empty only on a private network, because an App that
    accepts any installation also accepts webhooks signed by any Saleor that installed it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_url: str = "http://127.0.0.1:8300"
    app_id: str = "fourws-pay.giftcard"
    app_name: str = "4WS gift cards"
    app_version: str = "0.2.0"
    author: str = "fourws-pay"
    store_path: str = "fourws-pay-saleor.db"
    allowed_saleor_api_urls: tuple[str, ...] = ()
    verify_token_on_register: bool = True
    # Seconds a fetched JWKS is trusted before it is fetched again.
    jwks_ttl: float = Field(default=300.0, ge=0)
    # Seconds for every call to Saleor; Saleor itself gives a sync webhook ~20 s.
    http_timeout: float = Field(default=10.0, gt=0)
    # How hard transactionEventReport is retried within one flush.
    report_max_attempts: int = Field(default=5, ge=1, le=20)
    report_backoff_base: float = Field(default=0.5, ge=0)
    report_backoff_max: float = Field(default=8.0, ge=0)
    # Seconds a sync webhook may work before the App answers "pending" and finishes in the
    # background (Saleor gives the whole call ~20 s: WEBHOOK_SYNC_TIMEOUT).
    sync_budget: float = Field(default=12.0, gt=0, le=18)
    # Seconds an authorization (the App's hold on the card's balance) lives. Shops charge on
    # fulfilment, hours or days after checkout; see the README on what holding costs.
    authorization_ttl: float = Field(default=7 * 24 * 3600.0, gt=0)
    # How long a pending charge/refund/cancel is retried before it is reported as failed.
    action_give_up_after: float = Field(default=24 * 3600.0, gt=0)
    # Seconds sent reports, remembered deliveries and finished actions are kept.
    retention: float = Field(default=7 * 24 * 3600.0, gt=0)
    # Requests kept (unverified, untouched) while Saleor's JWKS cannot be fetched.
    unverified_limit: int = Field(default=1000, ge=0)
    # Seconds a handler waits for another worker holding the same transaction.
    lease_wait: float = Field(default=15.0, gt=0)
    lease_ttl: float = Field(default=60.0, gt=0)
    # paymentMethodDetails are sent in the shape the calling Saleor (Saleor-Version header)
    # accepts: GIFT_CARD from 3.23, OTHER for 3.21/3.22, none when the version is unknown.
    send_payment_method_details: bool = True
    payment_method_name: str = Field(default="4WS gift card", max_length=256)
    payment_method_brand: str = Field(default="4WS", max_length=40)
    # Seconds between maintenance passes (sweep expired holds, reconcile unknown operations,
    # flush reports) while the server runs; 0 turns the loop off.
    maintenance_interval: float = Field(default=30.0, ge=0)
    # Answer ``fourws_pay_callback_base_url`` so that 4WS posts callbacks to this App.
    provide_callback_base_url: bool = True
    # Path (under app_url) of the 4WS callback receiver; Settings.callback_base_url must
    # point at it for 4WS callbacks to reach this App.
    callback_path: str = "/fourws/callback"
    # Per Saleor channel (slug), overrides of the 4WS settings (fourws_pay.Settings field
    # names: entity_code, application_id, username, password, ledger_url, ...): a channel
    # can sell through another 4WS tenant or entity. JSON in FOURWS_SALEOR_CHANNEL_SETTINGS.
    channel_settings: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False)
    # Sell 4WS gift cards (``selling.py``): the manifest then asks for MANAGE_ORDERS and
    # subscribes to ORDER_FULLY_PAID. Off by default: a payment App needs neither.
    sell_giftcards: bool = False
    # "package.module:function" called as function(sale, cards, pdf_url) to hand sold cards
    # to the buyer (e-mail); create_app(deliver_giftcards=...) takes precedence.
    giftcard_delivery: str = ""
    # The staff back office at /backoffice (``backoffice.py``): Saleor staff with
    # HANDLE_PAYMENTS sign in with their Saleor token; the manifest adds it to the
    # Dashboard's Orders menu. On by default: it is where manual reviews are resolved.
    backoffice: bool = True
    # Signs back office sessions and form tokens; give every worker the same one. Empty: a
    # random one per process (sessions end on restart).
    backoffice_secret: str = Field(default="", repr=False)
    # Seconds a back office sign-in lasts.
    backoffice_session_ttl: float = Field(default=3600.0, gt=0, le=24 * 3600)
    # The session cookie's SameSite: "strict" works when the Dashboard and the App are on
    # the same site (or the console is opened on its own); a Dashboard on another site
    # needs "none" (then the cookie is Secure and Partitioned, and the App must be https).
    backoffice_cookie_samesite: Literal["strict", "lax", "none"] = "strict"

    @field_validator("app_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("allowed_saleor_api_urls", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("channel_settings", mode="before")
    @classmethod
    def _channels(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError("must be a JSON object of channel slug -> settings") from None
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) for k, v in value.items()
        ):
            raise ValueError("must be a JSON object of channel slug -> settings")
        return value

    @field_validator("callback_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _cookie(self) -> AppConfig:
        if self.backoffice_cookie_samesite == "none" and not self.app_url.startswith("https://"):
            raise ValueError("backoffice_cookie_samesite 'none' needs an https:// app_url")
        return self

    def url(self, path: str) -> str:
        """An absolute URL of this App."""
        return f"{self.app_url}{path}"

    def is_allowed(self, saleor_api_url: str) -> bool:
        """Whether a Saleor instance may install this App."""
        if not self.allowed_saleor_api_urls:
            return True
        wanted = saleor_api_url.rstrip("/")
        return any(wanted == allowed.rstrip("/") for allowed in self.allowed_saleor_api_urls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> AppConfig:
        """Build from ``FOURWS_SALEOR_*`` variables, then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if key in env:
                values[name] = env[key]
        values.update(overrides)
        try:
            return cls(**values)
        except ValidationError as exc:
            fields = ", ".join(
                ENV_PREFIX + str(err["loc"][0]).upper() for err in exc.errors() if err["loc"]
            )
            raise ConfigurationError(f"invalid Saleor App setting(s): {fields}") from None
