"""The composition root of the provider's defaults: the ledger store and the plugin
manager that ``GiftCardPayments(settings=...)`` builds when it is given none.

The rest of the payments layer depends on its port (``ports``) and on ``hookspecs`` only;
this is the one module in it that names concrete parts (``fourws_pay.ledger`` for the
store, the default plugins). The built-in ``giftcard`` plugin registers the provider
classes themselves, so those are passed in by the caller (``service`` for its own
default, ``fourws_pay.plugins.make_plugin_manager`` for hosts) rather than imported here:
importing them would close the cycle provider -> plugin manager -> default plugin ->
provider that this module exists to break (``tests/test_import_cycles.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pluggy

from fourws_pay import hookspecs
from fourws_pay.default_plugins.giftcard import GiftCardMethod

if TYPE_CHECKING:
    from fourws_pay.payments.ports import LedgerStore
    from fourws_pay.settings import Settings

GIFTCARD_PLUGIN_NAME = "fourws_pay.giftcard"
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME


def default_store(settings: Settings) -> LedgerStore:
    """The store ``settings.ledger_url`` names (imported late: a shop that passes its own
    store never loads the SQLite module or a driver)."""
    from fourws_pay.ledger import open_store

    return open_store(settings.ledger_url)


def default_plugin_manager(
    factory: Callable[..., Any],
    async_factory: Callable[..., Any],
    *,
    load_entrypoints: bool = True,
    plugins: Iterable[object] = (),
) -> pluggy.PluginManager:
    """A ready plugin manager: specs, installed plugins, the defaults (the built-in
    ``giftcard`` method building ``factory`` / ``async_factory``), then ``plugins``.

    ``FOURWS_PAY_DISABLE_PLUGINS`` (comma-separated names) blocks plugins by name, which is
    how an operator switches off a misbehaving integration without a deploy.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in filter(None, os.environ.get("FOURWS_PAY_DISABLE_PLUGINS", "").split(",")):
        pm.set_blocked(name.strip())
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    defaults = ((GIFTCARD_PLUGIN_NAME, GiftCardMethod(factory, async_factory)),)
    for name, plugin in defaults:
        if not pm.is_blocked(name) and pm.get_plugin(name) is None:
            pm.register(plugin, name=name)
    for extra in plugins:
        pm.register(extra)
    pm.check_pending()
    return pm
