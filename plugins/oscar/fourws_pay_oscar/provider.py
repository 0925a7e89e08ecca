"""The one ``GiftCardPayments`` of this Django process, built from ``FOURWS_PAY`` on first use.

Built lazily (not at import or app-ready time) so that management commands that never pay
do not open the ledger, and rebuilt when ``FOURWS_PAY`` changes under
``override_settings``. Tests and unusual deployments can hand over their own objects with
``install()``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fourws_pay.errors import CallbackRejected, ConfigurationError
from fourws_pay.logs import get_logger
from fourws_pay_oscar import conf, plugin

if TYPE_CHECKING:
    import pluggy

    from fourws_pay.payments import GiftCardPayments
    from fourws_pay.sandbox import Sandbox

log = get_logger()


@dataclass
class Runtime:
    """What the Oscar integration talks to; ``sandbox`` is set for the in-process backend."""

    payments: GiftCardPayments
    sandbox: Sandbox | None = None
    auto_settle: bool = False


_lock = threading.RLock()
_queue_lock = threading.Lock()
_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = _build()
            plugin.activate()
        return _runtime


def get_payments() -> GiftCardPayments:
    """The provider every view, hook and command of this integration uses."""
    return runtime().payments


def install(
    payments: GiftCardPayments, *, sandbox: Sandbox | None = None, auto_settle: bool = False
) -> Runtime:
    """Use ``payments`` (and ``sandbox``, if in-process) instead of building from settings."""
    global _runtime
    with _lock:
        _runtime = Runtime(payments=payments, sandbox=sandbox, auto_settle=auto_settle)
        plugin.activate()
        return _runtime


def reset() -> None:
    """Forget the current provider; the next ``get_payments()`` builds a new one."""
    global _runtime
    with _lock:
        _runtime = None
        plugin.deactivate()


def after_balance_change() -> None:
    """Let the in-process sandbox apply queued updates now, when so configured.

    A real 4WS applies them on its own and calls back; the in-process sandbox needs a nudge,
    and a demo shop wants its orders settled before the thank-you page.
    """
    current = _runtime
    if current is not None and current.sandbox is not None and current.auto_settle:
        with _queue_lock:
            current.sandbox.process_queue()


def make_plugin_manager() -> pluggy.PluginManager:
    """fourws-pay's plugin manager, with this integration's hooks surely registered.

    The entry point registers them in an installed distribution; registering here as well
    keeps a source checkout (no entry point metadata) working.
    """
    from fourws_pay.plugins import make_plugin_manager as make

    manager = make()
    if not manager.is_registered(plugin):
        manager.register(plugin, name="fourws_pay_oscar")
    return manager


def deliver_in_process(payments: GiftCardPayments) -> Any:
    """A sandbox callback handler that hands 4WS callbacks straight to ``payments``."""

    def deliver(url: str, body: bytes) -> int:
        try:
            return payments.handle_callback(urlsplit(url).path, body).status_code
        except CallbackRejected as exc:
            return exc.status_code

    return deliver


def new_sandbox(**kwargs: Any) -> Sandbox:
    """A fresh in-process 4WS simulator."""
    try:
        from fourws_pay.sandbox import Sandbox
    except ImportError:  # older layout: the class lived in fourws_pay.sandbox.sandbox
        from fourws_pay.sandbox.sandbox import Sandbox
    return Sandbox(**kwargs)


def _sandbox_card(card: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(card)
    if "amount" in kwargs:
        kwargs["amount"] = Decimal(str(kwargs["amount"]))
    return kwargs


def _build() -> Runtime:
    from fourws_pay.ledger import open_store
    from fourws_pay.payments import GiftCardPayments
    from fourws_pay.settings import Settings

    backend = conf.get("BACKEND")
    overrides: dict[str, Any] = dict(conf.get("SETTINGS") or {})
    overrides.setdefault("ledger_url", conf.ledger_url())
    callback_base_url = conf.get("CALLBACK_BASE_URL")
    if callback_base_url:
        overrides["callback_base_url"] = callback_base_url

    sandbox = None
    if backend == "sandbox":
        sandbox = new_sandbox()
        for card in conf.get("SANDBOX_CARDS") or []:
            sandbox.add_giftcard(**_sandbox_card(card))
        settings = Settings.build(**{**dict(sandbox.settings), **overrides})
        client = sandbox.client()
    elif backend == "http":
        from fourws_pay.api.client import Client

        settings = Settings.from_env(**overrides)
        client = Client(settings)
    else:
        raise ConfigurationError(
            f"FOURWS_PAY['BACKEND'] must be one of {', '.join(conf.BACKENDS)}, not {backend!r}"
        )

    payments = GiftCardPayments(
        settings=settings,
        client=client,
        store=open_store(settings.ledger_url),
        plugin_manager=make_plugin_manager(),
    )
    if sandbox is not None:
        sandbox.set_callback_handler(deliver_in_process(payments))
    log.info("fourws_pay_oscar.provider_ready", backend=backend)
    return Runtime(
        payments=payments,
        sandbox=sandbox,
        auto_settle=bool(conf.get("SANDBOX_AUTO_SETTLE")) and sandbox is not None,
    )
