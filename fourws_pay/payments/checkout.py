"""Checkout: check, reserve, capture, refund, release, and the POST they share.

Each public action is a flow (see ``effects``): input is checked before any I/O (bad input
is a typed error, never a traceback), the card is read with no lock held, and the decision
is taken under the card's lock from that read and the ledger as it is under the lock. The
state changes themselves are ``transitions``'; this module decides when they happen.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from fourws_pay.api.models import GiftCard, GiftCardUpdate, QueuedOperation
from fourws_pay.errors import (
    AmbiguousOutcomeError,
    CardBusyError,
    CurrencyMismatchError,
    FourWSError,
    InvalidAmountError,
    InvalidInputError,
    InvalidStateError,
    PaymentRefused,
)
from fourws_pay.limits import BARCODE_MAX, ORDER_REF_MAX, require_text
from fourws_pay.logs import get_logger, mask_barcode
from fourws_pay.money import positive_amount, require_currency, to_decimal
from fourws_pay.payments.cache import CardRead
from fourws_pay.payments.crash import crash_point
from fourws_pay.payments.effects import PaymentFlow, PostUpdate
from fourws_pay.payments.issuing import Issuing
from fourws_pay.payments.models import (
    Decision,
    EventKind,
    IssuedCard,
    Operation,
    OperationKind,
    OperationState,
    RefusalReason,
    Reservation,
    ReservationState,
)
from fourws_pay.payments.rules import UNIFORM_REASONS, PaymentRequest, evaluate, refuse
from fourws_pay.payments.transitions import _total, live_captures

if TYPE_CHECKING:
    from fourws_pay.payments.ports import LedgerTransaction

# How many times ``reserve`` reads a card whose captures keep settling under it.
RESERVE_READS = 3
log = get_logger()
MAX_RESERVATION_TTL = 366 * 86_400.0


def _require_barcode(barcode: object) -> str:
    if not isinstance(barcode, str) or not barcode.strip():
        raise InvalidInputError("barcode must be a non-empty string")
    text = barcode.strip()
    if len(text) > BARCODE_MAX or not text.isprintable() or "/" in text:
        raise InvalidInputError(
            f"barcode is not a valid gift card code (at most {BARCODE_MAX} printable characters)"
        )
    return text


def _outcome(decision: Decision) -> tuple[bool, RefusalReason | None, Decimal]:
    """What a decision means for the shop (its message and balance aside)."""
    return decision.ok, decision.reason, decision.usable_amount


def _require_ttl(ttl: object, *, default: float) -> timedelta:
    """A hold's lifetime, checked before any I/O: finite, positive, at most a year."""
    if ttl is None:
        ttl = default
    if isinstance(ttl, bool) or not isinstance(ttl, int | float | Decimal):
        raise InvalidInputError("ttl must be a number of seconds")
    if not math.isfinite(ttl) or not 0 < ttl <= MAX_RESERVATION_TTL:
        raise InvalidInputError(
            f"ttl must be more than 0 and at most {MAX_RESERVATION_TTL:.0f} seconds (a year)"
        )
    return timedelta(seconds=float(ttl))


def _requested_amount(amount: object) -> Decimal:
    """Validate before any 4WS call; digits are checked against the card later."""
    value = to_decimal(amount)
    if value <= 0:
        raise InvalidAmountError(f"amount must be greater than zero, got {value}")
    return value


