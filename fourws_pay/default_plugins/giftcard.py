"""The built-in gift-card payment method.

Registered ``trylast``: pluggy calls later-registered plugins first, and this default plugin
is registered after the installed ones, so without it the built-in would always win the
name ``"giftcard"``; with it, a shop's plugin can replace the provider (a subclass, say).

The plugin is handed the provider classes instead of importing them: the provider builds
this plugin into its default plugin manager, so an import here would be a cycle
(``fourws_pay.payments.defaults`` is where the two meet).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fourws_pay.hookspecs import RegisterPaymentMethod, hookimpl


class GiftCardMethod:
    """Registers ``factory`` (blocking) and ``async_factory`` as the ``"giftcard"`` method."""

    def __init__(self, factory: Callable[..., Any], async_factory: Callable[..., Any]) -> None:
        self.factory = factory
        self.async_factory = async_factory

    @hookimpl(trylast=True)
    def fourws_pay_register_payment_methods(self, register: RegisterPaymentMethod) -> None:
        register("giftcard", self.factory, async_factory=self.async_factory)
