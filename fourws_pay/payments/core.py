"""The gift-card provider's logic, written once for both twins (sans-I/O).

Every public action is a *flow*: a generator that yields the 4WS calls it needs
(``ReadCard``, ``PostUpdate``) and receives their results (or has their typed errors thrown
into it). ``GiftCardPayments`` and ``AsyncGiftCardPayments`` only execute those effects.
Ledger work happens inline: stores are synchronous and fast, and no store transaction is
ever open across a yield, i.e. across an HTTP call.

How money stays safe (docs/design.md §5):

- *held* on a card = active, unexpired reservations + reservations whose capture is in
  flight or under manual review (they never expire) + captures settled since the card was
  read (4WS's balance may not show them yet). ``available = balance − held`` (inv. 2, 7).
- reserve and capture read the card fresh, then decide under the per-card transaction
  (inv. 2, 10); ``check`` may use a short cache because it promises nothing.
- capture writes the operation (``prepared``), commits, marks it ``sending``, commits, and
  only then posts (inv. 4); one balance-changing operation per card is in flight at a time,
  so that ``reconcile`` can read the outcome off the balance (inv. 3, 6).
- an ambiguous POST leaves the operation ``unknown``; nothing re-posts it (inv. 3);
  ``reconcile`` settles it as succeeded when the balance moved by exactly the amount; an
  unchanged balance proves nothing (4WS may still apply it), so after ``reconcile_window``
  the operation goes to ``manual_review`` with its hold still counted, until an
  authenticated callback or an operator's ``resolve`` settles it.
- callbacks must present the operation's secret (constant-time compare) and only move
  operations that await them; terminal states never change (inv. 5, 8).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from fourws_pay.api import wirejson
from fourws_pay.api.models import GiftCard, GiftCardUpdate, QueuedOperation, UpdateGiftCardResult
from fourws_pay.api.retry import worst_case_seconds
from fourws_pay.clock import Clock
from fourws_pay.errors import (
    AmbiguousOutcomeError,
    APIFailure,
    CallbackRejected,
    CardBusyError,
    CurrencyMismatchError,
    FourWSError,
    InvalidAmountError,
    InvalidInputError,
    InvalidStateError,
    NotFoundInLedgerError,
    PaymentRefused,
)
from fourws_pay.logs import get_logger, mask_barcode
from fourws_pay.money import positive_amount, to_decimal
from fourws_pay.payments.crash import crash_point
from fourws_pay.payments.models import (
    IN_FLIGHT_OPERATION_STATES,
    OPERATION_TRANSITIONS,
    RESERVATION_TRANSITIONS,
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
from fourws_pay.payments.rules import (
    UNIFORM_REASONS,
    PaymentRequest,
    evaluate,
    forfeited_amount,
    refuse,
)
from fourws_pay.payments.throttle import LookupThrottle
from fourws_pay.settings import Settings

if TYPE_CHECKING:
    from fourws_pay.ledger.base import LedgerStore, LedgerTransaction

T = TypeVar("T")
log = get_logger()

# Operations that may still be applied by 4WS: their hold counts, and their card is busy
# for any other balance change (invariants 2, 6, 15).
HOLDING_OPERATION_STATES = IN_FLIGHT_OPERATION_STATES | {OperationState.MANUAL_REVIEW}
# While one of these is on a card, no other capture or refund of it may be posted: the
# balance must stay evidence of that operation's outcome (invariant 15).
CARD_BUSY_STATES = HOLDING_OPERATION_STATES
# How many times ``reserve`` reads a card whose captures keep settling under it.
RESERVE_READS = 3
MAX_RESERVATION_TTL = 366 * 86_400.0
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


@dataclass(frozen=True)
class ReadCard:
    """Effect: Get Giftcard. ``cached`` allows the short ``check`` cache."""

    barcode: str
    cached: bool = False


@dataclass(frozen=True)
class PostUpdate:
    """Effect: updateGiftcard (the balance-changing POST)."""

    update: GiftCardUpdate


Effect = ReadCard | PostUpdate
PaymentFlow = Generator[Effect, Any, T]


@dataclass(frozen=True)
class CardRead:
    """A card as read from 4WS, with the instant the read started (for *held*).

    In the ``check`` cache it also keeps ``held`` as computed right after the read, so a
    cache hit costs no ledger query. Any ledger change this provider makes to the card
    evicts the entry; changes by other processes show up within the cache TTL, which is
    acceptable because ``check`` promises nothing: ``reserve`` decides again, fresh and
    under the card's lock.
    """

    card: GiftCard | None
    read_at: datetime
    held: Decimal | None = None


class CardCache:
    """The short TTL cache behind ``check`` (disabled when ``check_cache_ttl`` is 0).

    A plain dict with expiry instants rather than ``cachetools.TTLCache``: this is the
    hot path of ``check`` (goal: a hit in under 20 µs) and expire-on-access bookkeeping
    cost more than the rest of a hit. Size is bounded by dropping expired entries, then
    everything, when ``maxsize`` is reached.
    """

    def __init__(self, ttl: float, clock: Clock, maxsize: int = 10_000) -> None:
        self._ttl = ttl
        self._clock = clock
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._entries: dict[str, tuple[float, CardRead]] = {}

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    def get(self, barcode: str) -> CardRead | None:
        entry = self._entries.get(barcode)  # a dict read is atomic under the GIL
        if entry is None or entry[0] <= self._clock.monotonic():
            return None
        return entry[1]

    def version(self, barcode: str) -> int:
        """Bumped by every eviction; ``put(..., if_version=)`` refuses a stale view."""
        with self._lock:
            return self._versions.get(barcode, 0)

    def put(self, barcode: str, read: CardRead, *, if_version: int | None = None) -> None:
        if self._ttl <= 0:
            return
        now = self._clock.monotonic()
        with self._lock:
            if if_version is not None and self._versions.get(barcode, 0) != if_version:
                return
            if len(self._entries) >= self._maxsize:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= self._maxsize:
                    self._entries.clear()
            self._entries[barcode] = (now + self._ttl, read)

    def evict(self, barcode: str) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._entries.pop(barcode, None)
            if len(self._versions) > 100_000:
                self._versions.clear()  # bounded; a cleared version only skips one put
            self._versions[barcode] = self._versions.get(barcode, 0) + 1


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


def parse_callback_path(path: str) -> tuple[str, str]:
    """``…/<operation id>/<token>`` -> (operation id, token), or ``CallbackRejected``."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if len(parts) < 2 or not parts[-2].startswith("op_"):
        raise CallbackRejected("callback path does not name an operation", status_code=404)
    return parts[-2], parts[-1]


