"""One order paid with several gift cards: ``reserve_order``, ``capture_order``,
``release_order``.

A customer types two or three cards for one order. ``reserve_order`` decides which card
pays how much and holds each share with an ordinary hold (``reserve``'s read-then-decide
step under each card's lock, so invariants 2, 7, 10 and 16 hold per card as for one card):

- by default the card whose validity ends first pays first (money about to expire is
  spent before money that keeps), then the card with the smallest available balance (a
  small remainder is not left stranded on a card), then the order the cards were given
  in. A card that must be spent in one go (``flgPartiallyUsage = N``) pays its whole
  balance when that fits in what is left, else nothing (or, with
  ``Settings.forfeit_partial_remainder``, what is left, forfeiting the rest of it);
- or an explicit ``split`` (``{barcode: amount}``) says it; each share is then held as
  asked or refused.

Shares are rounded down to each card's ``decimalNumber``; the order's amount may not have
more digits than the most precise card. Every card is read and judged before anything is
written: a card refused by the rules (expired, empty, another currency...) is an error
with nothing held.

**All or nothing** (invariant 20): the holds are placed one card after the other; if one
fails (the card refused at its lock, raced by another worker, 4WS or the ledger failing),
the holds this call placed are released before ``OrderAllocationError`` is raised, naming
the card (masked) and the reason. A race is retryable (``reason`` None), never a refusal.

**Idempotent per (order_ref, allocation_key)**: each hold's id derives from the
allocation, a *generation* number and the card, and is looked up under the card's lock
before a hold is placed, so a retry of the call (or a second worker running it at once)
finds the holds instead of placing new ones: one hold per card and allocation. What a call
finds decides what it does:

- the newest generation's holds all active: *carry on* — keep them, hold what is missing
  (after a crash between two holds), return the same allocation;
- one of them captured (``capture_order`` ran): return the allocation as it is, place
  nothing;
- one of them released or expired (a failed attempt was rolled back, or the customer
  took too long): *start over* with the next generation, after releasing the generation's
  holds that are still active (a rollback a crash interrupted).

A crash between holds therefore leaves holds that count only until they expire (the
reservation TTL) or until the next call with the key finishes or undoes them. A hold of the
allocation found on a card that the call does not name, or a share that differs from an
explicit split, means the key was used for another payment: ``InvalidInputError``.

``capture_order`` captures every active hold of the order (each its own capture,
``queued`` behind a busy card as any capture); ``release_order`` lets every active hold go.
Both look the holds up again on each run, so they are safe to re-run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal

from fourws_pay.errors import (
    CurrencyMismatchError,
    FourWSError,
    InvalidAmountError,
    InvalidInputError,
    InvalidStateError,
    OrderAllocationError,
    OrderCaptureError,
    PaymentRefused,
)
from fourws_pay.limits import ORDER_REF_MAX, require_text
from fourws_pay.logs import get_logger, mask_barcode
from fourws_pay.money import positive_amount, quantize, quantum, require_currency
from fourws_pay.payments.cache import CardRead
from fourws_pay.payments.checkout import (
    Checkout,
    _requested_amount,
    _require_barcode,
    _require_ttl,
)
from fourws_pay.payments.crash import crash_point
from fourws_pay.payments.effects import PaymentFlow
from fourws_pay.payments.models import (
    Operation,
    OrderAllocation,
    RefusalReason,
    Reservation,
    ReservationState,
)
from fourws_pay.payments.rules import evaluate, public_message
from fourws_pay.payments.transitions import _total, live_captures

log = get_logger()

# How many cards one order may be paid with: a checkout form, not a bulk tool.
MAX_ORDER_CARDS = 10
_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


def order_allocation_id(order_ref: str, allocation_key: str) -> str:
    digest = hashlib.sha256(f"{order_ref}\x1f{allocation_key}".encode()).hexdigest()[:24]
    return f"alloc_{digest}"


def _hold_prefix(allocation_id: str) -> str:
    return f"res_{allocation_id.removeprefix('alloc_')}g"


def _hold_id(allocation_id: str, generation: int, barcode: str) -> str:
    """The id of the allocation's hold on ``barcode`` in ``generation`` (48 characters)."""
    card = hashlib.sha256(f"{allocation_id}\x1f{barcode}".encode()).hexdigest()[:16]
    return f"{_hold_prefix(allocation_id)}{generation:03d}{card}"


