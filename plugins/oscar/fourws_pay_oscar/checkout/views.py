"""Oscar's checkout views, with gift-card payment on the payment-details step.

Oscar's ``handle_payment`` takes nothing, so this checkout is gift-card only: the card must
pay the whole order (see ``GiftCardPaymentDetailsMixin``).
"""

from oscar.apps.checkout import views

from fourws_pay_oscar.mixins import GiftCardPaymentDetailsMixin


class PaymentDetailsView(GiftCardPaymentDetailsMixin, views.PaymentDetailsView):
    pass
