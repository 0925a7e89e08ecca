"""A ready Oscar checkout app with gift-card payment, for shops that do not fork checkout.

In ``INSTALLED_APPS`` replace ``"oscar.apps.checkout.apps.CheckoutConfig"`` with
``"fourws_pay_oscar.checkout.apps.CheckoutConfig"``. Oscar's class loader then takes
``PaymentDetailsView`` from here and every other checkout class from Oscar.
"""