def _generation(allocation_id: str, reservation_id: str) -> int | None:
    prefix = _hold_prefix(allocation_id)
    if not reservation_id.startswith(prefix):
        return None
    digits = reservation_id[len(prefix) : len(prefix) + 3]
    return int(digits) if digits.isdigit() else None


def _require_cards(cards: object) -> list[str]:
    if isinstance(cards, str) or not isinstance(cards, Sequence):
        raise InvalidInputError("cards must be a list of barcodes")
    barcodes = [_require_barcode(card) for card in cards]
    if not barcodes or len(barcodes) > MAX_ORDER_CARDS:
        raise InvalidInputError(f"an order is paid with 1 to {MAX_ORDER_CARDS} cards")
    if len(set(barcodes)) != len(barcodes):
        raise InvalidInputError("a card is named twice")
    return barcodes


def _require_split(split: object, barcodes: list[str]) -> dict[str, Decimal] | None:
    """The explicit shares, checked before any I/O (digits are checked per card later)."""
    if split is None:
        return None
    if not isinstance(split, Mapping) or not split:
        raise InvalidInputError("split must map barcodes to amounts")
    shares: dict[str, Decimal] = {}
    for card, amount in split.items():
        barcode = _require_barcode(card)
        if barcode not in barcodes:
            raise InvalidInputError(f"split names {mask_barcode(barcode)}, not one of the cards")
        shares[barcode] = _requested_amount(amount)
    return {b: shares[b] for b in barcodes if b in shares}


@dataclass(frozen=True)
class _Share:
    """One card's part of the plan: the read it was judged on and what it holds."""

    barcode: str
    read: CardRead
    amount: Decimal


