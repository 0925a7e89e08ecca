"""The plugin manager, built on demand (never at import time).

Order: hookspecs, then plugins found on the entry-point group ``fourws_pay`` (host
integrations such as ``fourws-pay-oscar``), then the default plugins shipped inside the
package. ``FOURWS_PAY_DISABLE_PLUGINS`` (comma-separated names) blocks plugins by name,
which is how an operator switches off a misbehaving integration without a deploy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import pluggy

from fourws_pay import hookspecs
from fourws_pay.default_plugins import giftcard as giftcard_plugin

DEFAULT_PLUGINS: tuple[tuple[str, object], ...] = (("fourws_pay.giftcard", giftcard_plugin),)
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME


def make_plugin_manager(
    *, load_entrypoints: bool = True, plugins: Iterable[object] = ()
) -> pluggy.PluginManager:
    """A ready plugin manager: specs, installed plugins, defaults, then ``plugins``."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in filter(None, os.environ.get("FOURWS_PAY_DISABLE_PLUGINS", "").split(",")):
        pm.set_blocked(name.strip())
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for name, plugin in DEFAULT_PLUGINS:
        if not pm.is_blocked(name) and pm.get_plugin(name) is None:
            pm.register(plugin, name=name)
    for plugin in plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


def payment_methods(pm: pluggy.PluginManager) -> dict[str, Callable[..., Any]]:
    """Every payment method the plugins registered, by name (first registration wins)."""
    methods: dict[str, Callable[..., Any]] = {}

    def register(name: str, factory: Callable[..., Any]) -> None:
        methods.setdefault(name, factory)

    pm.hook.fourws_pay_register_payment_methods(register=register)
    return methods
