"""Where a command's settings, client, clock and ledger come from.

Precedence, lowest first: the ``.env`` file (``--env-file``, or ``./.env`` when present),
the process environment (``FOURWS_*``), then command-line flags. The ``.env`` file is read
into a mapping, never into ``os.environ``, so nothing leaks into child processes.

``Runtime`` is the seam for tests and embedding: ``CliRunner().invoke(app, args,
obj=Runtime(...))`` wires every command to an in-process sandbox and a ``ManualClock``
without patching globals.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fourws_pay.api.client import AsyncClient, Client
from fourws_pay.clock import Clock, SystemClock
from fourws_pay.errors import ConfigurationError, MissingConfigurationError
from fourws_pay.settings import Settings

if TYPE_CHECKING:
    from fourws_pay.payments import GiftCardPayments

ClientFactory = Callable[[Settings, Clock], Client]

# Where a command's missing settings may be set (the library's error names the variables).
MISSING_HINT = (
    "set them in the environment, ./.env or --env-file (`fourws-pay sandbox serve` prints a "
    "set for the sandbox), or FOURWS_SANDBOX=1 for the sandbox's defaults"
)


AsyncClientFactory = Callable[[Settings, Clock], AsyncClient]


def _default_client(settings: Settings, clock: Clock) -> Client:
    return Client(settings, clock=clock)


def _default_async_client(settings: Settings, clock: Clock) -> AsyncClient:
    return AsyncClient(settings, clock=clock)


@dataclass
class Runtime:
    """The outside world a command talks to. Defaults are the real ones."""

    make_client: ClientFactory = _default_client
    make_async_client: AsyncClientFactory = _default_async_client
    clock: Clock = field(default_factory=SystemClock)
    environ: Mapping[str, str] | None = None  # None: os.environ
    read_dotenv: bool = True


@dataclass
class CliContext:
    """Per-invocation state, built by the root callback and found in ``ctx.obj``."""

    runtime: Runtime
    overrides: dict[str, Any] = field(default_factory=dict)
    env_file: Path | None = None
    _settings: Settings | None = None
    _client: Client | None = None
    _payments: GiftCardPayments | None = None

    def environment(self) -> dict[str, str]:
        """The ``.env`` file's values overlaid by the process environment."""
        values: dict[str, str] = {}
        path = self.env_file
        if path is None and self.runtime.read_dotenv and Path(".env").is_file():
            path = Path(".env")
        if path is not None:
            if not path.is_file():
                raise ConfigurationError(f"env file not found: {path}")
            from dotenv import dotenv_values

            values.update({k: v for k, v in dotenv_values(path).items() if v is not None})
        environ = os.environ if self.runtime.environ is None else self.runtime.environ
        values.update({k: v for k, v in environ.items() if k.startswith("FOURWS_")})
        return values

    def built_settings(self) -> Settings | None:
        """The settings if this invocation built them already (error reporting uses it)."""
        return self._settings

    def require_api_settings(self) -> None:
        """Raise ``MissingConfigurationError`` unless everything 4WS needs was given
        (``fourws_pay.settings.REQUIRED_FIELDS``, by variable, ``.env`` or flag; nothing in sandbox
        mode): without them the client would fall back to the sandbox address and empty
        credentials, and 4WS's "Access Denied" reads like wrong credentials, not none."""
        missing = Settings.missing_from_env(self.environment(), **self.overrides)
        if missing:
            raise MissingConfigurationError(missing, hint=MISSING_HINT)

    def settings(self, **extra: Any) -> Settings:
        """Settings for this invocation (``extra`` overrides flags, e.g. a callback URL)."""
        if self._settings is None:
            # ledger-only commands need no tenant: commands that talk to 4WS check first
            self._settings = Settings.from_env(
                self.environment(), require_tenant=False, **self.overrides
            )
        if extra:
            return Settings.build(**{**self._settings.model_dump(), **extra})
        return self._settings

    def client(self) -> Client:
        """One client per invocation, closed when the command ends."""
        if self._client is None:
            self.require_api_settings()
            self._client = self.runtime.make_client(self.settings(), self.runtime.clock)
        return self._client

    def async_client(self) -> AsyncClient:
        """A new asyncio client; create and close it inside the event loop that uses it."""
        self.require_api_settings()
        return self.runtime.make_async_client(self.settings(), self.runtime.clock)

    @property
    def clock(self) -> Clock:
        return self.runtime.clock

    def payments(self, *, api: bool = True, existing_ledger: bool = False) -> GiftCardPayments:
        """The payments layer over this invocation's client and ledger.

        ``api=False`` for commands that only read or write the ledger (they work without
        4WS credentials); ``existing_ledger=True`` for commands that make no sense on a new,
        empty ledger: a SQLite file that does not exist is then a configuration error
        naming the path, instead of an empty ledger silently created in the wrong place.
        """
        if self._payments is None:
            from fourws_pay.ledger import open_store
            from fourws_pay.payments import GiftCardPayments

            if api:
                self.require_api_settings()
            settings = self.settings()
            if existing_ledger:
                check_ledger_exists(settings.ledger_url)
            client = (
                self.client() if api else self.runtime.make_client(settings, self.runtime.clock)
            )
            if not api:
                self._client = client  # closed with the invocation
            self._payments = GiftCardPayments(
                settings=settings,
                client=client,
                store=open_store(settings.ledger_url),
                clock=self.clock,
            )
        return self._payments

    def close(self) -> None:
        if self._payments is not None:
            self._payments.store.close()
            self._payments = None
        if self._client is not None:
            self._client.close()
            self._client = None


def sqlite_path(ledger_url: str) -> Path | None:
    """The file of a ``sqlite:///path`` ledger URL, parsed as ``open_store`` parses it
    (None for other stores)."""
    scheme, sep, rest = ledger_url.partition("://")
    if scheme != "sqlite" or not sep:
        return None
    path = rest[1:] if rest.startswith("/") else rest
    return Path(path) if path and path != ":memory:" else None


def check_ledger_exists(ledger_url: str) -> None:
    """``ConfigurationError`` when a SQLite ledger file is missing (see ``payments``)."""
    path = sqlite_path(ledger_url)
    if path is not None and not path.exists():
        raise ConfigurationError(
            f"no ledger at {path.resolve()} (ledger URL {ledger_url}); point --ledger or "
            "FOURWS_LEDGER_URL at the shop's ledger"
        )


_HANDLER_NAME = "fourws-pay-cli"


def configure_logging(verbosity: int) -> None:
    """Send the library's log records to stderr: errors only by default (the command prints
    its own one-line error), -v INFO, -vv DEBUG.

    This is the only place in fourws-pay that configures logging; the records are already
    scrubbed of barcodes and secrets by ``fourws_pay.logs``.
    """
    level = logging.ERROR if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logger = logging.getLogger("fourws_pay")
    for handler in list(logger.handlers):
        if handler.get_name() == _HANDLER_NAME:
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


def get_state(ctx: typer.Context) -> CliContext:
    """The invocation's ``CliContext`` (set by the root callback)."""
    obj = ctx.find_root().obj
    if not isinstance(obj, CliContext):  # pragma: no cover - the root callback always runs
        raise RuntimeError("fourws-pay context missing")
    return obj
