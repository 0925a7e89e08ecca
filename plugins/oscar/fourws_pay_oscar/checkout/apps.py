from oscar.apps.checkout import apps


class CheckoutConfig(apps.CheckoutConfig):
    name = "fourws_pay_oscar.checkout"
    label = "checkout"
