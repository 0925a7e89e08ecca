"""Pay Django-Oscar orders, fully or in part, with 4WS Suite gift cards.

Two ways to wire it into a shop:

- a shop that already forks Oscar's checkout app puts
  ``fourws_pay_oscar.mixins.GiftCardPaymentDetailsMixin`` in front of its own
  ``PaymentDetailsView``: the card pays what it can and the shop's ``handle_payment``
  takes the rest;
- a shop without a fork replaces ``oscar.apps.checkout.apps.CheckoutConfig`` with
  ``fourws_pay_oscar.checkout.apps.CheckoutConfig`` (a gift-card-only checkout).

Both also need ``"fourws_pay_oscar"`` in ``INSTALLED_APPS``, the callback URLs
(``path("fourws-pay/", include("fourws_pay_oscar.urls"))``) and a ``FOURWS_PAY`` settings
dict (see ``fourws_pay_oscar.conf``).

Importing this package loads no Django module: the pluggy hooks in
``fourws_pay_oscar.plugin`` are found through the ``fourws_pay`` entry-point group by any
process that builds a plugin manager, Django or not.
"""

__version__ = "0.1.0"
