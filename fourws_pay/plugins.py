"""The plugin manager, built on demand (never at import time).

Order: hookspecs, then plugins found on the entry-point group ``fourws_pay`` (host
integrations such as ``fourws-pay-oscar``), then the default plugins shipped inside the
package. ``FOURWS_PAY_DISABLE_PLUGINS`` (comma-separated names) blocks plugins by name,
which is how an operator switches off a misbehaving integration without a deploy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from fourws_pay import hookspecs
from fourws_pay.default_plugins import giftcard as giftcard_plugin
from fourws_pay.errors import ConfigurationError

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


@dataclass(frozen=True)
class PaymentMethod:
    """A registered method: how to build its blocking and (if any) its asyncio provider."""

    name: str
    factory: Callable[..., Any]
    async_factory: Callable[..., Any] | None = None


def _registered(pm: pluggy.PluginManager) -> dict[str, PaymentMethod]:
    methods: dict[str, PaymentMethod] = {}

    def register(
        name: str,
        factory: Callable[..., Any],
        *,
        async_factory: Callable[..., Any] | None = None,
    ) -> None:
        methods.setdefault(name, PaymentMethod(name, factory, async_factory))

    pm.hook.fourws_pay_register_payment_methods(register=register)
    return methods


def payment_methods(pm: pluggy.PluginManager) -> dict[str, Callable[..., Any]]:
    """Every payment method the plugins registered, by name (first registration wins):
    the blocking factories."""
    return {name: method.factory for name, method in _registered(pm).items()}


def payment_method(
    name: str = "giftcard",
    *,
    asynchronous: bool = False,
    plugin_manager: pluggy.PluginManager | None = None,
) -> Callable[..., Any]:
    """The factory a host calls to build its provider for method ``name``.

    ``payment_method("giftcard")(settings=..., store=..., plugin_manager=pm)`` is
    ``GiftCardPayments(...)`` unless an installed plugin registered its own ``"giftcard"``;
    ``asynchronous=True`` gives the asyncio twin. Pass the host's ``plugin_manager`` so the
    lookup sees the same plugins as the provider will. An unknown name, or a method without
    the twin asked for, is a ``ConfigurationError``.
    """
    pm = plugin_manager if plugin_manager is not None else make_plugin_manager()
    methods = _registered(pm)
    method = methods.get(name)
    if method is None:
        known = ", ".join(sorted(methods)) or "none"
        raise ConfigurationError(
            f"no payment method {name!r} is registered (registered: {known}); "
            "is its plugin installed, or blocked by FOURWS_PAY_DISABLE_PLUGINS?"
        )
    if not asynchronous:
        return method.factory
    if method.async_factory is None:
        raise ConfigurationError(f"payment method {name!r} has no asyncio provider")
    return method.async_factory