def _require_barcode(barcode: object) -> str:
    if not isinstance(barcode, str) or not barcode.strip():
        raise InvalidInputError("barcode must be a non-empty string")
    text = barcode.strip()
    if len(text) > 64 or not text.isprintable() or "/" in text:
        raise InvalidInputError("barcode is not a valid gift card code")
    return text


def _total(items: Iterable[Reservation | Operation]) -> Decimal:
    return sum((item.amount for item in items), Decimal(0))


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


def _require_currency(currency: object) -> str:
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise InvalidInputError("currency must be a 3-letter ISO 4217 code")
    return currency.upper()


def _requested_amount(amount: object) -> Decimal:
    """Validate before any 4WS call; digits are checked against the card later."""
    value = to_decimal(amount)
    if value <= 0:
        raise InvalidAmountError(f"amount must be greater than zero, got {value}")
    return value


class PaymentsCore:
    """Rules + ledger + the 4WS effects they need. Drivers execute the effects."""

    def __init__(
        self,
        settings: Settings,
        store: LedgerStore,
        clock: Clock,
        plugin_manager: pluggy.PluginManager,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.pm = plugin_manager
        self.cards = CardCache(settings.check_cache_ttl, clock)
        self.throttle = LookupThrottle(
            window=settings.throttle_window, limit=settings.throttle_limit, clock=clock
        )
        # A crashed send is recognised after the longest a live send can take.
        # A crashed worker is recognised only after the longest a live one can take, so
        # that reconcile never turns a live request into "unknown" or "failed" (inv. 6):
        # ``sending`` covers the POST with the client's own retries of unsent attempts;
        # ``prepared`` covers the card read between the claim and ``sending``.
        margin = 5.0
        self.send_grace = timedelta(seconds=worst_case_seconds(settings, idempotent=False) + margin)
        self.prepared_grace = timedelta(
            seconds=worst_case_seconds(settings, idempotent=True) + margin
        )

    # ------------------------------------------------------------------ plumbing

    def emit(
        self,
        kind: EventKind,
        *,
        reservation: Reservation | None = None,
        operation: Operation | None = None,
        message: str = "",
        **details: Any,
    ) -> None:
        """Tell hosts (after the commit); a failing listener never breaks a payment.

        Events carry masked barcodes only (invariant 12): a listener that needs the card
        asks the provider for the reservation by id.
        """
        event = PaymentEvent(
            kind=kind,
            at=self.clock.now(),
            reservation=replace(reservation, barcode=reservation.masked_barcode)
            if reservation is not None
            else None,
            operation=replace(operation, barcode=operation.masked_barcode)
            if operation is not None
            else None,
            message=message,
            details=details,
        )
        subject = reservation or operation
        barcode = subject.barcode if subject is not None else None
        log.info(
            f"fourws_pay.payments.{kind.value}",
            barcode=mask_barcode(barcode) if barcode else None,
            reservation_id=reservation.id if reservation else None,
            operation_id=operation.id if operation else None,
            state=operation.state.value if operation else None,
            message=message,
        )
        try:
            self.pm.hook.fourws_pay_payment_event(event=event)
        except Exception as exc:
            log.error(
                "fourws_pay.payments.event_hook_failed", kind=kind.value, error=type(exc).__name__
            )

    @contextmanager
    def writing(self, barcode: str) -> Iterator[LedgerTransaction]:
        """The card's critical section for a write; the check cache forgets the card after."""
        try:
            with self.store.card_transaction(barcode) as tx:
                yield tx
        finally:
            self.cards.evict(barcode)

    def cart(self, order_ref: str) -> CartSnapshot | None:
        result: CartSnapshot | None = self.pm.hook.fourws_pay_cart_snapshot(order_ref=order_ref)
        return result

    def callback_base_url(self) -> str:
        url: str | None = self.pm.hook.fourws_pay_callback_base_url()
        return (url or self.settings.callback_base_url).rstrip("/")

    def read(self, barcode: str, *, cached: bool) -> PaymentFlow[CardRead]:
        """Read a card; ``success: false`` from 4WS means "no such card" here.

        Drivers answer ``ReadCard`` with a ``CardRead`` whose ``read_at`` is the instant
        before the request left (a settlement landing during the request counts as possibly
        not reflected in the balance).
        """
        read_at = self.clock.now()
        try:
            result: CardRead = yield ReadCard(barcode, cached=cached)
        except APIFailure:
            return CardRead(None, read_at)
        return result

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

    def _reservation(self, reservation_id: str) -> Reservation:
        if not isinstance(reservation_id, str):
            raise InvalidInputError("reservation id must be a string")
        reservation = self.store.get_reservation(reservation_id)
        if reservation is None:
            raise NotFoundInLedgerError(f"no reservation {reservation_id!r}")
        return reservation

    def _operation(self, operation_id: str) -> Operation:
        if not isinstance(operation_id, str):
            raise InvalidInputError("operation id must be a string")
        operation = self.store.get_operation(operation_id)
        if operation is None:
            raise NotFoundInLedgerError(f"no operation {operation_id!r}")
        return operation

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
        currency = _require_currency(currency)
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
                    self._late_captures(tx, barcode, read.read_at)
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
        if not isinstance(order_ref, str) or not order_ref.strip() or len(order_ref) > 200:
            raise InvalidInputError("order_ref must be a non-empty string (max 200 chars)")
        if amount is None or currency is None:
            snapshot = self.cart(order_ref)
            if snapshot is None:
                raise InvalidInputError(
                    "amount and currency are required (no plugin described this order)"
                )
            amount = snapshot.total if amount is None else amount
            currency = snapshot.currency if currency is None else currency
        requested = _requested_amount(amount)
        currency = _require_currency(currency)
        lifetime = _require_ttl(ttl, default=self.settings.reservation_ttl)
        self.throttle.check(client_key)

        reflected: frozenset[str] = frozenset()
        for _ in range(RESERVE_READS):
            read = yield from self.read(barcode, cached=False)
            reservation: Reservation | None = None
            late: list[Operation] = []
            with self.writing(barcode) as tx:
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
                    reservation = Reservation(
                        id=f"res_{uuid.uuid4().hex}",
                        barcode=barcode,
                        amount=decision.usable_amount,
                        currency=currency,
                        decimals=decision.decimals,
                        entity_code=read.card.entity_code or self.settings.entity_code,
                        order_ref=order_ref,
                        state=ReservationState.ACTIVE,
                        created_at=now,
                        expires_at=expires_at,
                        forfeited=forfeited_amount(decision),
                        updated_at=now,
                    )
                    tx.insert_reservation(reservation)
                    crash_point("reserve.before_commit")
            if reservation is None:
                raise self._refused(decision, client_key)
            self.emit(EventKind.RESERVED, reservation=reservation)
            return reservation
        raise CardBusyError(
            f"payments on this card settled during each of {RESERVE_READS} reads; retry",
            retry_after=1.0,
        )

    # -------------------------------------------------------------------- capture

    def capture(
        self, reservation_id: str, amount: object | None, keep_remainder: bool = False
    ) -> PaymentFlow[Operation]:
        """Post the consumption of a hold (invariants 3, 4, 10, 15, 16).

        A partial ``amount`` normally frees the rest of the hold once the capture settles.
        With ``keep_remainder`` the hold is split in the claim's transaction: this
        reservation shrinks to ``amount`` (and is what gets captured), and the rest stays
        held as a new active reservation with the same ``order_ref`` and expiry (find it
        with ``list_reservations(order_ref=…)``), to be captured or released later. The sum
        held never changes, so the split needs no new check of the card.

        ``reconcile`` may later judge an ambiguous POST by comparing the card's balance with
        ``balance_before``, so ``balance_before`` must show every balance change of ours
        made before the POST and none made after. Hence three steps:

        1. *claim*, under the card lock: the hold is active and unexpired, and no operation
           of the card may still be applied (in flight, ``unknown`` or ``manual_review``:
           else ``CardBusyError``); the operation is written ``prepared``. From this
           commit on the card is busy: no other capture or refund of ours moves its balance
           until this one is resolved.
        2. *read* the card. Every operation of ours settled before the claim was applied by
           4WS before we learnt it (its callback, or a balance that had already moved), so
           this read, which starts after the claim committed, shows all of them.
        3. *confirm*, under the card lock: re-check the rules on this read (invariant 10)
           against the other active holds only. No settlement of ours can land between the
           claim and the read, so none is counted twice and a hold granted within the
           balance is refused only if something truly took the money (invariant 16).
           ``balance_before`` is stored from this read and the operation marked
           ``sending`` (invariant 4); then the POST.

        A second worker acting between any two steps either finds the card busy (capture,
        refund), adds a hold that was decided with ours counted (reserve), frees money
        (release, expiry of another hold: ours is pinned by its operation and never
        expires), or settles an operation that was already terminal before step 1.
        """
        reservation = self._reservation(reservation_id)
        existing = self._existing_capture(reservation)
        if existing is not None:
            return existing
        if reservation.state is not ReservationState.ACTIVE:
            raise InvalidStateError(f"reservation is {reservation.state.value}, not active")
        if amount is None:
            to_capture = reservation.amount
        else:
            to_capture = positive_amount(amount, reservation.decimals)
            if to_capture > reservation.amount:
                raise InvalidAmountError("cannot capture more than was reserved")
            if reservation.forfeited > 0 and to_capture != reservation.amount:
                raise InvalidAmountError("a one-go card is captured for its whole reservation")

        token = secrets.token_urlsafe(32)
        with self.writing(reservation.barcode) as tx:
            now = self.clock.now()
            current = tx.get_reservation(reservation.id)
            assert current is not None
            reservation = current
            same = [
                op
                for op in tx.operations_for_reservation(reservation.id)
                if op.state is not OperationState.FAILED
            ]
            if same:
                return same[-1]  # a concurrent capture won; at most one POST per hold
            self._require_capturable(tx, reservation, now)
            remainder = None
            if keep_remainder and to_capture < reservation.amount:
                reservation, remainder = self._split(tx, reservation, to_capture, now)
            claim = self._new_operation(OperationKind.CAPTURE, reservation, to_capture, now, token)
            tx.insert_operation(claim)
        if remainder is not None:
            self.emit(EventKind.RESERVED, reservation=remainder, split_from=reservation.id)
        crash_point("capture.after_prepare")

        def recheck(tx: LedgerTransaction, card: GiftCard | None, now: datetime) -> Decision:
            held_others = self.held(tx, reservation.barcode, now, exclude=reservation.id)
            return self.recheck(card, reservation, held_others, now)

        return (yield from self._confirm_and_send(claim, reservation, token, recheck))

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

    def _existing_capture(self, reservation: Reservation) -> Operation | None:
        """Capturing twice returns the first capture (idempotent for retried requests)."""
        with self.store.snapshot() as tx:
            ops = [
                op
                for op in tx.operations_for_reservation(reservation.id)
                if op.state is not OperationState.FAILED
            ]
        return ops[-1] if ops else None

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

    def _new_operation(
        self,
        kind: OperationKind,
        reservation: Reservation,
        amount: Decimal,
        now: datetime,
        token: str,
        parent: Operation | None = None,
    ) -> Operation:
        """A claim: an operation written ``prepared``, before the card is read for it."""
        return Operation(
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

    def _confirm_and_send(
        self,
        claim: Operation,
        reservation: Reservation,
        token: str,
        decide: Callable[[LedgerTransaction, GiftCard | None, datetime], Decision | None],
    ) -> PaymentFlow[Operation]:
        """Steps 2 and 3 of ``capture`` (refunds take the same path): read the claimed
        card, decide under its lock (``decide`` returns a refusing ``Decision`` to stop),
        record the evidence, mark ``sending``, POST."""
        capture = claim.kind is OperationKind.CAPTURE
        try:
            read = yield from self._evidence_read(claim)
        except FourWSError as exc:
            abandoned = self._transition(
                claim.id,
                OperationState.PREPARED,
                state=OperationState.FAILED,
                message=f"never sent: the card read failed ({type(exc).__name__})",
            )
            if abandoned is not None:
                self._emit_settlement(abandoned)
            raise
        with self.writing(claim.barcode) as tx:
            now = self.clock.now()
            decision = decide(tx, read.card, now)
            if decision is None or decision.ok:
                assert read.card is not None
                confirmed = self._mark_sending(tx, claim, read.card, now)
            else:
                confirmed = replace(
                    claim,
                    state=OperationState.FAILED,
                    updated_at=now,
                    message=f"never sent: re-check refused: {decision.message}"[:500],
                )
                if not tx.update_operation(confirmed, OperationState.PREPARED):
                    raise InvalidStateError("operation changed before it was sent")
        if decision is not None and not decision.ok:
            self.emit(
                EventKind.CAPTURE_FAILED if capture else EventKind.REFUND_FAILED,
                reservation=reservation,
                operation=confirmed,
                message=f"re-check before sending refused: {decision.message}",
            )
            raise PaymentRefused(
                decision.reason or RefusalReason.INSUFFICIENT_BALANCE,
                f"{claim.kind.value} refused: {decision.message}",
                public_message=decision.public_message,
            )
        crash_point("capture.after_sending" if capture else "refund.after_sending")
        return (yield from self._post(confirmed, reservation, token))

    def _evidence_read(self, claim: Operation) -> PaymentFlow[CardRead]:
        """The balance ``reconcile`` will judge the operation by: read after the claim."""
        return (yield from self.read(claim.barcode, cached=False))

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
                sending.id, OperationState.SENDING, state=OperationState.UNKNOWN, message=str(exc)
            )
            return unknown or self._operation(sending.id)
        except FourWSError as exc:
            failed = self._transition(
                sending.id,
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
            sending.id,
            OperationState.SENDING,
            state=OperationState.ENQUEUED,
            queue_id=queued.queue_id,
        )
        if enqueued is None:  # the callback came first and settled it: keep its verdict
            current = self._operation(sending.id)
            if current.queue_id is None:
                with self.store.transaction() as tx:
                    tx.update_operation(replace(current, queue_id=queued.queue_id), current.state)
            return self._operation(sending.id)
        if capture:
            self.emit(EventKind.CAPTURED, reservation=reservation, operation=enqueued)
        return enqueued

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
            ops = [
                op
                for op in tx.operations_for_reservation(current.id)
                if op.state is not OperationState.FAILED
            ]
            if ops:
                raise InvalidStateError("a capture of this reservation is in progress")
            target = (
                ReservationState.EXPIRED if current.expires_at <= now else ReservationState.RELEASED
            )
            updated = current.with_state(target, now)
            if not tx.update_reservation(updated, ReservationState.ACTIVE):
                raise InvalidStateError("reservation changed concurrently")
        self.emit(
            EventKind.RELEASED if target is ReservationState.RELEASED else EventKind.EXPIRED,
            reservation=updated,
        )
        return updated

    # --------------------------------------------------------------------- refund

    def refund(self, operation_id: str, amount: object | None) -> PaymentFlow[Operation]:
        """Post money back to the card: claim, read, confirm, POST, as ``capture`` does,
        so that a refund's ``balance_before`` is sound evidence too (invariant 15)."""
        parent = self._operation(operation_id)
        if parent.kind is not OperationKind.CAPTURE or parent.state is not OperationState.SUCCEEDED:
            raise InvalidStateError("only a settled capture can be refunded")
        reservation = self._reservation(parent.reservation_id)
        requested = None if amount is None else positive_amount(amount, reservation.decimals)

        token = secrets.token_urlsafe(32)
        with self.writing(parent.barcode) as tx:
            now = self.clock.now()
            refunds = [
                op
                for op in tx.children_of(parent.id, OperationKind.REFUND)
                if op.state is not OperationState.FAILED
            ]
            refundable = parent.amount - _total(refunds)
            to_refund = refundable if requested is None else requested
            if to_refund <= 0:
                raise InvalidAmountError("nothing left to refund on this capture")
            if to_refund > refundable:
                raise InvalidAmountError(
                    f"cannot refund {to_refund}: only {refundable} of the capture is refundable"
                )
            self._require_card_idle(tx, parent.barcode)
            claim = self._new_operation(
                OperationKind.REFUND, reservation, to_refund, now, token, parent=parent
            )
            tx.insert_operation(claim)
        crash_point("refund.after_prepare")

        def card_exists(
            tx: LedgerTransaction, card: GiftCard | None, now: datetime
        ) -> Decision | None:
            if card is not None:
                return None
            request = self._request(to_refund, reservation.currency, now, allow_partial=False)
            return refuse(RefusalReason.NOT_FOUND, "card not found at 4WS", request, parent.barcode)

        return (yield from self._confirm_and_send(claim, reservation, token, card_exists))

    # ------------------------------------------------------------------- callbacks

    def handle_callback(self, path: str, body: bytes) -> CallbackResult:
        """Apply a 4WS callback; forged/unknown/malformed ones raise ``CallbackRejected``."""
        if not isinstance(path, str) or not isinstance(body, bytes | bytearray):
            raise CallbackRejected("callback needs a path and a bytes body")
        operation_id, token = parse_callback_path(path)
        operation = self.store.get_operation(operation_id)
        if operation is None:
            raise CallbackRejected("unknown operation", status_code=404)
        if not hmac.compare_digest(token_hash(token), operation.callback_token_hash):
            raise CallbackRejected("callback token does not match", status_code=403)
        result = self._parse_callback(bytes(body), operation_id)
        with self.writing(operation.barcode) as tx:
            now = self.clock.now()  # inside the lock: stamps follow commit order
            current = tx.get_operation(operation_id)
            assert current is not None
            verdict = OperationState.SUCCEEDED if result.success else OperationState.FAILED
            if current.state is OperationState.PREPARED:
                raise CallbackRejected("operation was never sent", status_code=409)
            if not may_move(current.state, verdict):
                # Terminal already: the same verdict is a duplicate, another is a conflict.
                duplicate = current.state is verdict
                conflict = None if duplicate else current
                applied = None
            else:
                conflict = None
                duplicate = False
                applied = replace(
                    current,
                    state=verdict,
                    updated_at=now,
                    settled_at=now,
                    callback_id=result.id or result.queue_id,
                    message=None if result.success else (result.message or "failed")[:500],
                )
                if not tx.update_operation(applied, current.state):
                    raise CallbackRejected("operation changed concurrently; retry", status_code=409)
                reservation = tx.get_reservation(current.reservation_id)
                if (
                    result.success
                    and current.kind is OperationKind.CAPTURE
                    and reservation is not None
                    and may_move_reservation(reservation.state, ReservationState.CAPTURED)
                ):
                    captured = replace(
                        reservation,
                        state=ReservationState.CAPTURED,
                        operation_id=current.id,
                        updated_at=now,
                    )
                    tx.update_reservation(captured, ReservationState.ACTIVE)
                crash_point("callback.before_commit")
        if applied is not None:
            self._emit_settlement(applied)
            return CallbackResult(200, applied, True, f"operation {applied.state.value}")
        if conflict is not None:
            self.emit(
                EventKind.ALERT,
                operation=conflict,
                message=f"callback says {verdict.value} but operation is "
                f"{conflict.state.value}; left unchanged",
            )
            return CallbackResult(200, conflict, False, "conflicting callback ignored")
        return CallbackResult(200, current, False, "duplicate callback ignored")

    @staticmethod
    def _parse_callback(body: bytes, operation_id: str) -> UpdateGiftCardResult:
        try:
            data = wirejson.loads(body)
        except (ValueError, RecursionError):
            raise CallbackRejected("callback body is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
            raise CallbackRejected("callback body has no boolean 'success'")
        payload = data.get("payload")
        if isinstance(payload, dict) and payload.get("operation_id") not in (None, operation_id):
            raise CallbackRejected("callback payload names another operation")
        try:
            return UpdateGiftCardResult.model_validate(data)
        except ValueError:
            raise CallbackRejected("callback body does not match the documented shape") from None

    def _emit_settlement(self, operation: Operation) -> None:
        reservation = self.store.get_reservation(operation.reservation_id)
        capture = operation.kind is OperationKind.CAPTURE
        if operation.state is OperationState.SUCCEEDED:
            kind = EventKind.SETTLED if capture else EventKind.REFUNDED
        elif operation.state is OperationState.FAILED:
            kind = EventKind.CAPTURE_FAILED if capture else EventKind.REFUND_FAILED
        else:
            kind = EventKind.MANUAL_REVIEW
        self.emit(
            kind, reservation=reservation, operation=operation, message=operation.message or ""
        )

    # ------------------------------------------------------------ sweep, reconcile

    def sweep(self) -> int:
        """Mark holds past their expiry as expired (idempotent); returns how many."""
        now = self.clock.now()
        count = 0
        for candidate in self.store.list_reservations([ReservationState.ACTIVE]):
            if candidate.expires_at > now:
                continue
            with self.writing(candidate.barcode) as tx:
                current = tx.get_reservation(candidate.id)
                if current is None or current.state is not ReservationState.ACTIVE:
                    continue
                if any(
                    op.state in HOLDING_OPERATION_STATES
                    for op in tx.operations_for_reservation(current.id)
                ):
                    continue  # a hold with an operation in flight never expires
                expired = current.with_state(ReservationState.EXPIRED, now)
                if not tx.update_reservation(expired, ReservationState.ACTIVE):
                    continue
            count += 1
            self.emit(EventKind.EXPIRED, reservation=expired)
        return count

    def stale_operations(self) -> list[Operation]:
        """Move crashed sends and overdue callbacks to ``unknown``; list what needs reading."""
        now = self.clock.now()
        for op in self.store.list_operations(
            [OperationState.PREPARED, OperationState.SENDING, OperationState.ENQUEUED]
        ):
            if op.state is OperationState.PREPARED and op.updated_at + self.prepared_grace <= now:
                # Never marked sending, so never posted: safe to call it failed.
                failed = self._transition(
                    op.id,
                    OperationState.PREPARED,
                    state=OperationState.FAILED,
                    message="never sent (process stopped before send)",
                )
                if failed is not None:
                    self._emit_settlement(failed)
            elif op.state is OperationState.SENDING and op.updated_at + self.send_grace <= now:
                self._transition(
                    op.id,
                    OperationState.SENDING,
                    state=OperationState.UNKNOWN,
                    message="process stopped while sending",
                )
            elif op.state is OperationState.ENQUEUED and op.deadline <= now:
                self._transition(
                    op.id,
                    OperationState.ENQUEUED,
                    state=OperationState.UNKNOWN,
                    message="no callback before the deadline",
                )
        return self.store.list_operations([OperationState.UNKNOWN])

    def reconcile(self) -> PaymentFlow[ReconcileReport]:
        report = ReconcileReport()
        for op in self.stale_operations():
            read = yield from self.read(op.barcode, cached=False)
            resolved = self._judge(op, read.card)
            bucket = {
                OperationState.SUCCEEDED: report.succeeded,
                OperationState.FAILED: report.failed,
                OperationState.MANUAL_REVIEW: report.manual_review,
            }.get(resolved.state, report.still_pending)
            bucket.append(resolved)
        return replace(report, expired_reservations=self.sweep())

    def _judge(self, op: Operation, card: GiftCard | None) -> Operation:
        """Decide an ``unknown`` operation from the balance (see the module docstring).

        Only a balance that moved by exactly the amount is evidence (of success). An
        unchanged balance proves nothing, since 4WS's queue may still apply the request, so
        after the window it goes to ``manual_review``, where its hold stays counted until an
        authenticated callback or an operator (``resolve``) settles it.
        """
        now = self.clock.now()
        old_enough = op.created_at + timedelta(seconds=self.settings.reconcile_window) <= now
        if (
            card is not None
            and op.balance_before is not None
            and card.amount == op.balance_before + op.signed_amount
        ):
            return (
                self._settle(
                    op,
                    OperationState.UNKNOWN,
                    OperationState.SUCCEEDED,
                    "balance moved by exactly the amount",
                )
                or op
            )
        if not old_enough:
            return op
        unchanged = (
            card is not None and op.balance_before is not None and card.amount == op.balance_before
        )
        why = (
            "balance unchanged after the window; 4WS may still apply it"
            if unchanged
            else "balance inconclusive after the window"
        )
        return self._settle(op, OperationState.UNKNOWN, OperationState.MANUAL_REVIEW, why) or op

    def resolve(self, operation_id: str, *, applied: bool, note: str) -> Operation:
        """An operator's verdict on an operation in ``manual_review`` (e.g. after asking 4WS).

        ``applied=True`` settles it as succeeded (a capture's reservation becomes captured),
        ``False`` as failed (its hold stops counting). Any other state is refused.
        """
        if not isinstance(note, str) or not note.strip():
            raise InvalidInputError("say why in a note (it is kept on the operation)")
        op = self._operation(operation_id)
        target = OperationState.SUCCEEDED if applied else OperationState.FAILED
        resolved = self._settle(
            op, OperationState.MANUAL_REVIEW, target, f"resolved by operator: {note.strip()[:400]}"
        )
        if resolved is None:
            raise InvalidStateError(f"operation is {op.state.value}, not in manual review")
        return resolved

    def _settle(
        self, op: Operation, expected: OperationState, verdict: OperationState, why: str
    ) -> Operation | None:
        """CAS ``expected -> verdict``; a successful capture captures its reservation."""
        now = self.clock.now()
        with self.writing(op.barcode) as tx:
            current = tx.get_operation(op.id)
            if current is None or current.state is not expected:
                return None
            if not may_move(current.state, verdict):
                return None
            resolved = replace(
                current,
                state=verdict,
                updated_at=now,
                message=why,
                settled_at=now if verdict is OperationState.SUCCEEDED else None,
            )
            if not tx.update_operation(resolved, expected):
                return None
            reservation = tx.get_reservation(current.reservation_id)
            if (
                verdict is OperationState.SUCCEEDED
                and current.kind is OperationKind.CAPTURE
                and reservation is not None
                and may_move_reservation(reservation.state, ReservationState.CAPTURED)
            ):
                tx.update_reservation(
                    replace(
                        reservation,
                        state=ReservationState.CAPTURED,
                        operation_id=current.id,
                        updated_at=now,
                    ),
                    ReservationState.ACTIVE,
                )
        self._emit_settlement(resolved)
        return resolved

    # ----------------------------------------------------------------- listings

    def operations(self, states: Iterable[OperationState] | None = None) -> list[Operation]:
        return self.store.list_operations(states)
