"""The built-in gift-card payment method.

Registered ``trylast``: pluggy calls later-registered plugins first, and this default plugin
is registered after the installed ones, so without it the built-in would always win the
name ``"giftcard"``; with it, a shop's plugin can replace the provider (a subclass, say).
"""

from __future__ import annotations

from fourws_pay.hookspecs import RegisterPaymentMethod, hookimpl


@hookimpl(trylast=True)
def fourws_pay_register_payment_methods(register: RegisterPaymentMethod) -> None:
    from fourws_pay.payments.service import AsyncGiftCardPayments, GiftCardPayments

    register("giftcard", GiftCardPayments, async_factory=AsyncGiftCardPayments)