class OrderAllocations(Checkout):
    """``reserve_order`` / ``capture_order`` / ``release_order`` (see the module docstring)."""

    def reserve_order(
        self,
        order_ref: str,
        cards: object,
        amount: object,
        currency: str,
        allocation_key: str,
        split: object,
        client_key: str | None,
        allow_partial: bool,
        ttl: object | None,
    ) -> PaymentFlow[OrderAllocation]:
        order_ref = require_text("order_ref", order_ref, ORDER_REF_MAX)
        allocation_key = require_text("allocation_key", allocation_key, ORDER_REF_MAX)
        barcodes = _require_cards(cards)
        requested = _requested_amount(amount)
        currency = require_currency(currency)
        shares = _require_split(split, barcodes)
        if shares is not None:
            total = sum(shares.values(), Decimal(0))
            if total > requested or (total < requested and not allow_partial):
                raise InvalidAmountError(
                    f"the split adds up to {total}, the order is {requested} "
                    "(less only with allow_partial)"
                )
        lifetime = _require_ttl(ttl, default=self.settings.reservation_ttl)
        self.throttle.check(client_key)
        allocation_id = order_allocation_id(order_ref, allocation_key)

        def result(holds: list[Reservation]) -> OrderAllocation:
            position = {b: i for i, b in enumerate(barcodes)}
            in_order = sorted(holds, key=lambda h: position[h.barcode])
            return OrderAllocation(
                allocation_id, order_ref, allocation_key, requested, currency, tuple(in_order)
            )

        generation, kept, finished = self._found_holds(order_ref, allocation_id, barcodes)
        if _total_applied(kept) > requested:
            raise InvalidInputError(
                f"allocation_key {allocation_key!r} already holds more than {requested} "
                "for this order: it was used for another amount"
            )
        if finished:
            return result(kept)
        for hold in kept:
            if shares is not None and shares.get(hold.barcode) != hold.applied_amount:
                raise InvalidInputError(
                    f"allocation_key {allocation_key!r} holds {hold.applied_amount} on "
                    f"{hold.masked_barcode}: it was used for another split"
                )
        plan = yield from self._plan_shares(
            barcodes,
            requested,
            currency,
            kept,
            shares,
            client_key,
            allow_partial,
            lambda barcode: _hold_id(allocation_id, generation, barcode),
        )
        placed: list[Reservation] = []
        holds = list(kept)
        for share in plan:
            try:
                hold, new = yield from self._reserve_on_card(
                    share.barcode,
                    share.amount,
                    currency,
                    order_ref,
                    client_key,
                    False,
                    lifetime,
                    reservation_id=_hold_id(allocation_id, generation, share.barcode),
                    first_read=share.read,
                )
            except FourWSError as exc:
                raise self._rolled_back(placed, share.barcode, exc) from exc
            if new:
                placed.append(hold)
            elif hold.state is not ReservationState.ACTIVE or hold.applied_amount != share.amount:
                # Another run of this allocation, deciding on other reads, got there first.
                busy = InvalidStateError("another run of this allocation placed this hold")
                raise self._rolled_back(placed, share.barcode, busy)
            holds.append(hold)
            crash_point("reserve_order.between_holds")
        return result(holds)

    def _found_holds(
        self, order_ref: str, allocation_id: str, barcodes: list[str]
    ) -> tuple[int, list[Reservation], bool]:
        """(generation to use, holds to keep, whether the allocation is finished), from the
        allocation's holds already in the ledger (module docstring)."""
        generations: dict[int, list[Reservation]] = {}
        for hold in self.store.list_reservations(order_ref=order_ref):
            number = _generation(allocation_id, hold.id)
            if number is not None:
                generations.setdefault(number, []).append(hold)
        if not generations:
            return 0, [], False
        newest = max(generations)
        holds = generations[newest]
        for hold in holds:
            if _hold_id(allocation_id, newest, hold.barcode) != hold.id or (
                hold.barcode not in barcodes
            ):
                raise InvalidInputError(
                    f"this allocation_key holds {hold.masked_barcode}, which is not one of "
                    "the cards: it was used for another payment of the order"
                )
        now = self.clock.now()
        with self.store.snapshot() as tx:
            captured = any(
                hold.state is ReservationState.CAPTURED or live_captures(tx, hold.id)
                for hold in holds
            )
        if captured:
            return newest, [h for h in holds if h.state is not ReservationState.RELEASED], True
        if all(h.state is ReservationState.ACTIVE and h.expires_at > now for h in holds):
            return newest, holds, False
        # A failed or expired attempt: undo what a crash left of it, then start over.
        self._undo([h for h in holds if h.state is ReservationState.ACTIVE])
        return newest + 1, [], False

    def _plan_shares(
        self,
        barcodes: list[str],
        requested: Decimal,
        currency: str,
        kept: list[Reservation],
        shares: dict[str, Decimal] | None,
        client_key: str | None,
        allow_partial: bool,
        own_hold: Callable[[str], str],
    ) -> PaymentFlow[list[_Share]]:
        """Read and judge every card not yet held, then decide the shares; raises before
        anything is written when a card is refused or the cards cannot cover the order."""
        held_cards = {h.barcode for h in kept}
        missing = requested - _total_applied(kept)
        candidates = [
            b for b in barcodes if b not in held_cards and (shares is None or b in shares)
        ]
        if missing <= 0 or not candidates:
            return []
        reads: dict[str, CardRead] = {}
        available: dict[str, Decimal] = {}
        for barcode in candidates:
            read = yield from self.read(barcode, cached=False)
            asked = shares[barcode] if shares is not None else missing
            reads[barcode] = read
            available[barcode] = self._usable_for_plan(
                read, barcode, asked, currency, client_key, own_hold(barcode)
            )
        digits = max(read.card.decimal_number for read in reads.values() if read.card)
        positive_amount(requested, digits)  # more digits than any card has: InvalidAmountError
        plan: list[_Share] = []
        if shares is not None:
            for barcode in candidates:
                card = reads[barcode].card
                assert card is not None
                amount = positive_amount(shares[barcode], card.decimal_number)
                if amount > available[barcode]:
                    raise OrderAllocationError(
                        f"card {mask_barcode(barcode)} cannot pay its share of {amount}",
                        masked_barcode=mask_barcode(barcode),
                        reason=RefusalReason.INSUFFICIENT_BALANCE,
                        public_message=public_message(RefusalReason.INSUFFICIENT_BALANCE),
                    )
                plan.append(_Share(barcode, reads[barcode], amount))
            return plan
        order = {b: i for i, b in enumerate(barcodes)}

        def priority(barcode: str) -> tuple[datetime, Decimal, int]:
            card = reads[barcode].card
            assert card is not None
            return (card.expiration_date or _FAR_FUTURE, available[barcode], order[barcode])

        for barcode in sorted(candidates, key=priority):
            if missing <= 0:
                break
            card = reads[barcode].card
            assert card is not None
            unit = quantum(card.decimal_number)
            if card.flg_partially_usage:
                amount = min(available[barcode], missing).quantize(unit, rounding=ROUND_DOWN)
            elif available[barcode] <= missing:
                amount = available[barcode]
            elif self.settings.forfeit_partial_remainder:
                amount = missing.quantize(unit, rounding=ROUND_DOWN)
            else:
                continue  # spent in one go, and its balance is more than is left to pay
            if amount > 0:
                plan.append(_Share(barcode, reads[barcode], amount))
                missing -= amount
        if missing > 0 and not allow_partial:
            reason = RefusalReason.INSUFFICIENT_BALANCE
            raise OrderAllocationError(
                f"the cards together cannot pay {requested} {currency} "
                f"({requested - missing} available for this order)",
                masked_barcode=None,
                reason=reason,
                public_message=public_message(reason),
            )
        return plan

    def _usable_for_plan(
        self,
        read: CardRead,
        barcode: str,
        asked: Decimal,
        currency: str,
        client_key: str | None,
        own_hold: str,
    ) -> Decimal:
        """What the card has available now (balance less what the ledger holds on it, but
        for this allocation's own hold, which a concurrent run of it may have placed), or
        the typed refusal when the rules refuse the card whatever its share."""
        now = self.clock.now()
        with self.store.snapshot() as tx:
            held = self.held(tx, barcode, now, exclude=own_hold) + _total(
                self._late_captures(tx, barcode, read.read_at, ties_reflected=True)
            )
        if read.card is not None:  # judged on what the card could take of it
            unit = quantum(read.card.decimal_number)
            asked = max(asked.quantize(unit, rounding=ROUND_DOWN), unit)
        request = self._request(asked, currency, now, allow_partial=True)
        decision = evaluate(read.card, request, held=held, barcode=barcode)
        # A one-go card bigger than the order may still pay (all of it, or nothing); one
        # whose balance other checkouts hold simply has nothing for this order.
        still_usable = (RefusalReason.PARTIAL_USAGE_NOT_ALLOWED, RefusalReason.INSUFFICIENT_BALANCE)
        if not decision.ok and decision.reason not in still_usable:
            if decision.reason is RefusalReason.CURRENCY_MISMATCH:
                raise CurrencyMismatchError(
                    decision.reason,
                    f"card {mask_barcode(barcode)}: {decision.message}; nothing was held",
                    public_message=decision.public_message,
                )
            refused = self._refused(decision, client_key)  # counts a uniform failure
            raise OrderAllocationError(
                f"card {mask_barcode(barcode)} refused: {refused.message}; nothing was held",
                masked_barcode=mask_barcode(barcode),
                reason=refused.reason,
                public_message=refused.public_message,
                cause=refused,
            )
        assert read.card is not None
        digits = read.card.decimal_number
        if not read.card.flg_partially_usage and held > 0:
            return Decimal(0)  # a one-go card already being spent
        return max(quantize(read.card.amount, digits) - quantize(held, digits), Decimal(0))

    def _rolled_back(
        self, placed: list[Reservation], barcode: str, exc: FourWSError
    ) -> OrderAllocationError:
        """All or nothing: release this call's holds, then say which card failed and why."""
        released = self._undo(placed)
        refused = isinstance(exc, PaymentRefused)
        reason = exc.reason if isinstance(exc, PaymentRefused) else None
        log.warning(
            "fourws_pay.order_allocation.rolled_back",
            barcode=mask_barcode(barcode),
            error=type(exc).__name__,
            released=len(released),
        )
        return OrderAllocationError(
            f"card {mask_barcode(barcode)} could not be held "
            f"({reason.value if reason else type(exc).__name__}); "
            f"{len(released)} hold(s) of this order released",
            masked_barcode=mask_barcode(barcode),
            reason=reason,
            public_message=exc.public_message
            if isinstance(exc, PaymentRefused)
            else "The gift card payment could not be completed. Please try again.",
            released=released,
            cause=exc,
            retry_after=None if refused else getattr(exc, "retry_after", 1.0),
        )

    def _undo(self, holds: list[Reservation]) -> tuple[str, ...]:
        """Release ``holds`` (newest first); ids of those no longer held. Never raises: a
        hold that could not be released still expires at its instant (logged)."""
        released = []
        for hold in reversed(holds):
            try:
                self.release(hold.id)
            except FourWSError as exc:
                log.error(
                    "fourws_pay.order_allocation.release_failed",
                    reservation_id=hold.id,
                    error=type(exc).__name__,
                )
                continue
            released.append(hold.id)
        return tuple(released)

    # ------------------------------------------------------------ capture, release

    def capture_order(self, order_ref: str) -> PaymentFlow[list[Operation]]:
        """Capture every active hold of the order, each its own capture (queued behind a
        busy card); holds already captured give their capture back. Raises
        ``OrderCaptureError`` after trying all of them when some could not be captured."""
        order_ref = require_text("order_ref", order_ref, ORDER_REF_MAX)
        captures: list[Operation] = []
        failures: list[tuple[str, str, FourWSError]] = []
        for hold in self.store.list_reservations(order_ref=order_ref):
            if hold.state not in (ReservationState.ACTIVE, ReservationState.CAPTURED):
                continue
            try:
                captures.append((yield from self.capture(hold.id, None)))
            except FourWSError as exc:
                failures.append((hold.masked_barcode, hold.id, exc))
        if failures:
            cards = ", ".join(f"{card} ({type(exc).__name__})" for card, _, exc in failures)
            raise OrderCaptureError(
                f"order {order_ref!r}: {len(failures)} hold(s) not captured: {cards}",
                operations=tuple(captures),
                failures=tuple(failures),
            )
        return captures

    def release_order(self, order_ref: str) -> list[Reservation]:
        """Let every active hold of the order go that no capture is working on; returns
        the holds released by this call. Captured holds stay as they are (refund them)."""
        order_ref = require_text("order_ref", order_ref, ORDER_REF_MAX)
        active = self.store.list_reservations([ReservationState.ACTIVE], order_ref)
        released = []
        for hold in active:
            try:
                released.append(self.release(hold.id))
            except InvalidStateError:
                continue  # a capture of it is under way (or done): not ours to drop
        return released


def _total_applied(holds: list[Reservation]) -> Decimal:
    return sum((h.applied_amount for h in holds), Decimal(0))
