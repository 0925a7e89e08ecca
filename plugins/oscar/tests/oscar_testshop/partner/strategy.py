"""Oscar's default strategy, with gift cards priced at the amount the buyer typed."""

from fourws_pay_oscar.strategy import GiftCardAmountMixin
from oscar.apps.partner import strategy


class GiftCardStrategy(GiftCardAmountMixin, strategy.Default):
    pass


class Selector:
    def strategy(self, request=None, user=None, **kwargs):
        return GiftCardStrategy(request)
