"""The built-in gift-card payment method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fourws_pay.hookspecs import hookimpl


@hookimpl
def fourws_pay_register_payment_methods(
    register: Callable[[str, Callable[..., Any]], None],
) -> None:
    from fourws_pay.payments.service import GiftCardPayments

    register("giftcard", GiftCardPayments)
