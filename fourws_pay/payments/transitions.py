"""The state machine, in one place: what each state means for the money, and every move.

Reservations are born ``active`` (``_hold``) and end ``captured``, ``released`` or
``expired``; operations are born ``prepared`` (``_claim``) and move one way through
``sending``, ``enqueued``, ``unknown`` and ``manual_review`` to ``succeeded`` or ``failed``
(``models.OPERATION_TRANSITIONS``, invariant 5). Every write of a state goes through a
method of ``Transitions`` below, and each is a compare-and-set on the state it expects, so
a lost race is seen instead of overwritten. Only one rule links the two machines, and it is
written once (``_apply_verdict``): a capture that succeeds captures its reservation.

What states mean for the money: an operation in ``HOLDING_OPERATION_STATES`` may still be
applied by 4WS, so its reservation's hold keeps counting (``held``) and its card is busy
for every other balance change (``_require_card_idle``).

The flows that decide *when* to move are in ``checkout`` and ``settlement``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fourws_pay.api.models import GiftCard
from fourws_pay.errors import CardBusyError, InvalidAmountError, InvalidStateError
from fourws_pay.payments.base import CoreBase
from fourws_pay.payments.models import (
    IN_FLIGHT_OPERATION_STATES,
    OPERATION_TRANSITIONS,
    RESERVATION_TRANSITIONS,
    Decision,
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)
from fourws_pay.payments.rules import forfeited_amount

if TYPE_CHECKING:
    from fourws_pay.ledger.base import LedgerTransaction

# Operations that may still be applied by 4WS: their hold counts, and their card is busy
# for any other balance change (invariants 2, 6, 15).
HOLDING_OPERATION_STATES = IN_FLIGHT_OPERATION_STATES | {OperationState.MANUAL_REVIEW}
# While one of these is on a card, no other capture or refund of it may be posted: the
# balance must stay evidence of that operation's outcome (invariant 15).
CARD_BUSY_STATES = HOLDING_OPERATION_STATES


def may_move(current: OperationState, target: OperationState) -> bool:
    """The one-way operation state machine (invariant 5)."""
    return target in OPERATION_TRANSITIONS[current]


def may_move_reservation(current: ReservationState, target: ReservationState) -> bool:
    """The one-way reservation state machine (invariant 5)."""
    return target in RESERVATION_TRANSITIONS[current]


def counts_as_held(reservation: Reservation, now: datetime, pinned: set[str]) -> bool:
    """An active hold counts until its expiry instant, or for as long as an operation on it
    is in flight or under review (invariants 2, 6, 7). No sweeper is needed for this."""
    if reservation.state is not ReservationState.ACTIVE:
        return False
    return reservation.expires_at > now or reservation.id in pinned


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _total(items: Iterable[Reservation | Operation]) -> Decimal:
    return sum((item.amount for item in items), Decimal(0))


def live_captures(tx: LedgerTransaction, reservation_id: str) -> list[Operation]:
    """The captures of a hold that did not fail, oldest first. At most one is ever
    written while none is live (one POST per hold), so a second one means a lost race."""
    return [
        op
        for op in tx.captures_of_reservation(reservation_id)
        if op.state is not OperationState.FAILED
    ]


class Transitions(CoreBase):
    """Every state change of the ledger, and the guards that must hold before one."""

    # ------------------------------------------------- what the states mean for money

    def held(
        self,
        tx: LedgerTransaction,
        barcode: str,
        now: datetime,
        exclude: str | None = None,
    ) -> Decimal:
        """Holds on ``barcode`` a balance read does not reflect yet (invariants 2, 6, 7).

        Active holds count until their expiry instant, or for as long as an operation on
        them may still be applied. Captures settled after a balance read started may be
        missing from it too: callers add ``_late_captures`` when they can exist (``check``,
        ``reserve``); ``capture`` reads after claiming the card, when none can.
        """
        holding_ops = [
            op
            for op in tx.operations_for_card(barcode, HOLDING_OPERATION_STATES)
            if op.kind is OperationKind.CAPTURE
        ]
        pinned = {op.reservation_id for op in holding_ops}
        return _total(
            r
            for r in tx.reservations_for_card(barcode, [ReservationState.ACTIVE])
            if r.id != exclude and counts_as_held(r, now, pinned)
        )

    @staticmethod
    def _late_captures(tx: LedgerTransaction, barcode: str, since: datetime) -> list[Operation]:
        return [
            op
            for op in tx.operations_settled_since(barcode, since)
            if op.kind is OperationKind.CAPTURE
        ]

    def _require_capturable(
        self, tx: LedgerTransaction, reservation: Reservation, now: datetime
    ) -> None:
        if reservation.state is not ReservationState.ACTIVE:
            raise InvalidStateError(f"reservation is {reservation.state.value}, not active")
        if reservation.expires_at <= now:
            raise InvalidStateError("reservation has expired")
        self._require_card_idle(tx, reservation.barcode)

    def _require_card_idle(self, tx: LedgerTransaction, barcode: str) -> None:
        """Invariant 15: while an operation of the card may still be applied, nothing else
        may move its balance, or the balance stops being evidence of either outcome."""
        busy = tx.operations_for_card(barcode, CARD_BUSY_STATES)
        if not busy:
            return
        blocking = min(busy, key=lambda op: op.created_at)
        waiting = blocking.state in (OperationState.UNKNOWN, OperationState.MANUAL_REVIEW)
        raise CardBusyError(
            f"operation {blocking.id} on this card is {blocking.state.value}; "
            + (
                "reconcile or an operator must resolve it first"
                if waiting
                else "retry once it has settled"
            ),
            retry_after=60.0 if waiting else 2.0,
            blocking_operation_id=blocking.id,
            blocking_state=blocking.state.value,
        )

    # ----------------------------------------------------------------- reservations

    def _hold(
        self,
        tx: LedgerTransaction,
        *,
        barcode: str,
        card: GiftCard,
        decision: Decision,
        currency: str,
        order_ref: str,
        now: datetime,
        expires_at: datetime,
    ) -> Reservation:
        """Birth of a reservation: ``active``, for what ``decision`` found usable."""
        reservation = Reservation(
            id=f"res_{uuid.uuid4().hex}",
            barcode=barcode,
            amount=decision.usable_amount,
            currency=currency,
            decimals=decision.decimals,
            entity_code=card.entity_code or self.settings.entity_code,
            order_ref=order_ref,
            state=ReservationState.ACTIVE,
            created_at=now,
            expires_at=expires_at,
            forfeited=forfeited_amount(decision),
            updated_at=now,
        )
        tx.insert_reservation(reservation)
        return reservation

    @staticmethod
    def _split(
        tx: LedgerTransaction, reservation: Reservation, part: Decimal, now: datetime
    ) -> tuple[Reservation, Reservation]:
        """Shrink ``reservation`` to ``part``; the rest becomes a new active hold."""
        if reservation.forfeited > 0:
            raise InvalidAmountError("a one-go card is captured for its whole reservation")
        shrunk = replace(reservation, amount=part, updated_at=now)
        remainder = replace(
            reservation,
            id=f"res_{uuid.uuid4().hex}",
            amount=reservation.amount - part,
            created_at=now,
            updated_at=now,
            operation_id=None,
        )
        if not tx.update_reservation(shrunk, ReservationState.ACTIVE):
            raise InvalidStateError("reservation changed concurrently")
        tx.insert_reservation(remainder)
        return shrunk, remainder

    @staticmethod
    def _end_hold(
        tx: LedgerTransaction, current: Reservation, target: ReservationState, now: datetime
    ) -> Reservation | None:
        """``active`` -> ``released`` or ``expired`` (CAS); None if it was no longer active."""
        if current.state is not ReservationState.ACTIVE or not may_move_reservation(
            current.state, target
        ):
            return None
        ended = current.with_state(target, now)
        return ended if tx.update_reservation(ended, ReservationState.ACTIVE) else None

    @staticmethod
    def _capture_reservation(tx: LedgerTransaction, capture: Operation, now: datetime) -> None:
        """The capture that succeeded captures its reservation (if still active)."""
        reservation = tx.get_reservation(capture.reservation_id)
        if reservation is not None and may_move_reservation(
            reservation.state, ReservationState.CAPTURED
        ):
            captured = replace(
                reservation,
                state=ReservationState.CAPTURED,
                operation_id=capture.id,
                updated_at=now,
            )
            tx.update_reservation(captured, ReservationState.ACTIVE)

    # ------------------------------------------------------------------- operations

    def _claim(
        self,
        tx: LedgerTransaction,
        kind: OperationKind,
        reservation: Reservation,
        amount: Decimal,
        now: datetime,
        token: str,
        parent: Operation | None = None,
    ) -> Operation:
        """Birth of an operation: the claim, written ``prepared`` before the card is read
        for it (step 1 of ``capture``); from its commit on the card is busy."""
        claim = Operation(
            id=f"op_{uuid.uuid4().hex}",
            kind=kind,
            reservation_id=reservation.id,
            barcode=reservation.barcode,
            amount=amount,
            currency=reservation.currency,
            entity_code=parent.entity_code if parent is not None else reservation.entity_code,
            state=OperationState.PREPARED,
            created_at=now,
            updated_at=now,
            deadline=now + timedelta(seconds=self.settings.callback_timeout),
            callback_token_hash=token_hash(token),
            parent_id=parent.id if parent is not None else None,
        )
        tx.insert_operation(claim)
        return claim

    def _mark_sending(
        self, tx: LedgerTransaction, claim: Operation, card: GiftCard, now: datetime
    ) -> Operation:
        """Invariant 4: ``sending``, with its evidence, is committed before the request can
        leave. The CAS fails if ``reconcile`` gave up on the claim meanwhile."""
        sending = replace(
            claim,
            state=OperationState.SENDING,
            updated_at=now,
            balance_before=card.amount,
            entity_code=card.entity_code or claim.entity_code,
        )
        if not tx.update_operation(sending, OperationState.PREPARED):
            raise InvalidStateError(
                "operation changed before it was sent (reconcile gave up on the claim)"
            )
        return sending

    @staticmethod
    def _refuse_claim(
        tx: LedgerTransaction, claim: Operation, now: datetime, why: str
    ) -> Operation:
        """``prepared`` -> ``failed`` under the card lock: the claim is never sent."""
        refused = replace(claim, state=OperationState.FAILED, updated_at=now, message=why[:500])
        if not tx.update_operation(refused, OperationState.PREPARED):
            raise InvalidStateError("operation changed before it was sent")
        return refused

    def _transition(
        self, operation_id: str, expected: OperationState, **changes: Any
    ) -> Operation | None:
        """CAS one operation; None if it was no longer in ``expected``."""
        with self.store.transaction() as tx:
            current = tx.get_operation(operation_id)
            if current is None or current.state is not expected:
                return None
            updated = replace(current, updated_at=self.clock.now(), **changes)
            if not may_move(current.state, updated.state) and updated.state is not current.state:
                return None
            self.cards.evict(current.barcode)
            return updated if tx.update_operation(updated, expected) else None

    # -------------------------------------------------------------------- release

    def _record_queue_id(self, operation_id: str, queue_id: str | None) -> Operation:
        """Keep 4WS's queue id on an operation whose callback settled it before the POST's
        answer was recorded; its state (the callback's verdict) is left as it is."""
        current = self._operation(operation_id)
        if current.queue_id is None:
            with self.store.transaction() as tx:
                tx.update_operation(replace(current, queue_id=queue_id), current.state)
        return self._operation(operation_id)

    def _apply_verdict(
        self,
        tx: LedgerTransaction,
        current: Operation,
        verdict: OperationState,
        now: datetime,
        **changes: Any,
    ) -> Operation | None:
        """Settle ``current`` as ``verdict`` (CAS), and if a capture succeeded, capture its
        reservation in the same transaction. None when the one-way machine forbids the move
        (``current`` is terminal) or another writer changed it first."""
        if not may_move(current.state, verdict):
            return None
        settled = replace(current, state=verdict, updated_at=now, **changes)
        if not tx.update_operation(settled, current.state):
            return None
        if verdict is OperationState.SUCCEEDED and current.kind is OperationKind.CAPTURE:
            self._capture_reservation(tx, current, now)
        return settled

    def _settle(
        self, op: Operation, expected: OperationState, verdict: OperationState, why: str
    ) -> Operation | None:
        """CAS ``expected -> verdict`` in its own card transaction, then tell hosts."""
        now = self.clock.now()
        with self.writing(op.barcode) as tx:
            current = tx.get_operation(op.id)
            if current is None or current.state is not expected:
                return None
            resolved = self._apply_verdict(
                tx,
                current,
                verdict,
                now,
                message=why,
                settled_at=now if verdict is OperationState.SUCCEEDED else None,
            )
            if resolved is None:
                return None
        self._emit_settlement(resolved)
        return resolved
