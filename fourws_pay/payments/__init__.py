"""Gift-card payments: check, reserve, capture, settle, release, refund, reconcile."""

from fourws_pay.payments.models import (
    CallbackResult,
    CartSnapshot,
    Decision,
    EventKind,
    Operation,
    OperationKind,
    OperationState,
    PaymentEvent,
    ReconcileReport,
    RefusalReason,
    Reservation,
    ReservationState,
)
from fourws_pay.payments.service import AsyncGiftCardPayments, GiftCardPayments

__all__ = [
    "AsyncGiftCardPayments",
    "CallbackResult",
    "CartSnapshot",
    "Decision",
    "EventKind",
    "GiftCardPayments",
    "Operation",
    "OperationKind",
    "OperationState",
    "PaymentEvent",
    "ReconcileReport",
    "RefusalReason",
    "Reservation",
    "ReservationState",
]
