"""The shop's checkout: cash on delivery, with 4WS gift cards in front of it.

``GiftCardPaymentDetailsMixin`` comes first: the card pays what it can, and whatever is
left reaches ``CashOnDeliveryPaymentDetailsView.handle_payment``.
"""

from fourws_pay_oscar.mixins import GiftCardPaymentDetailsMixin
from oscar.apps.checkout import views
from oscar.apps.payment.models import Source, SourceType

CASH_ON_DELIVERY = "Cash on delivery"


class CashOnDeliveryPaymentDetailsView(views.PaymentDetailsView):
    def handle_payment(self, order_number, total, **kwargs):
        source_type, _ = SourceType.objects.get_or_create(name=CASH_ON_DELIVERY)
        self.add_payment_source(
            Source(
                source_type=source_type,
                currency=total.currency,
                amount_allocated=total.incl_tax,
                reference=f"COD-{order_number}",
            )
        )

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        ctx["giftcard_remainder_method"] = "cash on delivery"
        return ctx


class PaymentDetailsView(GiftCardPaymentDetailsMixin, CashOnDeliveryPaymentDetailsView):
    template_name = "shop/payment_details.html"
