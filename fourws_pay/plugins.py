"""The plugin manager, built on demand (never at import time).

Order: hookspecs, then plugins found on the entry-point group ``fourws_pay`` (host
integrations such as ``fourws-pay-oscar``), then the default plugins shipped inside the
package. ``FOURWS_PAY_DISABLE_PLUGINS`` (comma-separated names) blocks plugins by name,
which is how an operator switches off a misbehaving integration without a deploy. The
building itself is ``fourws_pay.payments.defaults`` (the one composition root, shared with
the provider's own default); this module is the hosts' entry to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from fourws_pay.errors import ConfigurationError
from fourws_pay.payments.defaults import default_plugin_manager
from fourws_pay.payments.service import AsyncGiftCardPayments, GiftCardPayments


def make_plugin_manager(
    *, load_entrypoints: bool = True, plugins: Iterable[object] = ()
) -> pluggy.PluginManager:
    """A ready plugin manager: specs, installed plugins, defaults, then ``plugins``."""
    return default_plugin_manager(
        GiftCardPayments,
        AsyncGiftCardPayments,
        load_entrypoints=load_entrypoints,
        plugins=plugins,
    )


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
