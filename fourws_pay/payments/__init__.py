"""Gift-card payments: check, reserve, capture, settle, release, refund, reconcile, and
selling cards (issue, activate, deliver, cancel)."""

from fourws_pay.payments.models import (
    CallbackResult,
    CartSnapshot,
    Decision,
    EventKind,
    IssuedCard,
    IssuedCardState,
    Operation,
    OperationKind,
    OperationState,
    OrderRefund,
    OrderRefundOutcome,
    OrderRefundPart,
    OrderRefundState,
    PaymentEvent,
    ReconcileReport,
    RefundStrategy,
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
    "IssuedCard",
    "IssuedCardState",
    "Operation",
    "OperationKind",
    "OperationState",
    "OrderRefund",
    "OrderRefundOutcome",
    "OrderRefundPart",
    "OrderRefundState",
    "PaymentEvent",
    "ReconcileReport",
    "RefundStrategy",
    "RefusalReason",
    "Reservation",
    "ReservationState",
]