class Checkout(Issuing):
    """The flows that take money: the shop's side of a payment."""

    def _request(
        self, amount: Decimal, currency: str, now: datetime, allow_partial: bool
    ) -> PaymentRequest:
        return PaymentRequest(
            amount=amount,
            currency=currency,
            now=now,
            shop_entity_code=self.settings.entity_code,
            allow_partial=allow_partial,
            forfeit_partial_remainder=self.settings.forfeit_partial_remainder,
        )

    def _refused(self, decision: Decision, client_key: str | None) -> PaymentRefused:
        """The typed error for a refused decision (README's error table).

        A currency mismatch is ``CurrencyMismatchError`` (both a refusal and bad input); an
        amount with more decimals than the card allows is ``InvalidAmountError``, raised
        like every other malformed amount even though only the card read can tell.
        """
        if decision.reason in UNIFORM_REASONS:
            self.throttle.record_failure(client_key)
        assert decision.reason is not None
        if decision.reason is RefusalReason.INVALID_AMOUNT:
            raise InvalidAmountError(decision.message)
        error = (
            CurrencyMismatchError
            if decision.reason is RefusalReason.CURRENCY_MISMATCH
            else PaymentRefused
        )
        return error(decision.reason, decision.message, public_message=decision.public_message)

    # ---------------------------------------------------------------------- check

    def check(
        self,
        barcode: str,
        amount: object,
        currency: str,
        client_key: str | None,
        allow_partial: bool,
    ) -> PaymentFlow[Decision]:
        barcode = _require_barcode(barcode)
        requested = _requested_amount(amount)
        currency = require_currency(currency)
        self.throttle.check(client_key)
        read = self.cards.get(barcode)
        if read is None:
            read = yield from self.read(barcode, cached=True)
        now = self.clock.now()
        held = read.held
        if held is None:
            version = self.cards.version(barcode)
            with self.store.snapshot() as tx:
                held = self.held(tx, barcode, now) + _total(
                    self._late_captures(tx, barcode, read.read_at, ties_reflected=True)
                )
            self.cards.put(barcode, replace(read, held=held), if_version=version)
        decision = evaluate(
            read.card,
            self._request(requested, currency, now, allow_partial),
            held=held,
            barcode=barcode,
        )
        if not decision.ok and decision.reason in UNIFORM_REASONS:
            self.throttle.record_failure(client_key)
        return decision

    # -------------------------------------------------------------------- reserve

    def reserve(
        self,
        barcode: str,
        amount: object | None,
        currency: str | None,
        order_ref: str,
        client_key: str | None,
        allow_partial: bool,
        ttl: object | None,
    ) -> PaymentFlow[Reservation]:
        """Hold part of a card's balance (invariants 2, 7, 10, 16).

        Evidence and its lock: the balance is read first (no lock is ever held across an
        HTTP call), then the decision is taken under the card's lock from that balance and
        the ledger as it is under the lock. Holds and in-flight captures are in the ledger,
        so they are exact; what the read may miss is a capture settled after the read
        started, and counting those keeps invariant 2 but may count a settlement twice
        (once in the balance, once here) and refuse a hold the card can pay. So when such
        late settlements change the answer, the lock is left and the card read again: they
        were committed before that read started, so it surely shows them and they are no
        longer counted (``reflected``). A second worker settling, capturing or expiring
        between the read and the lock is therefore either counted or re-read, never
        missed. After ``RESERVE_READS`` reads that each lost that race the answer is
        ``CardBusyError`` (retryable), never a refusal reason.
        """
        barcode = _require_barcode(barcode)
        order_ref = require_text("order_ref", order_ref, ORDER_REF_MAX)
        if amount is None or currency is None:
            snapshot = self.cart(order_ref)
            if snapshot is None:
                raise InvalidInputError(
                    "amount and currency are required (no plugin described this order)"
                )
            amount = snapshot.total if amount is None else amount
            currency = snapshot.currency if currency is None else currency
        requested = _requested_amount(amount)
        currency = require_currency(currency)
        lifetime = _require_ttl(ttl, default=self.settings.reservation_ttl)
        self.throttle.check(client_key)

        reservation, _ = yield from self._reserve_on_card(
            barcode, requested, currency, order_ref, client_key, allow_partial, lifetime
        )
        return reservation

    def _reserve_on_card(
        self,
        barcode: str,
        requested: Decimal,
        currency: str,
        order_ref: str,
        client_key: str | None,
        allow_partial: bool,
        lifetime: timedelta,
        *,
        reservation_id: str | None = None,
        first_read: CardRead | None = None,
    ) -> PaymentFlow[tuple[Reservation, bool]]:
        """``reserve``'s read-then-decide loop on one card (see ``reserve``): the hold and
        whether this call placed it.

        With ``reservation_id`` (``reserve_order``), a reservation that already has the id,
        looked up under the card lock, is returned instead of a second hold (``False``):
        however many workers run one order allocation, each card gets at most one hold of
        it. ``first_read`` is a fresh read the caller made already (its planning read).
        """
        reflected: frozenset[str] = frozenset()
        for _ in range(RESERVE_READS):
            if first_read is not None:
                read, first_read = first_read, None
            else:
                read = yield from self.read(barcode, cached=False)
            reservation: Reservation | None = None
            late: list[Operation] = []
            with self.writing(barcode) as tx:
                if reservation_id is not None:
                    existing = tx.get_reservation(reservation_id)
                    if existing is not None:
                        return existing, False
                now = self.clock.now()  # inside the lock: stamps follow commit order
                request = self._request(requested, currency, now, allow_partial)
                held = self.held(tx, barcode, now)
                late = [
                    op
                    for op in self._late_captures(tx, barcode, read.read_at)
                    if op.id not in reflected
                ]
                decision = evaluate(read.card, request, held=held + _total(late), barcode=barcode)
                if late and _outcome(decision) != _outcome(
                    evaluate(read.card, request, held=held, barcode=barcode)
                ):
                    reflected |= {op.id for op in late}
                    continue  # leave the lock; the next read shows these settlements
                if decision.ok:
                    assert read.card is not None
                    expires_at = now + lifetime
                    if read.card.expiration_date is not None:
                        expires_at = min(expires_at, read.card.expiration_date)
                    reservation = self._hold(
                        tx,
                        barcode=barcode,
                        card=read.card,
                        decision=decision,
                        currency=currency,
                        order_ref=order_ref,
                        now=now,
                        expires_at=expires_at,
                        reservation_id=reservation_id,
                    )
                    crash_point("reserve.before_commit")
            if reservation is None:
                raise self._refused(decision, client_key)
            self.emit(EventKind.RESERVED, reservation=reservation)
            return reservation, True
        raise CardBusyError(
            f"payments on this card settled during each of {RESERVE_READS} reads; retry",
            retry_after=1.0,
        )

    # -------------------------------------------------------------------- capture

    def capture(
        self, reservation_id: str, amount: object | None, keep_remainder: bool = False
    ) -> PaymentFlow[Operation]:
        """Post the consumption of a hold, now or at its turn (invariants 3, 4, 10, 15-17).

        A partial ``amount`` normally frees the rest of the hold once the capture settles.
        With ``keep_remainder`` the hold is split in the claim's transaction: this
        reservation shrinks to ``amount`` (and is what gets captured), and the rest stays
        held as a new active reservation with the same ``order_ref`` and expiry (find it
        with ``list_reservations(order_ref=…)``), to be captured or released later. The sum
        held never changes, so the split needs no new check of the card. A card that must
        be spent in one go (``flgPartiallyUsage = N``) is never captured in part: that is
        refused before anything is written (its flag is read first).

        ``reconcile`` may later judge an ambiguous POST by comparing the card's balance with
        ``balance_before``, so ``balance_before`` must show every balance change of ours
        made before the POST and none made after. Hence three steps:

        1. *claim*, under the card lock: the hold is active and unexpired. If no operation
           of the card may still be applied or holds its claim, and none is queued
           (``_blocker``), the operation is written ``prepared``: from this commit on the
           card is busy. Otherwise it is written ``queued`` and returned at once; whoever
           makes the card idle (a callback, ``reconcile``, ``resolve``, a failed send)
           gives it its turn (``advance_queue``), which is this same claim made later.
        2. *read* the card. Every operation of ours settled before the claim was applied by
           4WS before we learnt it (its callback, or a balance that had already moved), so
           this read, which starts after the claim committed, shows all of them.
        3. *confirm*, under the card lock: re-check the rules on this read (invariant 10)
           against the other holds only. No settlement of ours can land between the claim
           and the read, so none is counted twice and a hold granted within the balance is
           refused only if something truly took the money (invariant 16).
           ``balance_before`` is stored from this read and the operation marked
           ``sending`` (invariant 4); then the POST.

        A second worker acting between any two steps either queues behind this claim
        (capture, refund), adds a hold that was decided with ours counted (reserve), frees
        money (release, expiry of another hold: ours is pinned by its operation and never
        expires), or settles an operation that was already terminal before step 1.
        """
        reservation = self._reservation(reservation_id)
        if self._is_partial(reservation, amount):
            yield from self._require_divisible(reservation)
        token = secrets.token_urlsafe(32)
        with self.writing(reservation.barcode) as tx:
            now = self.clock.now()
            current = tx.get_reservation(reservation.id)
            assert current is not None
            reservation = current
            same = live_captures(tx, reservation.id)
            if same:
                # Capturing twice returns the first capture (a retried request, or a
                # concurrent capture that won): at most one POST per hold, whatever the
                # retry's amount.
                return same[-1]
            to_capture = self._capture_amount(reservation, amount)
            self._require_capturable(reservation, now)
            remainder = None
            if keep_remainder and to_capture < reservation.amount:
                reservation, remainder = self._split(tx, reservation, to_capture, now)
            operation, blocker = self._claim_or_queue(
                tx, OperationKind.CAPTURE, reservation, to_capture, now, token
            )
        if remainder is not None:
            self.emit(EventKind.RESERVED, reservation=remainder, split_from=reservation.id)
        if blocker is not None:
            return (yield from self._queued(operation, reservation, blocker))
        crash_point("capture.after_prepare")
        return (yield from self._confirm_and_send(operation, reservation, token))

    def _is_partial(self, reservation: Reservation, amount: object | None) -> bool:
        """Would this capture take part of an active hold? A bad amount says no here: it
        is refused under the lock, after a retry has had the chance to find its capture."""
        if amount is None or reservation.state is not ReservationState.ACTIVE:
            return False
        try:
            return self._capture_amount(reservation, amount) < reservation.amount
        except InvalidAmountError:
            return False

    def _require_divisible(self, reservation: Reservation) -> PaymentFlow[None]:
        """A one-go card (``flgPartiallyUsage = N``) is consumed whole: a partial capture
        of it would leave a hold 4WS cannot honour (or a split that can never be captured,
        invariant 16). Read before anything is written; the flag is the card's, not the
        balance, so a short-lived cached read is good enough."""
        read = yield from self.read(reservation.barcode, cached=True)
        if read.card is not None and not read.card.flg_partially_usage:
            raise InvalidAmountError(
                "this card is spent in one go (flgPartiallyUsage=N): capture its whole "
                "reservation or release it"
            )

    def _queued(
        self, operation: Operation, reservation: Reservation, blocker: Operation
    ) -> PaymentFlow[Operation]:
        """Tell hosts the operation waits; if only queued operations were ahead of it (the
        card is idle, their turn not given yet), give the queue its turns now."""
        self.emit(
            EventKind.QUEUED,
            reservation=reservation,
            operation=operation,
            message=f"waits for operation {blocker.id} ({blocker.state.value})",
            blocking_operation_id=blocker.id,
        )
        if blocker.state is OperationState.QUEUED:
            yield from self.advance_queue(operation.barcode)
            return self._operation(operation.id)
        return operation

    def recheck(
        self,
        card: GiftCard | None,
        reservation: Reservation,
        held_others: Decimal,
        now: datetime,
    ) -> Decision:
        """Invariant 10: the rules again, on a fresh read, just before the capture POST."""
        return evaluate(
            card,
            PaymentRequest(
                amount=reservation.amount,
                currency=reservation.currency,
                now=now,
                shop_entity_code=self.settings.entity_code,
                allow_partial=False,
                forfeit_partial_remainder=reservation.forfeited > 0,
            ),
            held=held_others,
            barcode=reservation.barcode,
        )

    @staticmethod
    def _capture_amount(reservation: Reservation, amount: object | None) -> Decimal:
        """What ``capture(amount=…)`` takes from the hold: all of it by default."""
        if amount is None:
            return reservation.amount
        to_capture = positive_amount(amount, reservation.decimals)
        if to_capture > reservation.amount:
            raise InvalidAmountError("cannot capture more than was reserved")
        if reservation.forfeited > 0 and to_capture != reservation.amount:
            raise InvalidAmountError("a one-go card is captured for its whole reservation")
        return to_capture

    def _decide(
        self, tx: LedgerTransaction, claim: Operation, card: GiftCard | None, now: datetime
    ) -> Decision | None:
        """Step 3's verdict under the card lock: None to send, a refusing ``Decision`` to
        stop. A capture is re-checked against the card's other holds (invariant 10); a
        refund only needs the card to exist."""
        reservation = tx.get_reservation(claim.reservation_id)
        assert reservation is not None
        if claim.kind is OperationKind.CAPTURE:
            held_others = self.held(tx, claim.barcode, now, exclude=reservation.id)
            decision = self.recheck(card, reservation, held_others, now)
            return None if decision.ok else decision
        if card is not None:
            return None
        request = self._request(claim.amount, claim.currency, now, allow_partial=False)
        return refuse(RefusalReason.NOT_FOUND, "card not found at 4WS", request, claim.barcode)

    def _confirm_and_send(
        self, claim: Operation, reservation: Reservation, token: str, *, turn: bool = False
    ) -> PaymentFlow[Operation]:
        """Steps 2 and 3 of ``capture`` (refunds and queued turns take the same path): read
        the claimed card, decide under its lock, record the evidence, mark ``sending``,
        POST.

        Called for a queued operation's ``turn``, nothing is raised (nobody is waiting for
        an answer: the outcome is in the ledger and in payment events) and a failed card
        read gives the turn back instead of failing what was accepted. Called by a shop,
        the outcome is returned or raised as before, and a refusal that leaves the card
        idle gives the queue behind it its turns first.
        """
        capture = claim.kind is OperationKind.CAPTURE
        try:
            read = yield from self._evidence_read(claim)
        except FourWSError as exc:
            why = f"never sent: the card read failed ({type(exc).__name__})"
            if turn:
                return self._give_back_turn(claim, why) or self._operation(claim.id)
            abandoned = self._transition(
                claim, OperationState.PREPARED, state=OperationState.FAILED, message=why
            )
            if abandoned is not None:
                self._emit_settlement(abandoned)
            yield from self.advance_queue(claim.barcode)
            raise
        with self.writing(claim.barcode) as tx:
            now = self.clock.now()
            decision = self._decide(tx, claim, read.card, now)
            if decision is None:
                assert read.card is not None
                confirmed = self._mark_sending(tx, claim, read.card, now)
            else:
                confirmed = self._refuse_claim(
                    tx, claim, now, f"never sent: re-check refused: {decision.message}"
                )
        if decision is not None:
            self.emit(
                EventKind.CAPTURE_FAILED if capture else EventKind.REFUND_FAILED,
                reservation=reservation,
                operation=confirmed,
                message=f"re-check before sending refused: {decision.message}",
                reason=decision.reason.value if decision.reason else None,
            )
            if turn:
                return confirmed
            yield from self.advance_queue(claim.barcode)
            raise PaymentRefused(
                decision.reason or RefusalReason.INSUFFICIENT_BALANCE,
                f"{claim.kind.value} refused: {decision.message}",
                public_message=decision.public_message,
            )
        crash_point("capture.after_sending" if capture else "refund.after_sending")
        try:
            return (yield from self._post(confirmed, reservation, token))
        except FourWSError:
            if turn:
                return self._operation(claim.id)
            yield from self.advance_queue(claim.barcode)
            raise

    def _evidence_read(self, claim: Operation) -> PaymentFlow[CardRead]:
        """The balance ``reconcile`` will judge the operation by: read after the claim."""
        return (yield from self.read(claim.barcode, cached=False))

    def _post(
        self, sending: Operation, reservation: Reservation, token: str
    ) -> PaymentFlow[Operation]:
        """The POST of an operation already committed as ``sending``:
        -> enqueued | unknown | failed."""
        capture = sending.kind is OperationKind.CAPTURE
        cart = self.cart(reservation.order_ref)
        update = GiftCardUpdate(
            entity_code=sending.entity_code,
            barcode=sending.barcode,
            amount=sending.signed_amount,
            decimals=reservation.decimals,
            callback=f"{self.callback_base_url()}/{sending.id}/{token}",
            payload={"operation_id": sending.id, "order_ref": reservation.order_ref},
            client_code=cart.client_code if cart else None,
            client_barcode=cart.client_barcode if cart else None,
            client_denomination=cart.client_denomination if cart else None,
        )
        try:
            queued: QueuedOperation = yield PostUpdate(update)
        except AmbiguousOutcomeError as exc:
            unknown = self._transition(
                sending, OperationState.SENDING, state=OperationState.UNKNOWN, message=str(exc)
            )
            return unknown or self._operation(sending.id)
        except FourWSError as exc:
            failed = self._transition(
                sending,
                OperationState.SENDING,
                state=OperationState.FAILED,
                message=str(exc)[:500],
            )
            self.emit(
                EventKind.CAPTURE_FAILED if capture else EventKind.REFUND_FAILED,
                reservation=reservation,
                operation=failed,
                message=str(exc)[:200],
            )
            raise
        crash_point("capture.after_post" if capture else "refund.after_post")
        enqueued = self._transition(
            sending,
            OperationState.SENDING,
            state=OperationState.ENQUEUED,
            queue_id=queued.queue_id,
        )
        if enqueued is None:  # the callback came first and settled it: keep its verdict
            return self._record_queue_id(sending, queued.queue_id)
        if capture:
            self.emit(EventKind.CAPTURED, reservation=reservation, operation=enqueued)
        return enqueued

    # --------------------------------------------------------------------- queue

    def advance_queue(self, barcode: str) -> PaymentFlow[list[Operation]]:
        """Give the card's queued operations their turns, oldest first, while it is idle
        (invariant 17). Returns what the turns did; never raises.

        Each turn is ``capture``'s three steps, with the claim made from the queue: under
        the card lock, only if no operation of the card may still be applied or holds its
        claim (``_blocker``), the oldest queued operation becomes ``prepared`` (a
        ``queued`` one whose reservation ended instead fails, unsent); then the card is
        read and, under the lock again, re-checked on that read, so a card spent in a shop,
        expired or deactivated while the operation waited fails it with the refusal reason
        (and a payment event), nothing posted. Two workers advancing one card at once both
        take the lock; the second finds the card busy with the first's claim and stops.
        Turns stop at the first operation left in flight (``enqueued``, ``unknown``); its
        settlement advances the queue again. Ledger trouble stops the turns (logged): the
        queue is durable, and the next settlement or ``reconcile`` resumes it.
        """
        done: list[Operation] = []
        try:
            while True:
                token = secrets.token_urlsafe(32)
                with self.writing(barcode) as tx:
                    now = self.clock.now()
                    first = self._blocker(tx, barcode)
                    if first is None or first.state is not OperationState.QUEUED:
                        return done
                    reservation = tx.get_reservation(first.reservation_id)
                    assert reservation is not None
                    why = self._turn_refusal(tx, first, reservation)
                    if why is not None:
                        refused = self._refuse_claim(tx, first, now, f"never sent: {why}")
                    else:
                        claim = self._take_turn(tx, first, now, token)
                if why is not None:
                    self._emit_settlement(refused)
                    done.append(refused)
                    continue
                crash_point("queue.after_turn")
                result = yield from self._confirm_and_send(claim, reservation, token, turn=True)
                done.append(result)
                if result.state is not OperationState.FAILED:
                    return done  # in flight (its settlement advances again), or given back
        except Exception as exc:  # the queue is durable: the next settlement resumes it
            log.error(
                "fourws_pay.queue.advance_failed",
                barcode=mask_barcode(barcode),
                error=type(exc).__name__,
            )
            return done

    @staticmethod
    def _turn_refusal(
        tx: LedgerTransaction, queued: Operation, reservation: Reservation
    ) -> str | None:
        """Why a queued operation can no longer be done at all (before any read), if so.

        Its hold was pinned while it waited, so a capture's reservation can only have ended
        by an operator; a refund's capture stays succeeded and its refundable amount
        counted this refund when it was queued."""
        if queued.kind is OperationKind.CAPTURE and reservation.state is not (
            ReservationState.ACTIVE
        ):
            return f"its reservation is {reservation.state.value}"
        return None

    # -------------------------------------------------------------------- release

    def release(self, reservation_id: str) -> Reservation:
        reservation = self._reservation(reservation_id)
        with self.writing(reservation.barcode) as tx:
            now = self.clock.now()  # inside the lock: stamps follow commit order
            current = tx.get_reservation(reservation.id)
            assert current is not None
            if current.state in (ReservationState.RELEASED, ReservationState.EXPIRED):
                return current
            if current.state is ReservationState.CAPTURED:
                raise InvalidStateError("reservation was captured; refund it instead")
            if live_captures(tx, current.id):
                raise InvalidStateError("a capture of this reservation is in progress")
            target = (
                ReservationState.EXPIRED if current.expires_at <= now else ReservationState.RELEASED
            )
            updated = self._end_hold(tx, current, target, now)
            if updated is None:
                raise InvalidStateError("reservation changed concurrently")
        self.emit(
            EventKind.RELEASED if target is ReservationState.RELEASED else EventKind.EXPIRED,
            reservation=updated,
        )
        return updated

    # --------------------------------------------------------------------- refund

    def refund(self, operation_id: str, amount: object | None) -> PaymentFlow[Operation]:
        """Post money back to the card: claim (or queue), read, confirm, POST, as
        ``capture`` does, so that a refund's ``balance_before`` is sound evidence too
        (invariant 15). The refundable amount counts every refund of the capture that did
        not fail, queued ones and store-credit cards included, under the card lock:
        concurrent refunds never exceed the capture."""
        parent, reservation, requested = self._refund_request(operation_id, amount)
        token = secrets.token_urlsafe(32)
        with self.writing(parent.barcode) as tx:
            now = self.clock.now()
            to_refund = self._refundable(tx, parent, reservation, requested)
            operation, blocker = self._claim_or_queue(
                tx, OperationKind.REFUND, reservation, to_refund, now, token, parent=parent
            )
        if blocker is not None:
            return (yield from self._queued(operation, reservation, blocker))
        crash_point("refund.after_prepare")
        return (yield from self._confirm_and_send(operation, reservation, token))

    def refund_to_new_card(
        self, operation_id: str, amount: object | None
    ) -> PaymentFlow[IssuedCard]:
        """Refund a settled capture as store credit: a new sold card of the refunded amount
        (when the original card expired, say), issued like any sold card (``issuing``).

        The new card is written under the capture's card lock, where the refundable amount
        is counted (invariant 18: refunds and store credit together never exceed the
        capture), in the same transaction. Each call is a new refund, as ``refund`` is;
        a failed issuance stops counting and can be refunded again."""
        parent, reservation, requested = self._refund_request(operation_id, amount)
        with self.writing(parent.barcode) as tx:
            now = self.clock.now()
            to_refund = self._refundable(tx, parent, reservation, requested)
            card = self._store_credit(tx, parent, reservation, to_refund, now)
        yield from self.advance_issuance(card.order_ref)
        return self._issued_card(card.id)

    def _refund_request(
        self, operation_id: str, amount: object | None
    ) -> tuple[Operation, Reservation, Decimal | None]:
        parent = self._operation(operation_id)
        if parent.kind is not OperationKind.CAPTURE or parent.state is not OperationState.SUCCEEDED:
            raise InvalidStateError("only a settled capture can be refunded")
        reservation = self._reservation(parent.reservation_id)
        requested = None if amount is None else positive_amount(amount, reservation.decimals)
        return parent, reservation, requested

    def _left_to_refund(
        self, tx: LedgerTransaction, capture: Operation, reservation: Reservation
    ) -> Decimal:
        """The capture less its refunds that did not fail and its store credit: what a
        refund (or an order refund's part) may still take."""
        refunds = [
            op
            for op in tx.children_of(capture.id, OperationKind.REFUND)
            if op.state is not OperationState.FAILED
        ]
        credit = self._store_credits(tx, capture, reservation.order_ref)
        return capture.amount - _total(refunds) - credit

    def _refundable(
        self,
        tx: LedgerTransaction,
        parent: Operation,
        reservation: Reservation,
        requested: Decimal | None,
    ) -> Decimal:
        """What this refund takes, checked under the capture's card lock against what is
        left (``_left_to_refund``)."""
        refundable = self._left_to_refund(tx, parent, reservation)
        to_refund = refundable if requested is None else requested
        if to_refund <= 0:
            raise InvalidAmountError("nothing left to refund on this capture")
        if to_refund > refundable:
            raise InvalidAmountError(
                f"cannot refund {to_refund}: only {refundable} of the capture is refundable"
            )
        return to_refund

    # ------------------------------------------------------------------- callbacks
