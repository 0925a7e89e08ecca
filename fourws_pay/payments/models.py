"""What the payments layer hands back to shops: decisions, reservations, operations, events.

Vocabulary (docs/design.md §2): *check* reads, *reserve* holds an amount locally, *capture* posts
the negative-amount update when the order is confirmed, *settle* applies 4WS's callback,
*release* drops a hold, *refund* posts a positive amount back, *reconcile* resolves
operations whose outcome is unknown.

The state machines (states, moves, groupings) live in ``states`` and are re-exported here;
so is ``RefusalReason`` (``reasons``), which ``fourws_pay.errors`` needs without this module.

Amounts are positive magnitudes everywhere in this module; the sign on the wire is decided
by the operation kind (a capture posts ``-amount``, a refund ``+amount``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from fourws_pay.limits import clip_message
from fourws_pay.logs import mask_barcode
from fourws_pay.payments.reasons import RefusalReason
from fourws_pay.payments.states import (
    IN_FLIGHT_OPERATION_STATES,
    ISSUED_CARD_TRANSITIONS,
    OPERATION_TRANSITIONS,
    RESERVATION_TRANSITIONS,
    TERMINAL_OPERATION_STATES,
    IssuedCardState,
    OperationKind,
    OperationState,
    OrderRefundState,
    RefundStrategy,
    ReservationState,
)


@dataclass(frozen=True)
class Decision:
    """The answer of ``check``: can this card pay, and how much of the amount asked.

    ``usable_amount`` is what the card can contribute (the whole amount, or less when the
    balance is short and partial use is allowed); for a card that must be spent in one go
    it is the whole balance. ``available_balance`` is None whenever the card is refused
    with the uniform reason, so a refusal never discloses a balance.
    """

    ok: bool
    reason: RefusalReason | None
    message: str
    public_message: str
    requested_amount: Decimal
    usable_amount: Decimal
    available_balance: Decimal | None
    currency: str | None
    decimals: int
    covers_full_amount: bool
    masked_barcode: str


@dataclass(frozen=True)
class Reservation:
    """A local hold on part of a card's balance for one checkout.

    ``amount`` is what capture will consume. ``forfeited`` is the part of a one-go card
    (``flgPartiallyUsage = N``) that exceeds the order and is lost by the customer's
    choice; ``amount - forfeited`` pays the order.
    """

    id: str
    barcode: str = field(repr=False)
    amount: Decimal
    currency: str
    decimals: int
    entity_code: str
    order_ref: str
    state: ReservationState
    created_at: datetime
    expires_at: datetime
    forfeited: Decimal = Decimal(0)
    operation_id: str | None = None
    updated_at: datetime | None = None

    @property
    def masked_barcode(self) -> str:
        return mask_barcode(self.barcode)

    @property
    def applied_amount(self) -> Decimal:
        """What this reservation pays towards the order."""
        return self.amount - self.forfeited

    def with_state(self, state: ReservationState, at: datetime) -> Reservation:
        return replace(self, state=state, updated_at=at)


@dataclass(frozen=True)
class OrderAllocation:
    """What ``reserve_order`` holds for one order on several cards.

    ``reservations`` are the holds of this allocation, one per card that pays something, in
    the order the cards were given (which card pays first is the allocation's rule, see
    ``fourws_pay.payments.order_allocation``). ``applied_amount`` is
    what they pay towards ``amount``; ``remaining`` is left for another payment method
    (non-zero only with ``allow_partial``). ``id`` derives from (``order_ref``,
    ``allocation_key``): a retry of the same call finds the same holds.
    """

    id: str
    order_ref: str
    allocation_key: str
    amount: Decimal
    currency: str
    reservations: tuple[Reservation, ...]

    @property
    def applied_amount(self) -> Decimal:
        return sum((r.applied_amount for r in self.reservations), Decimal(0))

    @property
    def remaining(self) -> Decimal:
        left = self.amount - self.applied_amount
        return left if left > 0 else Decimal(0)

    def share_of(self, barcode: str) -> Decimal:
        """What the card pays in this allocation (0 when it pays nothing)."""
        return sum(
            (r.applied_amount for r in self.reservations if r.barcode == barcode), Decimal(0)
        )


@dataclass(frozen=True)
class Operation:
    """One call to 4WS with a callback (capture, refund, generate, activate) and what
    became of it.

    ``callback_token_hash`` is the SHA-256 of the secret in the callback URL; the secret
    itself is never stored. ``balance_before`` is the card balance read just before the
    POST: the evidence ``reconcile`` compares against.

    Issuing (``issuing``) reuses the record: an ``activate`` operation's ``reservation_id``
    is the sold card's id (``IssuedCard.id``) and its ``barcode`` the new card; a
    ``generate`` operation's ``barcode`` is the order's issuing lock key
    (``states.issue_lock_key``), its ``reservation_id`` the first card it generates for and
    its ``amount`` the total value of the cards it generates (it loads nothing).
    """

    id: str
    kind: OperationKind
    reservation_id: str
    barcode: str = field(repr=False)
    amount: Decimal
    currency: str
    entity_code: str
    state: OperationState
    created_at: datetime
    updated_at: datetime
    deadline: datetime
    callback_token_hash: str = field(repr=False, default="")
    queue_id: str | None = None
    balance_before: Decimal | None = None
    parent_id: str | None = None
    message: str | None = None
    callback_id: str | None = None
    settled_at: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", clip_message(self.message))

    @property
    def masked_barcode(self) -> str:
        return mask_barcode(self.barcode)

    @property
    def signed_amount(self) -> Decimal:
        """The amount as posted to 4WS: negative for a capture, positive for a refund or an
        activation."""
        return -self.amount if self.kind is OperationKind.CAPTURE else self.amount

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_OPERATION_STATES


@dataclass(frozen=True)
class IssuedCard:
    """A gift card sold on an order line: one per (``order_ref``, ``line_id``,
    ``line_index``), which is also its id's seed, so issuing is idempotent per card.

    ``barcode`` arrives with generateGiftcards' callback; until then it is None. The ledger
    keeps no personal data: whom to deliver to is the host's order line, which the delivery
    hook looks up by ``order_ref`` and ``line_id``. ``refund_of`` names the capture a
    store-credit card refunds (``refund(…, to_new_card=True)``); ``reclaim_reservation_id``
    the hold through which a cancelled sale's unspent balance is taken back.
    """

    id: str
    order_ref: str
    line_id: str
    line_index: int
    amount: Decimal
    currency: str
    decimals: int
    item_code: str
    entity_code: str
    state: IssuedCardState
    created_at: datetime
    updated_at: datetime
    barcode: str | None = field(default=None, repr=False)
    start_validity: datetime | None = None
    end_validity: datetime | None = None
    generate_op_id: str | None = None
    activate_op_id: str | None = None
    refund_of: str | None = None
    reclaim_reservation_id: str | None = None
    delivered_at: datetime | None = None
    deliveries: int = 0
    message: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", clip_message(self.message))

    @property
    def masked_barcode(self) -> str | None:
        return mask_barcode(self.barcode) if self.barcode else None


@dataclass(frozen=True)
class OrderRefundPart:
    """One capture's share of an order-level refund, and the id its refund operation has
    (or will have): the id is fixed when the plan is written, so the part is posted once
    however often the plan is carried on."""

    capture_id: str
    amount: Decimal
    operation_id: str


@dataclass(frozen=True)
class OrderRefund:
    """An order-level refund (``refund_order``): the amount the shop asked to give back for
    ``order_ref`` under its ``refund_key``, planned once over the order's settled captures
    (``parts``) and carried on until every part is posted.

    ``id`` derives from (``order_ref``, ``refund_key``), so asking again with the same key
    finds this plan instead of refunding twice.
    """

    id: str
    order_ref: str
    refund_key: str
    amount: Decimal
    currency: str
    decimals: int
    strategy: RefundStrategy
    state: OrderRefundState
    created_at: datetime
    updated_at: datetime
    parts: tuple[OrderRefundPart, ...] = ()


@dataclass(frozen=True)
class OrderRefundOutcome:
    """What an order refund did so far: its plan and the refund operations of its parts.

    ``posted`` counts the parts' refunds that did not fail (in flight or settled),
    ``settled`` those 4WS confirmed; ``shortfall`` is what the plan asked but its parts
    could not take (refunded meanwhile by other means, or failed at 4WS).
    """

    refund: OrderRefund
    operations: tuple[Operation, ...]

    @property
    def posted(self) -> Decimal:
        return sum(
            (op.amount for op in self.operations if op.state is not OperationState.FAILED),
            Decimal(0),
        )

    @property
    def settled(self) -> Decimal:
        return sum(
            (op.amount for op in self.operations if op.state is OperationState.SUCCEEDED),
            Decimal(0),
        )

    @property
    def shortfall(self) -> Decimal:
        if self.refund.state is OrderRefundState.OPEN:
            return Decimal(0)  # not all parts were tried yet
        return self.refund.amount - self.posted

    @property
    def complete(self) -> bool:
        """Every part tried and every posted refund settled (or failed)."""
        return self.refund.state is OrderRefundState.POSTED and all(
            op.is_terminal for op in self.operations
        )


def refund_parts_json(parts: tuple[OrderRefundPart, ...]) -> str:
    """An order refund's parts as stores keep them (one text column, exact amounts)."""
    return json.dumps(
        [[p.capture_id, str(p.amount), p.operation_id] for p in parts], separators=(",", ":")
    )


