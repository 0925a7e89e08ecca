"""The shop's own checkout: an "Invoice" payment method, and the gift card in front of it."""

from fourws_pay_oscar.mixins import GiftCardPaymentDetailsMixin
from oscar.apps.checkout import views
from oscar.apps.payment.exceptions import UnableToTakePayment
from oscar.apps.payment.models import Source, SourceType

INVOICE = "Invoice"


class InvoicePaymentDetailsView(views.PaymentDetailsView):
    """The shop's other method; ``refuse_invoice`` lets a test make it fail."""

    refuse_invoice = False

    def handle_payment(self, order_number, total, **kwargs):
        if self.refuse_invoice:
            raise UnableToTakePayment("Invoices are not available for this order.")
        source_type, _ = SourceType.objects.get_or_create(name=INVOICE)
        source = Source(
            source_type=source_type,
            currency=total.currency,
            amount_allocated=total.incl_tax,
            reference=f"INV-{order_number}",
        )
        self.add_payment_source(source)
        self.add_payment_event("Invoiced", total.incl_tax, reference=f"INV-{order_number}")


class PaymentDetailsView(GiftCardPaymentDetailsMixin, InvoicePaymentDetailsView):
    pass
