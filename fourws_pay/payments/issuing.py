"""Issuing: sell gift cards from an order: generate, activate, deliver, each exactly once.

4WS sells nothing itself (docs/4ws-reference.md §12): the shop asks generateGiftcards for
barcodes (the answer comes on a callback), loads each with its paid amount (a positive
updateGiftcard, also answered on a callback) and hands it to the buyer. Both calls are
ledger operations (``generate``, ``activate``) with the same write-ahead, authenticated
callbacks, ambiguity handling and ``reconcile`` as captures; what ties them to the order is
one ``IssuedCard`` per sold card, whose id is derived from (order, line, index), so asking
twice for the same card finds it instead of making another.

The work is a pump (``advance_issuance``): it looks at an order's sold cards and does the
next step for each, deciding under a lock from a fresh read, so any number of workers,
re-runs and crashes lead to the same books:

- ``requested`` cards of a line: one generate request for all of them (born ``sending``
  under the order's issuing lock, in the same transaction that marks them ``generating``,
  so a crash between the two writes is impossible and a second worker sees them taken).
  Its callback assigns the barcodes under the same lock, in the transaction that settles
  the operation. No callback by the operation's deadline, or a request that surely never
  left: the operation fails and its cards go back to ``requested`` for a new request;
  barcodes the old one may still produce arrive on a failed operation, are reported
  (``alert``) and never activated. A barcode is money only once activated, so a late
  generation costs unused barcodes, never money.
- ``generated`` cards: the activation is claimed under the new card's lock (``prepared``,
  and the card ``activating`` in the same transaction), the card read, its evidence stored
  and ``sending`` committed before the POST, exactly as a capture (invariants 4, 15). A
  card that reads *loaded* before our activation left (a balance or an original amount
  above zero; 4WS does not document what a generated card reads like, so the flag alone is
  not trusted either way, and "not found" reads as not loaded) is never loaded again: the
  claim fails and the card is marked ``failed`` with an alert, since a positive update on a
  loaded card would load it twice. An ambiguous POST leaves the activation ``unknown``;
  ``reconcile`` judges it by the balance (it moved by exactly the amount: applied), else it goes to
  ``manual_review``; it is never re-posted. A POST refused before 4WS enqueued it moves no
  money, so the card goes back to ``generated`` and the next pass tries again.
- ``active`` cards: delivered through the ``fourws_pay_deliver_giftcards`` hook, one call
  per order, at least once (``delivering`` is claimed under the order lock first; a stuck
  claim is retried after ``Settings.delivery_retry_after``).
- ``cancelling`` cards: what is unspent is taken back once no activation is in flight,
  through an ordinary hold and capture on the sold card (``order_ref`` = the sold card's
  id), so a recipient paying with the card at that moment is respected: their hold counts,
  and the reclaim queues behind their capture like any other capture.

Lock order: a card's lock, then an order's issuing lock (an activation settles under the
new card's lock and updates its sold card); never the other way round.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from fourws_pay.api.models import (
    GeneratedGiftCard,
    GiftCard,
    GiftCardPdf,
    GiftCardUpdate,
    QueuedOperation,
)
from fourws_pay.errors import (
    AmbiguousOutcomeError,
    FourWSError,
    InvalidInputError,
    InvalidStateError,
    NotFoundInLedgerError,
    PaymentRefused,
    SaleAlreadySpentError,
)
from fourws_pay.limits import (
    BARCODE_MAX,
    ITEM_CODE_MAX,
    LINE_ID_MAX,
    ORDER_REF_MAX,
    check_text,
    require_text,
)
from fourws_pay.logs import get_logger
from fourws_pay.money import positive_amount, require_currency
from fourws_pay.payments.crash import crash_point
from fourws_pay.payments.effects import PaymentFlow, PostGenerate, RequestPdf
from fourws_pay.payments.models import (
    EventKind,
    IssuedCard,
    IssuedCardState,
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)
from fourws_pay.payments.states import (
    LOADED_ISSUED_CARD_STATES,
    TERMINAL_OPERATION_STATES,
    issue_lock_key,
    may_move_issued,
)
from fourws_pay.payments.transitions import Transitions, token_hash

if TYPE_CHECKING:
    from fourws_pay.payments.ports import LedgerTransaction

log = get_logger()
_S = IssuedCardState
MAX_CARDS_PER_LINE = 100
_ON_THE_WAY = frozenset({_S.REQUESTED, _S.GENERATING, _S.GENERATED, _S.ACTIVATING})
# Hosts' own line ids: Oscar's integers, Saleor's base64 global ids ("T3JkZXJMaW5lOjE=",
# padding and "/" included); never whitespace or control characters.
_LINE_ID = re.compile(rf"^[\w.:#@+/=-]{{1,{LINE_ID_MAX}}}$")


def issued_card_id(order_ref: str, line_id: str, line_index: int) -> str:
    """The one id of (order, line, index): asking again finds the same sold card."""
    seed = f"{order_ref}\x1f{line_id}\x1f{line_index}".encode()
    return f"iss_{hashlib.sha256(seed).hexdigest()[:32]}"


def _require_order_ref(order_ref: object) -> str:
    return require_text("order_ref", order_ref, ORDER_REF_MAX)


def _require_line_id(line_id: object) -> str:
    if not isinstance(line_id, str) or not _LINE_ID.match(line_id):
        raise InvalidInputError(
            f"line_id must be 1-{LINE_ID_MAX} letters, digits or . : # @ + / = - _ "
            "(the host's order line)"
        )
    return line_id


def _with_state(
    card: IssuedCard, state: IssuedCardState, now: datetime, **changes: object
) -> IssuedCard:
    if not may_move_issued(card.state, state):
        raise InvalidStateError(f"a sold card cannot go from {card.state.value} to {state.value}")
    return replace(card, state=state, updated_at=now, **changes)  # type: ignore[arg-type]


class Issuing(Transitions):
    """The flows that sell cards: issue, the pump, delivery, cancel, store credit."""

    # The hold and capture a reclaim is made of (``Checkout``'s; see ``PaymentsCore``).
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
        raise NotImplementedError  # pragma: no cover - PaymentsCore takes Checkout's

    def capture(
        self, reservation_id: str, amount: object | None, keep_remainder: bool = False
    ) -> PaymentFlow[Operation]:
        raise NotImplementedError  # pragma: no cover - PaymentsCore takes Checkout's

    # ------------------------------------------------------------------------ issue

    def issue_cards(
        self,
        order_ref: str,
        line_id: str,
        amount: object,
        currency: str,
        count: int,
        item_code: str | None,
        decimals: int,
    ) -> PaymentFlow[list[IssuedCard]]:
        """Sell ``count`` cards of ``amount`` on an order line; idempotent per card.

        Call it once the order is paid, never before (the host knows; the integrations in
        ``plugins/`` do). Asking again with the same (order, line) returns the same cards
        and does whatever step is still due; a larger ``count`` adds cards, the same index
        with another amount or currency is refused (``InvalidInputError``), never a second
        card. Returns the line's cards as they are when this call's steps are done: with
        the in-process sandbox usually ``generating`` (the barcodes come on a callback,
        which carries the rest on), at worst ``requested`` when 4WS was unreachable
        (``reconcile`` carries on).
        """
        order_ref = _require_order_ref(order_ref)
        line_id = _require_line_id(line_id)
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 6:
            raise InvalidInputError("decimals must be an integer from 0 to 6")
        value = positive_amount(amount, decimals)
        currency = require_currency(currency)
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not 1 <= count <= MAX_CARDS_PER_LINE
        ):
            raise InvalidInputError(f"count must be an integer from 1 to {MAX_CARDS_PER_LINE}")
        item = item_code if item_code is not None else self.settings.issuing_item_code
        if not isinstance(item, str) or not item.strip():
            raise InvalidInputError(
                "no 4WS gift-card item to generate: pass item_code or set "
                "FOURWS_ISSUING_ITEM_CODE (a FINANCIAL item of your 4WS catalogue)"
            )
        check_text("item_code", item, ITEM_CODE_MAX)
        with self.writing(issue_lock_key(order_ref)) as tx:
            now = self.clock.now()
            mine = {
                c.line_index: c
                for c in tx.issued_cards_for_order(order_ref)
                if c.line_id == line_id
            }
            for index in range(count):
                existing = mine.get(index)
                if existing is not None:
                    if (existing.amount, existing.currency) != (value, currency):
                        raise InvalidInputError(
                            f"card {index} of line {line_id} was issued for "
                            f"{existing.amount} {existing.currency}, not {value} {currency}"
                        )
                    continue
                tx.insert_issued_card(
                    IssuedCard(
                        id=issued_card_id(order_ref, line_id, index),
                        order_ref=order_ref,
                        line_id=line_id,
                        line_index=index,
                        amount=value,
                        currency=currency,
                        decimals=decimals,
                        item_code=item,
                        entity_code=self.settings.entity_code,
                        state=_S.REQUESTED,
                        created_at=now,
                        updated_at=now,
                    )
                )
        yield from self.advance_issuance(order_ref)
        return [
            c for c in self.store.list_issued_cards(order_ref=order_ref) if c.line_id == line_id
        ]

    def issued_cards(self, order_ref: str) -> list[IssuedCard]:
        return self.store.list_issued_cards(order_ref=_require_order_ref(order_ref))

    def _issued_card(self, card_id: str) -> IssuedCard:
        if not isinstance(card_id, str):
            raise InvalidInputError("issued card id must be a string")
        card = self.store.get_issued_card(card_id)
        if card is None:
            raise NotFoundInLedgerError(f"no issued card {card_id!r}")
        return card

    # ------------------------------------------------------------------------ pump

    def advance_issuance(self, order_ref: str) -> PaymentFlow[list[IssuedCard]]:
        """Do every step due for the order's sold cards (module docstring); never raises.

        Each step decides under a lock from a fresh read, so two workers pumping one order
        at once share the work instead of doubling it. Trouble stops this pass (logged);
        the records are durable and the next callback or ``reconcile`` resumes."""
        try:
            yield from self._generate_due(order_ref)
            for card in self.store.list_issued_cards(order_ref=order_ref):
                if card.state is _S.GENERATED:
                    yield from self._activate(card)
                elif card.state is _S.CANCELLING:
                    yield from self._reclaim(card)
            yield from self._deliver(order_ref, resend=None)
        except Exception as exc:  # durable: the next pass resumes
            log.error("fourws_pay.issuing.advance_failed", error=type(exc).__name__)
        return self.store.list_issued_cards(order_ref=order_ref)

    def _generate_due(self, order_ref: str) -> PaymentFlow[None]:
        """One generate request per line whose cards are ``requested``."""
        lock = issue_lock_key(order_ref)
        while True:
            token = secrets.token_urlsafe(32)
            with self.writing(lock) as tx:
                now = self.clock.now()
                waiting = [
                    c for c in tx.issued_cards_for_order(order_ref) if c.state is _S.REQUESTED
                ]
                if not waiting:
                    return
                line = [c for c in waiting if c.line_id == waiting[0].line_id]
                op = Operation(
                    id=f"op_{secrets.token_hex(16)}",
                    kind=OperationKind.GENERATE,
                    reservation_id=line[0].id,
                    barcode=lock,
                    amount=sum((c.amount for c in line), Decimal(0)),
                    currency=line[0].currency,
                    entity_code=line[0].entity_code,
                    state=OperationState.SENDING,  # nothing to read first: write-ahead
                    created_at=now,
                    updated_at=now,
                    deadline=now + timedelta(seconds=self.settings.callback_timeout),
                    callback_token_hash=token_hash(token),
                )
                tx.insert_operation(op)
                for card in line:
                    taken = _with_state(card, _S.GENERATING, now, generate_op_id=op.id)
                    if not tx.update_issued_card(taken, _S.REQUESTED):
                        raise InvalidStateError("sold card changed concurrently")
            crash_point("generate.after_sending")
            request = PostGenerate(
                line[0].item_code, len(line), f"{self.callback_base_url()}/{op.id}/{token}"
            )
            try:
                queued: QueuedOperation = yield request
            except AmbiguousOutcomeError as exc:
                self._transition(
                    op, OperationState.SENDING, state=OperationState.UNKNOWN, message=str(exc)[:500]
                )
                return
            except FourWSError as exc:
                self._generation_lost(op, f"never enqueued: {exc}"[:500])
                return  # 4WS refuses now: the next pass (reconcile) asks again
            crash_point("generate.after_post")
            if (
                self._transition(
                    op,
                    OperationState.SENDING,
                    state=OperationState.ENQUEUED,
                    queue_id=queued.queue_id,
                )
                is None
            ):
                self._record_queue_id(op, queued.queue_id)

    def _generation_lost(self, op: Operation, why: str) -> Operation | None:
        """A generation that surely produced nothing we will use: the operation fails and
        its cards go back to ``requested`` in the same transaction (a new request follows;
        a late callback of this one is an alert, its barcodes never activated)."""
        with self.writing(op.barcode) as tx:
            now = self.clock.now()
            current = tx.get_operation(op.id)
            if current is None or current.is_terminal:
                return None
            failed = replace(current, state=OperationState.FAILED, updated_at=now, message=why)
            if not tx.update_operation(failed, current.state):
                return None
            order_ref = self._order_of(tx, op)
            for card in tx.issued_cards_for_order(order_ref):
                if card.state is _S.GENERATING and card.generate_op_id == op.id:
                    tx.update_issued_card(
                        _with_state(card, _S.REQUESTED, now, generate_op_id=None), _S.GENERATING
                    )
        return failed

    @staticmethod
    def _order_of(tx: LedgerTransaction, op: Operation) -> str:
        card = tx.get_issued_card(op.reservation_id)
        if card is None:
            raise NotFoundInLedgerError(f"operation {op.id} names no sold card")
        return card.order_ref

    def order_of_issuing_operation(self, op: Operation) -> str | None:
        """The order a ``generate`` or ``activate`` operation sells for (None otherwise)."""
        if op.kind not in (OperationKind.GENERATE, OperationKind.ACTIVATE):
            return None
        card = self.store.get_issued_card(op.reservation_id)
        return card.order_ref if card is not None else None

    def _assign_barcodes(
        self,
        tx: LedgerTransaction,
        op: Operation,
        generated: list[GeneratedGiftCard],
        now: datetime,
    ) -> tuple[list[IssuedCard], list[str]]:
        """Inside the transaction that settles a generation: give its cards their barcodes
        (by index), in the same commit. Returns the cards and the barcodes left over (more
        than asked, repeated, or unusable): reported, never activated."""
        cards = sorted(
            (
                c
                for c in tx.issued_cards_for_order(self._order_of(tx, op))
                if c.generate_op_id == op.id and c.state is _S.GENERATING
            ),
            key=lambda c: c.line_index,
        )
        seen: set[str] = set()
        usable: list[GeneratedGiftCard] = []
        spare: list[str] = []
        for item in generated:
            code = item.barcode
            if code in seen or "/" in code or not code.isprintable() or len(code) > BARCODE_MAX:
                spare.append(code)
                continue
            seen.add(code)
            usable.append(item)
        done: list[IssuedCard] = []
        for card, item in zip(cards, usable, strict=False):
            assigned = _with_state(
                card,
                _S.GENERATED,
                now,
                barcode=item.barcode,
                start_validity=item.start_validity,
                end_validity=item.end_validity,
            )
            tx.update_issued_card(assigned, _S.GENERATING)
            done.append(assigned)
        spare += [item.barcode for item in usable[len(cards) :]]
        for card in cards[len(usable) :]:  # fewer than asked: the rest is asked again
            tx.update_issued_card(
                _with_state(card, _S.REQUESTED, now, generate_op_id=None), _S.GENERATING
            )
        return done, spare

    def _unassigned(
        self, tx: LedgerTransaction, op: Operation, generated: list[GeneratedGiftCard]
    ) -> list[str]:
        """Barcodes of a late or repeated generation answer that no sold card holds."""
        held = {c.barcode for c in tx.issued_cards_for_order(self._order_of(tx, op))}
        return [item.barcode for item in generated if item.barcode not in held]

    def _refuse_generation(
        self, tx: LedgerTransaction, op: Operation, why: str, now: datetime
    ) -> list[IssuedCard]:
        """4WS refused the generation (``success: false``): its cards fail, with the reason."""
        failed = []
        for card in tx.issued_cards_for_order(self._order_of(tx, op)):
            if card.generate_op_id == op.id and card.state is _S.GENERATING:
                ended = _with_state(card, _S.FAILED, now, message=why[:500])
                tx.update_issued_card(ended, _S.GENERATING)
                failed.append(ended)
        return failed

    # -------------------------------------------------------------------- activate

    def _activate(self, card: IssuedCard) -> PaymentFlow[None]:
        """Claim, read, confirm and POST the activation of one generated card."""
        assert card.barcode is not None
        barcode = card.barcode
        token = secrets.token_urlsafe(32)
        with self.writing(barcode) as tx:
            now = self.clock.now()
            current = tx.get_issued_card(card.id)
            if current is None or current.state is not _S.GENERATED:
                return  # another worker took it, or it was cancelled
            if self._blocker(tx, barcode) is not None:
                return  # something else moves this card: next pass
            claim = Operation(
                id=f"op_{secrets.token_hex(16)}",
                kind=OperationKind.ACTIVATE,
                reservation_id=current.id,
                barcode=barcode,
                amount=current.amount,
                currency=current.currency,
                entity_code=current.entity_code,
                state=OperationState.PREPARED,
                created_at=now,
                updated_at=now,
                deadline=now + timedelta(seconds=self.settings.callback_timeout),
                callback_token_hash=token_hash(token),
                parent_id=current.generate_op_id,
            )
            tx.insert_operation(claim)
            if not tx.update_issued_card(
                _with_state(current, _S.ACTIVATING, now, activate_op_id=claim.id), _S.GENERATED
            ):
                raise InvalidStateError("sold card changed concurrently")
        crash_point("activate.after_prepare")
        try:
            read = yield from self.read(barcode, cached=False)
        except FourWSError as exc:
            self._activation_not_sent(
                claim, f"never sent: the card read failed ({type(exc).__name__})"
            )
            return
        with self.writing(barcode) as tx:
            now = self.clock.now()
            loaded = read.card is not None and (
                read.card.amount > 0 or (read.card.original_amount or 0) > 0
            )
            if loaded:
                refused = replace(
                    claim,
                    state=OperationState.FAILED,
                    updated_at=now,
                    message="never sent: the card is already active",
                )
                if not tx.update_operation(refused, OperationState.PREPARED):
                    return
                sold = tx.get_issued_card(card.id)
                if sold is not None and sold.state is _S.ACTIVATING:
                    tx.update_issued_card(
                        _with_state(
                            sold, _S.FAILED, now, message="already active before our activation"
                        ),
                        _S.ACTIVATING,
                    )
            else:
                sending = replace(
                    claim,
                    state=OperationState.SENDING,
                    updated_at=now,
                    balance_before=read.card.amount if read.card is not None else Decimal(0),
                    entity_code=(read.card.entity_code if read.card is not None else None)
                    or claim.entity_code,
                )
                if not tx.update_operation(sending, OperationState.PREPARED):
                    return  # reconcile gave up on the claim meanwhile
        if loaded:
            self.emit(
                EventKind.ALERT,
                operation=refused,
                message="a sold card read active before its activation was sent; not loaded again",
            )
            return
        crash_point("activate.after_sending")
        yield from self._post_activation(sending, card, token, read.card)

    def _activation_update(
        self, sending: Operation, card: IssuedCard, token: str, read: GiftCard | None
    ) -> GiftCardUpdate:
        return GiftCardUpdate(
            entity_code=sending.entity_code,
            barcode=sending.barcode,
            amount=sending.amount,
            decimals=card.decimals,
            activation_date=self.clock.now().replace(microsecond=0),
            currency=card.currency,
            currency_symbol=read.currency_symbol if read is not None else None,
            country=self.settings.issuing_country,
            branch_code=self.settings.issuing_branch_code,
            price_list=self.settings.issuing_price_list,
            callback=f"{self.callback_base_url()}/{sending.id}/{token}",
            payload={"operation_id": sending.id, "order_ref": card.order_ref},
        )

    def _post_activation(
        self, sending: Operation, card: IssuedCard, token: str, read: GiftCard | None
    ) -> PaymentFlow[None]:
        from fourws_pay.payments.effects import PostUpdate

        try:
            queued: QueuedOperation = yield PostUpdate(
                self._activation_update(sending, card, token, read)
            )
        except AmbiguousOutcomeError as exc:
            self._transition(
                sending,
                OperationState.SENDING,
                state=OperationState.UNKNOWN,
                message=str(exc)[:500],
            )
            return
        except FourWSError as exc:
            self._activation_not_sent(sending, f"never enqueued: {exc}"[:500])
            return
        crash_point("activate.after_post")
        if (
            self._transition(
                sending,
                OperationState.SENDING,
                state=OperationState.ENQUEUED,
                queue_id=queued.queue_id,
            )
            is None
        ):
            self._record_queue_id(sending, queued.queue_id)

    def _activation_not_sent(self, op: Operation, why: str) -> None:
        """The activation surely did not reach 4WS's queue: it fails and its card goes back
        to ``generated`` in the same transaction; the next pass activates it again."""
        with self.writing(op.barcode) as tx:
            now = self.clock.now()
            current = tx.get_operation(op.id)
            if current is None or current.state not in (
                OperationState.PREPARED,
                OperationState.SENDING,
            ):
                return
            failed = replace(current, state=OperationState.FAILED, updated_at=now, message=why)
            if not tx.update_operation(failed, current.state):
                return
            sold = tx.get_issued_card(op.reservation_id)
            if sold is not None and sold.state is _S.ACTIVATING and sold.activate_op_id == op.id:
                tx.update_issued_card(
                    _with_state(sold, _S.GENERATED, now, activate_op_id=None), _S.ACTIVATING
                )

    # -------------------------------------------------------------------- deliver

    def _deliver(self, order_ref: str, *, resend: set[str] | None) -> PaymentFlow[list[IssuedCard]]:
        """Claim the order's deliverable cards (``delivering``) under its lock, ask 4WS for
        their PDF, call the delivery hook, then mark them ``delivered``. ``resend``: the ids
        of delivered cards staff want sent again.

        Cards sold together are delivered together: while a card of the order is still on
        its way (being generated or activated), the active ones wait, at most
        ``delivery_retry_after`` (a card stuck in review does not hold the others back)."""
        lock = issue_lock_key(order_ref)
        with self.writing(lock) as tx:
            now = self.clock.now()
            stuck_before = now - timedelta(seconds=self.settings.delivery_retry_after)
            claimed = []
            cards = tx.issued_cards_for_order(order_ref)
            on_the_way = [c for c in cards if c.state in _ON_THE_WAY]
            waited = [c for c in cards if c.state is _S.ACTIVE and c.updated_at <= stuck_before]
            if resend is None and on_the_way and not waited:
                cards = []  # one delivery for the order's cards together (one mail each)
            for card in cards:
                due = (
                    card.state is _S.ACTIVE
                    or (card.state is _S.DELIVERING and card.updated_at <= stuck_before)
                    or (resend is not None and card.id in resend and card.state is _S.DELIVERED)
                )
                if not due:
                    continue
                taken = replace(card, state=_S.DELIVERING, updated_at=now)
                if card.state is not _S.DELIVERING:
                    taken = _with_state(card, _S.DELIVERING, now)
                if tx.update_issued_card(taken, card.state):
                    claimed.append(taken)
        if not claimed:
            return []
        pdf_url = None
        try:
            pdf: GiftCardPdf = yield RequestPdf(tuple(c.barcode for c in claimed if c.barcode))
            pdf_url = pdf.url
        except FourWSError as exc:  # the codes are what matters; the PDF is a courtesy
            log.warning(
                "fourws_pay.issuing.pdf_failed", order_ref=order_ref, error=type(exc).__name__
            )
        try:
            self.pm.hook.fourws_pay_deliver_giftcards(
                order_ref=order_ref, cards=list(claimed), pdf_url=pdf_url
            )
        except Exception as exc:
            log.error(
                "fourws_pay.issuing.delivery_failed", order_ref=order_ref, error=type(exc).__name__
            )
            with self.writing(lock) as tx:
                now = self.clock.now()
                for card in claimed:
                    current = tx.get_issued_card(card.id)
                    if current is not None and current.state is _S.DELIVERING:
                        tx.update_issued_card(_with_state(current, _S.ACTIVE, now), _S.DELIVERING)
            return []
        delivered = []
        with self.writing(lock) as tx:
            now = self.clock.now()
            for card in claimed:
                current = tx.get_issued_card(card.id)
                if current is None or current.state is not _S.DELIVERING:
                    continue  # cancelled meanwhile
                done = _with_state(
                    current, _S.DELIVERED, now, delivered_at=now, deliveries=current.deliveries + 1
                )
                if tx.update_issued_card(done, _S.DELIVERING):
                    delivered.append(done)
        installed = bool(self.pm.hook.fourws_pay_deliver_giftcards.get_hookimpls())
        for card in delivered:
            self.emit(
                EventKind.CARD_DELIVERED,
                issued_card=card,
                message="delivered" if installed else "recorded (no delivery plugin installed)",
                deliveries=card.deliveries,
                pdf=pdf_url is not None,
            )
        return delivered

    def resend_giftcards(
        self, order_ref: str, card_ids: list[str] | None
    ) -> PaymentFlow[list[IssuedCard]]:
        """Staff: deliver the order's delivered cards again (all, or ``card_ids``): the same
        codes through the same hook; nothing is generated or loaded."""
        order_ref = _require_order_ref(order_ref)
        cards = self.store.list_issued_cards(order_ref=order_ref)
        wanted = {c.id for c in cards} if card_ids is None else set(card_ids)
        unknown = wanted - {c.id for c in cards}
        if unknown:
            raise NotFoundInLedgerError(
                f"order {order_ref} has no sold card {sorted(unknown)[0]!r}"
            )
        return (yield from self._deliver(order_ref, resend=wanted))

    # ------------------------------------------------------------------- cancel

    def cancel_issued_card(self, card_id: str) -> PaymentFlow[IssuedCard]:
        """Cancel a sold card, taking back only what is unspent (policy: docs/design.md).

        Before any money is on it (requested, generating, generated) it is simply
        ``cancelled``; a barcode it may still receive is never activated. With money on it,
        the unspent balance is held first (an ordinary hold on the sold card: what a
        recipient holds for a checkout is respected), then the card is ``cancelling`` and
        the hold captured (a negative update of at most its balance). A card spent to zero
        is refused with ``SaleAlreadySpentError`` and left as it is: the buyer gets back
        nothing for it, the recipient already had its value. Partly spent: the rest comes
        back; how much is ``reclaimed`` (the reclaim capture's amount) on the returned
        card's reclaim hold. While the activation is still in flight the cancel is recorded
        (``cancelling``) and finished by the pump once it settles. Safe to re-run: a
        cancelled card is returned as it is; the reclaim hold is found by its order ref
        (the sold card's id), never made twice.
        """
        card = self._issued_card(card_id)
        if card.state in LOADED_ISSUED_CARD_STATES:
            hold = yield from self._reclaim_hold(card, raise_if_spent=True)
            assert hold is not None
        with self.writing(issue_lock_key(card.order_ref)) as tx:
            now = self.clock.now()
            current = tx.get_issued_card(card.id)
            assert current is not None
            if current.state in (_S.REQUESTED, _S.GENERATING, _S.GENERATED):
                ended = _with_state(
                    current, _S.CANCELLED, now, message="cancelled before it was loaded"
                )
            elif current.state in LOADED_ISSUED_CARD_STATES or current.state is _S.ACTIVATING:
                ended = _with_state(current, _S.CANCELLING, now)
            else:
                return current  # cancelling, cancelled or failed: nothing more to decide
            if not tx.update_issued_card(ended, current.state):
                raise InvalidStateError("sold card changed concurrently; retry")
        if ended.state is _S.CANCELLED:
            self.emit(
                EventKind.SALE_CANCELLED,
                issued_card=ended,
                message=ended.message or "",
                reclaimed="0",
            )
            return ended
        yield from self._reclaim(ended)
        return self._issued_card(card.id)

    def _reclaim_hold(
        self, card: IssuedCard, *, raise_if_spent: bool
    ) -> PaymentFlow[Reservation | None]:
        """The hold on a sold card's unspent balance, found (re-runs, other workers) or made."""
        assert card.barcode is not None
        for hold in self.store.list_reservations(order_ref=card.id):
            if hold.state in (ReservationState.ACTIVE, ReservationState.CAPTURED):
                return hold
        try:
            return (
                yield from self.reserve(
                    card.barcode, card.amount, card.currency, card.id, None, True, None
                )
            )
        except PaymentRefused as exc:
            if raise_if_spent:
                raise SaleAlreadySpentError(
                    exc.reason,
                    f"nothing left to take back on sold card {card.masked_barcode}: {exc}",
                    public_message="This gift card has already been used.",
                ) from None
            return None

    def _reclaim(self, card: IssuedCard) -> PaymentFlow[None]:
        """Finish a ``cancelling`` card: once no activation of it is in flight, capture
        the hold on what is unspent (made now if the cancel came during the activation);
        then ``cancelled``. Nothing loaded, or nothing left: ``cancelled`` with 0 back."""
        activation = self.store.get_operation(card.activate_op_id) if card.activate_op_id else None
        if activation is not None and activation.state not in TERMINAL_OPERATION_STATES:
            return  # the pump comes back when it settles
        reclaimed = Decimal(0)
        if activation is not None and activation.state is OperationState.SUCCEEDED:
            hold = yield from self._reclaim_hold(card, raise_if_spent=False)
            if hold is not None:
                try:
                    capture = yield from self.capture(hold.id, None, False)
                except PaymentRefused:
                    return  # spent meanwhile: the next pass holds what is left
                reclaimed = capture.amount
        with self.writing(issue_lock_key(card.order_ref)) as tx:
            now = self.clock.now()
            current = tx.get_issued_card(card.id)
            if current is None or current.state is not _S.CANCELLING:
                return
            ended = _with_state(
                current,
                _S.CANCELLED,
                now,
                message=f"cancelled; {reclaimed} taken back"
                if reclaimed
                else "cancelled; nothing was left to take back",
            )
            if not tx.update_issued_card(ended, _S.CANCELLING):
                return
        self.emit(
            EventKind.SALE_CANCELLED,
            issued_card=ended,
            message=ended.message or "",
            reclaimed=str(reclaimed),
        )

    def reclaimed_amount(self, card_id: str) -> Decimal:
        """What a cancelled sold card gave back: its reclaim captures that settled."""
        card = self._issued_card(card_id)
        total = Decimal(0)
        for hold in self.store.list_reservations(order_ref=card.id):
            if hold.state is ReservationState.CAPTURED and hold.operation_id is not None:
                capture = self.store.get_operation(hold.operation_id)
                if capture is not None and capture.state is OperationState.SUCCEEDED:
                    total += capture.amount
        return total

    # ------------------------------------------------------------ store credit

    def _store_credit(
        self,
        tx: LedgerTransaction,
        parent: Operation,
        reservation: Reservation,
        amount: Decimal,
        now: datetime,
    ) -> IssuedCard:
        """A sold card that refunds ``amount`` of capture ``parent``, written under the
        capture's card lock (where its refundable amount is counted)."""
        line_id = f"refund:{parent.id}"
        index = len(
            [c for c in tx.issued_cards_for_order(reservation.order_ref) if c.line_id == line_id]
        )
        item = self.settings.issuing_item_code
        if not item:
            raise InvalidInputError(
                "a refund to a new card needs FOURWS_ISSUING_ITEM_CODE (the 4WS gift-card item)"
            )
        card = IssuedCard(
            id=issued_card_id(reservation.order_ref, line_id, index),
            order_ref=reservation.order_ref,
            line_id=line_id,
            line_index=index,
            amount=amount,
            currency=reservation.currency,
            decimals=reservation.decimals,
            item_code=item,
            entity_code=self.settings.entity_code,
            state=_S.REQUESTED,
            created_at=now,
            updated_at=now,
            refund_of=parent.id,
        )
        tx.insert_issued_card(card)
        return card

    @staticmethod
    def _store_credits(tx: LedgerTransaction, parent: Operation, order_ref: str) -> Decimal:
        """What store-credit cards already refund of ``parent`` (all but failed ones)."""
        return sum(
            (
                c.amount
                for c in tx.issued_cards_for_order(order_ref)
                if c.refund_of == parent.id and c.state is not _S.FAILED
            ),
            Decimal(0),
        )

    # ---------------------------------------------------------------- reconcile

    def pending_issuing_orders(self) -> list[str]:
        """Orders with sold cards that still have a step due."""
        from fourws_pay.payments.states import PENDING_ISSUED_CARD_STATES

        return list(
            dict.fromkeys(
                c.order_ref for c in self.store.list_issued_cards(PENDING_ISSUED_CARD_STATES)
            )
        )

    def _judge_generation(self, op: Operation) -> Operation:
        """An ``unknown`` generation has no balance to read: once its deadline passed with no
        callback it is given up (its cards asked again); before, it is left to its callback."""
        if op.deadline > self.clock.now():
            return op
        return self._generation_lost(op, "no callback before the deadline; asked again") or op


__all__ = ["Issuing", "issued_card_id"]