def refund_parts_from_json(text: str) -> tuple[OrderRefundPart, ...]:
    return tuple(OrderRefundPart(c, Decimal(a), o) for c, a, o in json.loads(text))


class EventKind(StrEnum):
    """What a host is told through ``fourws_pay_payment_event``."""

    RESERVED = "reserved"
    QUEUED = "queued"  # a capture or refund waits for its card (posted at its turn)
    CAPTURED = "captured"  # the consumption was posted; settlement follows
    SETTLED = "settled"  # 4WS confirmed the consumption
    CAPTURE_FAILED = "capture_failed"
    RELEASED = "released"
    EXPIRED = "expired"
    REFUNDED = "refunded"  # 4WS confirmed the re-credit
    REFUND_FAILED = "refund_failed"
    MANUAL_REVIEW = "manual_review"
    ALERT = "alert"  # something that should not happen: a conflicting callback, say
    CARD_ISSUED = "card_issued"  # a sold card is active with its paid amount
    CARD_DELIVERED = "card_delivered"  # the delivery hook took it (or none was installed)
    ISSUE_FAILED = "issue_failed"  # 4WS refused to generate or activate a sold card
    SALE_CANCELLED = "sale_cancelled"  # a sold card was cancelled (what was unspent: back)


@dataclass(frozen=True)
class PaymentEvent:
    """A payment life-cycle event. Carries masked barcodes only, never secrets."""

    kind: EventKind
    at: datetime
    reservation: Reservation | None = None
    operation: Operation | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    issued_card: IssuedCard | None = None

    @property
    def order_ref(self) -> str | None:
        if self.issued_card is not None:
            return self.issued_card.order_ref
        return self.reservation.order_ref if self.reservation else None


