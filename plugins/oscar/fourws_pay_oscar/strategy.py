"""A gift card's amount typed by the buyer, within limits: a strategy mixin.

Oscar prices a basket line through its strategy's ``fetch_for_line``, which by default
ignores the line's options. ``GiftCardAmountMixin`` prices a gift-card line that carries
the ``giftcard-amount`` option (``selling.allow_free_amount(product)`` offers it on a
product) at that amount, tax-free (a multi-purpose voucher is taxed when it is spent, not
when it is sold); blank, the product's own price stands. An amount that is not a number
within ``GIFTCARD_AMOUNT_LIMITS`` (``(min, max)`` in the order currency) makes the line
unavailable with the reason, which Oscar's checkout shows on the basket page, so an
out-of-range card is never ordered. Put it first in your strategy's bases::

    class Selector:
        def strategy(self, request=None, user=None, **kwargs):
            return GiftCardStrategy(request)

    class GiftCardStrategy(GiftCardAmountMixin, strategy.Default): ...
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils.translation import gettext as _
from oscar.apps.partner.availability import Unavailable
from oscar.apps.partner.prices import TaxInclusiveFixedPrice
from oscar.apps.partner.strategy import PurchaseInfo

from fourws_pay_oscar import conf, selling


class AmountOutOfLimits(Unavailable):
    """The typed amount is not one the shop sells; ``message`` says which are."""

    def __init__(self, message: str) -> None:
        self.message = message

    def is_purchase_permitted(self, quantity: int) -> tuple[bool, str]:
        return False, self.message


def amount_limits() -> tuple[Decimal, Decimal]:
    low, high = conf.get("GIFTCARD_AMOUNT_LIMITS")
    return Decimal(str(low)), Decimal(str(high))


def parse_amount(text: str) -> Decimal | None:
    """The typed amount, or None when it is not a number with at most two decimals."""
    try:
        amount = Decimal(text.strip().replace(",", "."))
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
        return None
    return amount.quantize(Decimal("0.01"))


class GiftCardAmountMixin:
    def fetch_for_line(self, line: Any, stockrecord: Any = None) -> Any:
        info = super().fetch_for_line(line, stockrecord)  # type: ignore[misc]
        if line.product is None or not selling.is_giftcard_product(line.product):
            return info
        typed = selling.typed_amount(line)
        if not typed:
            return info
        low, high = amount_limits()
        amount = parse_amount(typed)
        currency = info.price.currency if info.price.exists else None
        if amount is None or not low <= amount <= high:
            return PurchaseInfo(
                price=info.price,
                availability=AmountOutOfLimits(
                    _("a gift card's amount goes from %(low)s to %(high)s %(currency)s")
                    % {"low": low, "high": high, "currency": currency or ""}
                ),
                stockrecord=info.stockrecord,
            )
        return PurchaseInfo(
            price=TaxInclusiveFixedPrice(currency=currency, excl_tax=amount, tax=Decimal(0)),
            availability=info.availability,
            stockrecord=info.stockrecord,
        )
