"""Give gift-card money of an Oscar order back to the card, from the dashboard or a shell.

::

    from fourws_pay_oscar.refunds import refund_gift_card
    refund_gift_card(order)                       # everything still refundable
    refund_gift_card(order, Decimal("5.00"))      # part of it

Each call posts positive-amount updates to 4WS (fourws-pay never refunds more than was
captured) and records "Refund requested" events; ``Source.refund`` is applied when 4WS
confirms on the callback, so ``amount_refunded`` only counts money that is back on the card.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fourws_pay.errors import InvalidAmountError, InvalidStateError
from fourws_pay_oscar import provider, recording

if TYPE_CHECKING:
    from fourws_pay.payments.models import Operation


def refundable_amount(source: Any) -> Decimal:
    """What can still be refunded on one gift-card source (settled minus refunded)."""
    return Decimal(source.amount_debited) - Decimal(source.amount_refunded)


def refund_gift_card(order: Any, amount: Decimal | None = None) -> list[Operation]:
    """Refund ``amount`` (default: all that is refundable) across the order's gift cards.

    Raises ``InvalidAmountError`` for a non-positive amount or one above what is
    refundable, ``InvalidStateError`` when nothing was settled yet; 4WS errors come through
    as fourws-pay's typed errors.
    """
    sources = list(recording.gift_card_sources(order))
    refundable = sum((refundable_amount(s) for s in sources), Decimal(0))
    if refundable <= 0:
        raise InvalidStateError(
            f"order {order.number} has no settled gift-card payment left to refund"
        )
    wanted = refundable if amount is None else amount
    if not isinstance(wanted, Decimal) or not wanted.is_finite() or wanted <= 0:
        raise InvalidAmountError("refund amount must be a positive Decimal")
    if wanted > refundable:
        raise InvalidAmountError(
            f"refund of {wanted} exceeds the {refundable} {order.currency} refundable "
            f"on order {order.number}"
        )

    payments = provider.get_payments()
    operations = []
    left = wanted
    for source in sources:
        part = min(left, refundable_amount(source))
        if part <= 0:
            continue
        held = recording.reservation_id(source)
        reservation = payments.get_reservation(held) if held else None
        capture_id = reservation.operation_id if reservation is not None else None
        if capture_id is None:
            continue
        operation = payments.refund(capture_id, amount=part)
        recording.record_refund_requested(order, operation)
        operations.append(operation)
        left -= part
        if left <= 0:
            break
    provider.after_balance_change()
    return operations
