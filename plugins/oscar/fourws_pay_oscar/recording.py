"""How fourws-pay's life cycle shows in Oscar's own payment models.

=========================  ================================================================
fourws-pay                 Oscar
=========================  ================================================================
reserve (handle_payment)   ``Source`` with ``amount_allocated``, reference = reservation id,
                           label = masked code; an ``Authorise`` transaction. Several
                           cards: one ``Source`` per card (per hold)
capture posted             payment event "Capture requested" (reference = operation id)
settled (4WS callback)     ``Source.debit`` (a ``Debit`` transaction) + event "Settled"
capture failed             event "Capture failed" + an order note for staff (+ optional
                           ``CAPTURE_FAILED_STATUS``); manual review likewise
refund requested           event "Refund requested"
refunded (4WS callback)    ``Source.refund`` (a ``Refund`` transaction) + event "Refunded"
refund failed, alert,      an order note (and an event for refund failures)
late release/expiry
=========================  ================================================================

Money moves in Oscar's models only when 4WS confirmed it, so ``amount_debited`` and
``amount_refunded`` tell the truth. Every writer is idempotent on (kind, operation id): a
repeated event writes nothing twice.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import transaction
from oscar.core.loading import get_model

from fourws_pay.logs import get_logger
from fourws_pay.payments.models import CartSnapshot, EventKind, PaymentEvent
from fourws_pay_oscar import conf

if TYPE_CHECKING:
    from fourws_pay.payments.models import Operation, Reservation

log = get_logger()

CAPTURE_REQUESTED = "Capture requested"
SETTLED = "Settled"
CAPTURE_FAILED = "Capture failed"
MANUAL_REVIEW = "Manual review"
REFUND_REQUESTED = "Refund requested"
REFUNDED = "Refunded"
REFUND_FAILED = "Refund failed"

TWO_PLACES = Decimal("0.01")


def _models() -> dict[str, Any]:
    return {
        "Order": get_model("order", "Order"),
        "OrderNote": get_model("order", "OrderNote"),
        "PaymentEvent": get_model("order", "PaymentEvent"),
        "PaymentEventType": get_model("order", "PaymentEventType"),
        "PaymentEventQuantity": get_model("order", "PaymentEventQuantity"),
        "Source": get_model("payment", "Source"),
        "SourceType": get_model("payment", "SourceType"),
        "Transaction": get_model("payment", "Transaction"),
    }


def source_type() -> Any:
    model = _models()["SourceType"]
    found, _ = model.objects.get_or_create(name=conf.get("SOURCE_TYPE"))
    return found


def new_source(reservation: Reservation, currency: str) -> Any:
    """An unsaved gift-card ``Source`` for the order being placed (Oscar saves it later)."""
    models = _models()
    amount = reservation.applied_amount
    # The reference is what Oscar shows the customer (thank-you page, order history) and
    # staff: the masked card. The reservation id lives on the Authorise transaction.
    source = models["Source"](
        source_type=source_type(),
        currency=currency,
        amount_allocated=amount,
        reference=reservation.masked_barcode,
        label=reservation.masked_barcode,
    )
    source.create_deferred_transaction(
        models["Transaction"].AUTHORISE, amount, reference=reservation.id, status="reserved"
    )
    return source


def gift_card_sources(order: Any) -> Any:
    return order.sources.filter(source_type__name=conf.get("SOURCE_TYPE")).order_by("pk")


def order_for_ref(order_ref: str | None) -> Any:
    number = conf.order_number(order_ref)
    if number is None:
        return None
    return _models()["Order"].objects.filter(number=number).first()


def cart_snapshot(order_ref: str) -> CartSnapshot | None:
    order = order_for_ref(order_ref)
    if order is None:
        return None
    return CartSnapshot(
        order_ref=order_ref,
        total=Decimal(order.total_incl_tax),
        currency=order.currency,
        client_code=str(order.user_id) if order.user_id else None,
    )


def payment_event(order: Any, type_name: str, amount: Decimal, reference: str) -> bool:
    """Add an order payment event once per (type, reference); False if it already existed."""
    models = _models()
    event_type, _ = models["PaymentEventType"].objects.get_or_create(name=type_name)
    if order.payment_events.filter(event_type=event_type, reference=reference).exists():
        return False
    event = models["PaymentEvent"].objects.create(
        order=order, event_type=event_type, amount=amount, reference=reference
    )
    for line in order.lines.all():
        models["PaymentEventQuantity"].objects.create(
            event=event, line=line, quantity=line.quantity
        )
    return True


def note(order: Any, message: str, *, note_type: str = "Error") -> None:
    _models()["OrderNote"].objects.create(order=order, note_type=note_type, message=message)


def reservation_id(source: Any) -> str | None:
    """The fourws-pay reservation behind a gift-card ``Source`` (its Authorise reference)."""
    txn = source.transactions.filter(txn_type=_models()["Transaction"].AUTHORISE).first()
    return str(txn.reference) if txn is not None and txn.reference else None


def _source_for(order: Any, reservation: Reservation | None) -> Any:
    if reservation is None:
        return None
    return (
        gift_card_sources(order)
        .filter(
            transactions__txn_type=_models()["Transaction"].AUTHORISE,
            transactions__reference=reservation.id,
        )
        .distinct()
        .first()
    )


def _has_txn(source: Any, txn_type: str, reference: str) -> bool:
    return bool(source.transactions.filter(txn_type=txn_type, reference=reference).exists())


def record_capture_requested(order: Any, operation: Operation) -> None:
    with transaction.atomic():
        payment_event(order, CAPTURE_REQUESTED, operation.amount, operation.id)


def record_refund_requested(order: Any, operation: Operation) -> None:
    with transaction.atomic():
        payment_event(order, REFUND_REQUESTED, operation.amount, operation.id)


def record_capture_problem(
    order: Any, *, title: str, amount: Decimal, reference: str, detail: str
) -> None:
    """Tell staff a gift-card payment of a placed order did not go through."""
    with transaction.atomic():
        if not payment_event(order, title, amount, reference):
            return
        note(
            order,
            f"4WS gift card: {title.lower()} for {amount} {order.currency} "
            f"(operation {reference}): {detail}. The order is not paid by this card; "
            "collect the amount another way or cancel the order.",
        )
        status = conf.get("CAPTURE_FAILED_STATUS")
        if status and status != order.status:
            if status in order.available_statuses():
                order.set_status(status)
            else:
                order.status = status
                order.save(update_fields=["status"])


def record_event(event: PaymentEvent) -> None:
    """Apply one fourws-pay event to the Oscar order it belongs to (if any)."""
    order = order_for_ref(event.order_ref)
    if order is None:
        return
    handler = _HANDLERS.get(event.kind)
    if handler is not None:
        handler(order, event)


def _settled(order: Any, event: PaymentEvent) -> None:
    operation = event.operation
    if operation is None:
        return
    with transaction.atomic():
        source = _source_for(order, event.reservation)
        debit = event.reservation.applied_amount if event.reservation else operation.amount
        if source is not None and not _has_txn(source, "Debit", operation.id):
            source.debit(debit, reference=operation.id, status="settled")
        payment_event(order, SETTLED, debit, operation.id)
        if event.reservation is not None and event.reservation.forfeited:
            note(
                order,
                f"4WS gift card {event.reservation.masked_barcode}: "
                f"{event.reservation.forfeited} {order.currency} left on a single-use card "
                "was forfeited at the customer's choice.",
                note_type="Info",
            )


def _refunded(order: Any, event: PaymentEvent) -> None:
    operation = event.operation
    if operation is None:
        return
    with transaction.atomic():
        source = _source_for(order, event.reservation)
        if source is not None and not _has_txn(source, "Refund", operation.id):
            source.refund(operation.amount, reference=operation.id, status="refunded")
        payment_event(order, REFUNDED, operation.amount, operation.id)


def _capture_failed(order: Any, event: PaymentEvent) -> None:
    operation = event.operation
    title = MANUAL_REVIEW if event.kind is EventKind.MANUAL_REVIEW else CAPTURE_FAILED
    if operation is not None and operation.kind == "refund":
        title = MANUAL_REVIEW if event.kind is EventKind.MANUAL_REVIEW else REFUND_FAILED
    amount = operation.amount if operation else Decimal(0)
    reference = operation.id if operation else (event.reservation.id if event.reservation else "")
    record_capture_problem(
        order,
        title=title,
        amount=amount,
        reference=reference,
        detail=event.message or title.lower(),
    )


def _refund_failed(order: Any, event: PaymentEvent) -> None:
    operation = event.operation
    amount = operation.amount if operation else Decimal(0)
    reference = operation.id if operation else ""
    with transaction.atomic():
        if payment_event(order, REFUND_FAILED, amount, reference):
            note(
                order,
                f"4WS gift card: refund of {amount} {order.currency} failed "
                f"(operation {reference}): {event.message or 'no reason given'}.",
            )


def _informational(order: Any, event: PaymentEvent) -> None:
    subject = event.reservation.masked_barcode if event.reservation else "gift card"
    note_type = "Warning" if event.kind is EventKind.ALERT else "Info"
    note(order, f"4WS {subject}: {event.kind.value}. {event.message}".strip(), note_type=note_type)


_HANDLERS = {
    EventKind.SETTLED: _settled,
    EventKind.REFUNDED: _refunded,
    EventKind.CAPTURE_FAILED: _capture_failed,
    EventKind.MANUAL_REVIEW: _capture_failed,
    EventKind.REFUND_FAILED: _refund_failed,
    EventKind.QUEUED: _informational,  # waits for another payment of the card
    EventKind.RELEASED: _informational,
    EventKind.EXPIRED: _informational,
    EventKind.ALERT: _informational,
}
