"""Give gift-card money of an Oscar order back to the cards, from the dashboard or a shell.

::

    from fourws_pay_oscar.refunds import refund_gift_card
    refund_gift_card(order)                                   # everything still refundable
    refund_gift_card(order, Decimal("5.00"), refund_key="credit-note-17")  # part of it

An order paid with several cards has one capture per card; a refund is an *order* refund
(fourws-pay's ``refund_order``): planned once over the order's settled captures, newest
first, each part posted once as a positive-amount update to its card (never more than the
capture took). ``refund_key`` names the refund: the same key again (a re-submitted staff
form, a retried command) carries the same refund on and never refunds twice; without one
every call is a new refund. "Refund requested" events are recorded per part;
``Source.refund`` is applied when 4WS confirms on the callback, so ``amount_refunded`` only
counts money that is back on the card.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fourws_pay.errors import InvalidAmountError, InvalidStateError
from fourws_pay_oscar import conf, provider, recording

if TYPE_CHECKING:
    from fourws_pay.payments.models import Operation, OrderRefundOutcome


def refundable_amount(source: Any) -> Decimal:
    """What can still be refunded on one gift-card source (settled minus refunded)."""
    return Decimal(source.amount_debited) - Decimal(source.amount_refunded)


def refund_gift_card(
    order: Any, amount: Decimal | None = None, *, refund_key: str | None = None
) -> list[Operation]:
    """Refund ``amount`` (default: all that is refundable) across the order's gift cards;
    the refund operations of its parts.

    Raises ``InvalidAmountError`` for a non-positive amount or one above what is
    refundable, ``InvalidStateError`` when nothing was settled yet; 4WS errors come through
    as fourws-pay's typed errors. See ``refund_order_gift_cards`` for ``refund_key``.
    """
    return list(refund_order_gift_cards(order, amount, refund_key=refund_key).operations)


def refund_order_gift_cards(
    order: Any, amount: Decimal | None = None, *, refund_key: str | None = None
) -> OrderRefundOutcome:
    """The order refund itself (``refund_order``, newest capture first): its plan and parts.

    ``refund_key`` None makes a new refund; the same key again returns the same refund
    (nothing posted twice) and the same key for another amount is refused
    (``InvalidInputError``).
    """
    key = refund_key or f"oscar-{secrets.token_hex(12)}"
    payments = provider.get_payments()
    order_ref = conf.order_ref(order.number)
    if refund_key is None or not _known_refund(payments, order_ref, key):
        _check_refundable(order, amount)
    outcome = payments.refund_order(order_ref, refund_key=key, amount=amount)
    for operation in outcome.operations:
        recording.record_refund_requested(order, operation)
    provider.after_balance_change()
    return outcome


def _known_refund(payments: Any, order_ref: str, key: str) -> bool:
    return any(o.refund.refund_key == key for o in payments.order_refunds(order_ref))


def _check_refundable(order: Any, amount: Decimal | None) -> None:
    """What Oscar's sources say is refundable (settled minus refunded) bounds a new refund."""
    sources = list(recording.gift_card_sources(order))
    refundable = sum((refundable_amount(s) for s in sources), Decimal(0))
    if refundable <= 0:
        raise InvalidStateError(
            f"order {order.number} has no settled gift-card payment left to refund"
        )
    if amount is None:
        return
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise InvalidAmountError("refund amount must be a positive Decimal")
    if amount > refundable:
        raise InvalidAmountError(
            f"refund of {amount} exceeds the {refundable} {order.currency} refundable "
            f"on order {order.number}"
        )


def order_refunds(order: Any) -> list[dict[str, Any]]:
    """The order's gift-card refunds for its pages: each with its parts (card, amount, state)."""
    payments = provider.get_payments()
    rows = []
    for outcome in payments.order_refunds(conf.order_ref(order.number)):
        rows.append(
            {
                "key": outcome.refund.refund_key,
                "amount": outcome.refund.amount,
                "currency": outcome.refund.currency,
                "state": outcome.refund.state.value,
                "created_at": outcome.refund.created_at,
                "parts": [
                    {
                        "card": op.masked_barcode,
                        "amount": op.amount,
                        "state": op.state.value,
                        "capture": op.parent_id,
                    }
                    for op in outcome.operations
                ],
            }
        )
    return rows
