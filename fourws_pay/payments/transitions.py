"""Every state change of the ledger, and the guards that must hold before one.

The states, the allowed moves and what each state means for the money are data in
``states``; this module is the only writer of states. Reservations are born ``active``
(``_hold``); operations are born ``prepared`` (the card was idle) or ``queued`` (it was
not), both by ``_new_operation``, and move through ``states.OPERATION_TRANSITIONS``. Every
write of a state is a compare-and-set on the state it expects, under the card's lock, so a lost
race is seen instead of overwritten and no two writers of one card's operations interleave
(a callback and the recording of the POST's answer included). The rules that link the
machines are written once, in ``_apply_verdict``: a capture that succeeds captures its
reservation; an activation that settles settles its sold card (``_settle_sold_card``). Sold
cards' other moves are issuing's (``issuing``), by the same compare-and-set.

What states mean for the money: an operation in ``HOLDING_OPERATION_STATES`` keeps its
reservation's hold counting (``held``); one in ``CARD_BUSY_STATES`` makes every other
capture or refund of the card wait in the queue (``_blocker``).

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
from fourws_pay.errors import InvalidAmountError, InvalidStateError
from fourws_pay.payments.base import CoreBase
from fourws_pay.payments.models import (
    Decision,
    IssuedCardState,
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)
from fourws_pay.payments.rules import forfeited_amount
from fourws_pay.payments.states import (
    CARD_BUSY_STATES,
    HOLDING_OPERATION_STATES,
    may_move,
    may_move_reservation,
)

if TYPE_CHECKING:
    from fourws_pay.payments.ports import LedgerTransaction

__all__ = [
    "CARD_BUSY_STATES",
    "HOLDING_OPERATION_STATES",
    "Transitions",
    "counts_as_held",
    "live_captures",
    "may_move",
    "may_move_reservation",
    "token_hash",
]


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
    def _late_captures(
        tx: LedgerTransaction, barcode: str, since: datetime, *, ties_reflected: bool = False
    ) -> list[Operation]:
        """Captures settled at or after ``since`` (a read's start): maybe not in its balance.

        One settled at the very instant the read started is either side of it: a coarse or
        frozen clock (the pytest plugin's ``ManualClock``) stamps both alike. ``reserve``
        counts it and, when that changes its answer, reads again (safe both ways);
        ``check``, which promises nothing, takes it as shown by the read
        (``ties_reflected``), or it would count a settled capture twice, once in the
        balance and once here, on every read of a frozen clock.
        """
        return [
            op
            for op in tx.operations_settled_since(barcode, since)
            if op.kind is OperationKind.CAPTURE
            and not (ties_reflected and op.settled_at is not None and op.settled_at <= since)
        ]

    @staticmethod
    def _require_capturable(reservation: Reservation, now: datetime) -> None:
        if reservation.state is not ReservationState.ACTIVE:
            raise InvalidStateError(f"reservation is {reservation.state.value}, not active")
        if reservation.expires_at <= now:
            raise InvalidStateError("reservation has expired")

    @staticmethod
    def _blocker(tx: LedgerTransaction, barcode: str) -> Operation | None:
        """What a new capture or refund of ``barcode`` must wait behind, if anything.

        Invariant 15: while an operation of the card may still be applied (or holds the
        card's claim), nothing else may move its balance, or the balance stops being
        evidence of either outcome. Invariant 17: and whatever is queued goes first, so the
        queue keeps its order. The oldest busy operation, else the oldest queued one.
        """
        busy = tx.operations_for_card(barcode, CARD_BUSY_STATES)
        if busy:
            return min(busy, key=lambda op: (op.created_at, op.id))
        waiting = tx.operations_for_card(barcode, [OperationState.QUEUED])
        return min(waiting, key=lambda op: (op.created_at, op.id)) if waiting else None

    @staticmethod
    def _queue_stamp(tx: LedgerTransaction, barcode: str, now: datetime) -> datetime:
        """The ``created_at`` of an operation joining the card's queue, which is also its
        place in it: strictly after every operation already queued on the card, so the
        order is the order of these writes (all under the card lock) even when the clock
        stands still (a frozen test clock) or another worker's clock runs ahead."""
        waiting = tx.operations_for_card(barcode, [OperationState.QUEUED])
        tail = max((op.created_at for op in waiting), default=None)
        return now if tail is None or tail < now else tail + timedelta(microseconds=1)

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
        reservation_id: str | None = None,
    ) -> Reservation:
        """Birth of a reservation: ``active``, for what ``decision`` found usable.

        ``reservation_id`` is given by callers whose retries must find the hold again
        (``reserve_order``); the caller looked it up under the same card lock first."""
        reservation = Reservation(
            id=reservation_id or f"res_{uuid.uuid4().hex}",
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

    def _new_operation(
        self,
        tx: LedgerTransaction,
        kind: OperationKind,
        reservation: Reservation,
        amount: Decimal,
        now: datetime,
        *,
        token: str | None,
        parent: Operation | None = None,
        operation_id: str | None = None,
    ) -> Operation:
        """Birth of an operation, written ahead of everything it will do (invariant 4).

        With a ``token`` it is the *claim* (``prepared``): the card was idle, and from this
        commit on it is busy; the card is read for the operation next (step 1 of
        ``capture``). Without one it is ``queued`` behind the card's ``_blocker``; its
        callback secret is drawn at its turn (``_take_turn``), by whichever worker posts it,
        since only the secret's hash is ever stored. ``operation_id`` is fixed in advance
        by an order refund's plan (its part is this operation, whoever posts it).
        """
        operation = Operation(
            id=operation_id or f"op_{uuid.uuid4().hex}",
            kind=kind,
            reservation_id=reservation.id,
            barcode=reservation.barcode,
            amount=amount,
            currency=reservation.currency,
            entity_code=parent.entity_code if parent is not None else reservation.entity_code,
            state=OperationState.PREPARED if token is not None else OperationState.QUEUED,
            created_at=now,
            updated_at=now,
            deadline=now + timedelta(seconds=self.settings.callback_timeout),
            callback_token_hash=token_hash(token) if token is not None else "",
            parent_id=parent.id if parent is not None else None,
        )
        if token is None:
            operation = replace(
                operation, created_at=self._queue_stamp(tx, reservation.barcode, now)
            )
        tx.insert_operation(operation)
        return operation

    def _claim_or_queue(
        self,
        tx: LedgerTransaction,
        kind: OperationKind,
        reservation: Reservation,
        amount: Decimal,
        now: datetime,
        token: str,
        parent: Operation | None = None,
        operation_id: str | None = None,
    ) -> tuple[Operation, Operation | None]:
        """The operation's birth under the card lock: the claim (``prepared``, with
        ``token``) if the card is idle, else ``queued`` behind its ``_blocker``, which is
        returned beside it (None for a claim)."""
        blocker = self._blocker(tx, reservation.barcode)
        operation = self._new_operation(
            tx,
            kind,
            reservation,
            amount,
            now,
            token=None if blocker is not None else token,
            parent=parent,
            operation_id=operation_id,
        )
        return operation, blocker

    def _take_turn(
        self, tx: LedgerTransaction, queued: Operation, now: datetime, token: str
    ) -> Operation:
        """``queued -> prepared``: the queued operation claims the idle card (the caller
        checked ``_blocker`` under this lock), with a fresh callback secret and deadline."""
        claim = replace(
            queued,
            state=OperationState.PREPARED,
            updated_at=now,
            deadline=now + timedelta(seconds=self.settings.callback_timeout),
            callback_token_hash=token_hash(token),
        )
        if not tx.update_operation(claim, OperationState.QUEUED):
            raise InvalidStateError("queued operation changed concurrently")
        return claim

    def _give_back_turn(self, claim: Operation, why: str) -> Operation | None:
        """``prepared -> queued``: a claim that was never sent waits for its next turn
        instead of failing what the shop was promised (no money moved)."""
        return self._transition(
            claim, OperationState.PREPARED, state=OperationState.QUEUED, message=why[:500]
        )

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
        """``prepared`` or ``queued`` -> ``failed`` under the card lock: never sent."""
        refused = replace(claim, state=OperationState.FAILED, updated_at=now, message=why[:500])
        if not tx.update_operation(refused, claim.state):
            raise InvalidStateError("operation changed before it was sent")
        return refused

    def _transition(
        self, operation: Operation, expected: OperationState, **changes: Any
    ) -> Operation | None:
        """CAS one operation under its card's lock; None if it was no longer ``expected``.

        Under the lock, not beside it: a callback settles under the card lock, and a write
        without it (recording the POST's answer, say) could slip between the callback's read
        and its compare-and-set and make an authentic callback lose (issue: callbacks
        answered 409 that 4WS never resends).
        """
        with self.writing(operation.barcode) as tx:
            current = tx.get_operation(operation.id)
            if current is None or current.state is not expected:
                return None
            updated = replace(current, updated_at=self.clock.now(), **changes)
            if not may_move(current.state, updated.state) and updated.state is not current.state:
                return None
            return updated if tx.update_operation(updated, expected) else None

    # -------------------------------------------------------------------- release

    def _record_queue_id(self, operation: Operation, queue_id: str | None) -> Operation:
        """Keep 4WS's queue id on an operation whose callback settled it before the POST's
        answer was recorded; its state (the callback's verdict) is left as it is."""
        with self.writing(operation.barcode) as tx:
            current = tx.get_operation(operation.id)
            assert current is not None
            if current.queue_id is None:
                current = replace(current, queue_id=queue_id)
                tx.update_operation(current, current.state)
            return current

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
        if current.kind is OperationKind.ACTIVATE:
            self._settle_sold_card(tx, settled, verdict, now, reviewed=current.state)
        return settled

    @staticmethod
    def _settle_sold_card(
        tx: LedgerTransaction,
        activation: Operation,
        verdict: OperationState,
        now: datetime,
        *,
        reviewed: OperationState,
    ) -> None:
        """The activation that settles settles its sold card, in the same transaction:
        ``active`` (money is on it), ``failed`` (4WS refused it), or back to ``generated``
        when an operator found it was never applied (``reviewed`` is ``manual_review``):
        on their word the card is activated again, or the buyer would never get it. A card
        being cancelled stays ``cancelling``: the issuing pump takes back what the
        activation loaded. ``manual_review`` leaves it ``activating``."""
        sold = tx.get_issued_card(activation.reservation_id)
        if sold is None or sold.state is not IssuedCardState.ACTIVATING:
            return
        if sold.activate_op_id != activation.id:
            return
        if verdict is OperationState.SUCCEEDED:
            target = replace(sold, state=IssuedCardState.ACTIVE, updated_at=now)
        elif verdict is OperationState.FAILED and reviewed is OperationState.MANUAL_REVIEW:
            target = replace(
                sold, state=IssuedCardState.GENERATED, updated_at=now, activate_op_id=None
            )
        elif verdict is OperationState.FAILED:
            why = activation.message or "4WS refused the activation"
            target = replace(sold, state=IssuedCardState.FAILED, updated_at=now, message=why[:500])
        else:
            return
        tx.update_issued_card(target, IssuedCardState.ACTIVATING)

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