@dataclass(frozen=True)
class CartSnapshot:
    """What a host cart tells the provider about the order being paid."""

    order_ref: str
    total: Decimal
    currency: str
    client_code: str | None = None
    client_barcode: str | None = None
    client_denomination: str | None = None


@dataclass(frozen=True)
class CallbackResult:
    """What ``handle_callback`` did; ``status_code`` is the HTTP answer to give 4WS."""

    status_code: int
    operation: Operation | None
    applied: bool  # False for duplicates and late callbacks (no-ops)
    message: str


@dataclass(frozen=True)
class ReconcileReport:
    """Outcome of one ``reconcile`` pass."""

    succeeded: list[Operation] = field(default_factory=list)
    failed: list[Operation] = field(default_factory=list)
    manual_review: list[Operation] = field(default_factory=list)
    still_pending: list[Operation] = field(default_factory=list)
    expired_reservations: int = 0
    # queued operations given their turn: posted (enqueued, unknown), failed at the
    # re-check, or given back (4WS unreachable)
    advanced: list[Operation] = field(default_factory=list)
    # sold cards of orders whose issuing pump ran (as they are after it)
    issuing: list[IssuedCard] = field(default_factory=list)
    # order refunds that had a part still to post, as they are after this pass
    order_refunds: list[OrderRefund] = field(default_factory=list)


__all__ = [
    "IN_FLIGHT_OPERATION_STATES",
    "ISSUED_CARD_TRANSITIONS",
    "OPERATION_TRANSITIONS",
    "RESERVATION_TRANSITIONS",
    "TERMINAL_OPERATION_STATES",
    "CallbackResult",
    "CartSnapshot",
    "Decision",
    "EventKind",
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
    "refund_parts_from_json",
    "refund_parts_json",
]
