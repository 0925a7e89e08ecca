from oscar.apps.checkout import apps


class CheckoutConfig(apps.CheckoutConfig):
    name = "oscar_testshop.checkout"
    label = "checkout"
