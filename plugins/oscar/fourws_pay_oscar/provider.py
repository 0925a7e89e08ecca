"""The one ``GiftCardPayments`` of this Django process, built from ``FOURWS_PAY`` on first use.

Built lazily (not at import or app-ready time) so that management commands that never pay
do not open the ledger, and rebuilt when ``FOURWS_PAY`` changes under
``override_settings``. Tests, demos and unusual deployments can hand over their own objects
with ``install()``.

Production code talks to 4WS over HTTP only. A simulator belongs to whoever runs one: the
example shop serves a sandbox from its own process (``examples/oscar_shop``), the tests
build an in-process one and ``install()`` it with ``on_balance_change`` to work its queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fourws_pay.errors import ConfigurationError
from fourws_pay.logs import get_logger
from fourws_pay_oscar import conf, plugin

if TYPE_CHECKING:
    import pluggy

    from fourws_pay.payments import GiftCardPayments

log = get_logger()


@dataclass
class Runtime:
    """What the Oscar integration talks to.

    ``on_balance_change`` runs after each capture or refund was sent; ``None`` in
    production (4WS works its queue and calls back on its own).
    """

    payments: GiftCardPayments
    on_balance_change: Callable[[], object] | None = None


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
    payments: GiftCardPayments, *, on_balance_change: Callable[[], object] | None = None
) -> Runtime:
    """Use ``payments`` instead of building from settings; ``on_balance_change`` (e.g. a
    simulator's ``process_queue``) runs after every capture or refund is sent."""
    global _runtime
    with _lock:
        _runtime = Runtime(payments=payments, on_balance_change=on_balance_change)
        plugin.activate()
        return _runtime


def reset() -> None:
    """Forget the current provider; the next ``get_payments()`` builds a new one."""
    global _runtime
    with _lock:
        _runtime = None
        plugin.deactivate()


def after_balance_change() -> None:
    """Run the installed ``on_balance_change``, if any (a test's simulator working its
    queue); nothing in production, where 4WS applies updates and calls back by itself."""
    current = _runtime
    if current is not None and current.on_balance_change is not None:
        with _queue_lock:
            current.on_balance_change()


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

    if backend != "http":
        raise ConfigurationError(
            f"FOURWS_PAY['BACKEND'] must be one of {', '.join(conf.BACKENDS)}, not {backend!r}"
            " (a 4WS simulator is not part of the integration: serve one with `fourws-pay "
            "sandbox serve` and point FOURWS_* at it, as examples/oscar_shop does)"
        )
    from fourws_pay.api.client import Client

    settings = Settings.from_env(**overrides)
    client = Client(settings)

    payments = GiftCardPayments(
        settings=settings,
        client=client,
        store=open_store(settings.ledger_url),
        plugin_manager=make_plugin_manager(),
    )
    log.info("fourws_pay_oscar.provider_ready", backend=backend)
    return Runtime(payments=payments)
