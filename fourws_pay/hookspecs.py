"""Hooks between fourws-pay and the shop that embeds it (pluggy, project ``fourws_pay``).

Two directions:

- what a **host cart provides**: ``fourws_pay_cart_snapshot`` (order total, currency,
  customer codes) and ``fourws_pay_callback_base_url`` (the public URL 4WS can reach);
- what a **host is told**: ``fourws_pay_payment_event`` for every life-cycle step
  (reserved, captured, settled, capture_failed, released, expired, refunded, refund_failed,
  manual_review, alert, and for sold cards card_issued, card_delivered, issue_failed,
  sale_cancelled);
- what a **host does for us**: ``fourws_pay_deliver_giftcards`` hands sold cards to their
  recipients (e-mail, say).

Payment methods are contributed through ``fourws_pay_register_payment_methods``: the plugin
calls ``register(name, factory, async_factory=...)``; the gift-card provider is a default
plugin that runs last, so an installed plugin registering ``"giftcard"`` replaces it. Hosts
build their provider through ``fourws_pay.plugins.payment_method(name)``.

Hooks are synchronous and must not do network I/O, except the delivery hook, whose job is
I/O (the asyncio provider calls it on a worker thread); they run inside payment calls. A hook
that raises does not undo a payment step already committed: events are delivered after the
ledger commit, and errors in event hooks are logged, not propagated.

Plugins are found on the entry-point group ``fourws_pay`` (see ``fourws_pay.plugins``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from fourws_pay.payments.models import CartSnapshot, IssuedCard, PaymentEvent

PROJECT_NAME = "fourws_pay"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class RegisterPaymentMethod(Protocol):
    """The ``register`` callback handed to ``fourws_pay_register_payment_methods``."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        async_factory: Callable[..., Any] | None = None,
    ) -> None: ...


@hookspec(firstresult=True)
def fourws_pay_cart_snapshot(order_ref: str) -> CartSnapshot | None:
    """Describe the cart or order ``order_ref`` that a gift card is about to pay.

    Used when ``reserve`` is called without an amount or currency, and to pass customer
    codes (``clientCode``, ``clientBarcode``, ``clientDenomination``) to 4WS on capture.

    :param order_ref: the shop's reference for the order (basket id, order number).
    :return: a ``CartSnapshot``, or None if this plugin does not know the order.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def fourws_pay_callback_base_url() -> str | None:
    """The public base URL at which 4WS can POST callbacks to this shop.

    Overrides ``Settings.callback_base_url``. The provider appends
    ``/<operation id>/<secret token>`` to it for each operation.

    :return: an ``http(s)://`` URL without a trailing slash, or None.

    Stops at first non-None result.
    """


@hookspec
def fourws_pay_payment_event(event: PaymentEvent) -> None:
    """Be told about a payment life-cycle step, after it was committed to the ledger.

    :param event: the event; ``event.kind`` says which step, ``event.reservation`` and
        ``event.operation`` carry masked barcodes only.

    Every implementation is called; exceptions are logged and swallowed so that a faulty
    listener cannot break a payment.
    """


@hookspec
def fourws_pay_deliver_giftcards(
    order_ref: str, cards: list[IssuedCard], pdf_url: str | None
) -> None:
    """Hand sold cards to their recipients, once they are active with their paid amount.

    Called once per order with every card of it that became deliverable together (so one
    message per recipient is possible, not one per card): group ``cards`` by ``line_id``
    and look the recipient up in the host's own order line; the ledger keeps no personal
    data. ``cards`` carry the whole barcode (the recipient needs it): never log it.

    Delivery is at least once: the cards are marked delivered after every implementation
    returned; if one raises, they are offered again by the next ``reconcile`` (the same
    codes, never new cards), so a mail may be sent twice, a card never loaded twice. With
    no implementation installed the cards are marked delivered and only recorded (a
    ``card_delivered`` event each). ``resend_giftcards`` calls it again for staff.

    :param order_ref: the order the cards were sold on.
    :param cards: the sold cards, state ``delivering``.
    :param pdf_url: a printable PDF of these cards from 4WS's Gift Card PDF service, or
        None when 4WS gave no URL (the service may answer later, or failed).
    """


@hookspec
def fourws_pay_register_payment_methods(register: RegisterPaymentMethod) -> None:
    """Contribute payment methods, the blocking and the asyncio twin together.

    :param register: call ``register(name, factory, async_factory=...)``;
        ``factory(**kwargs)`` builds the blocking provider and ``async_factory(**kwargs)``
        the asyncio one (``GiftCardPayments`` and ``AsyncGiftCardPayments`` for the built-in
        ``"giftcard"`` method). The first registration of a name wins; the built-in plugin
        registers last.
    """
