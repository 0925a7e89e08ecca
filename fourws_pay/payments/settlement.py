"""Settlement: how an operation sent to 4WS gets its outcome, and the queue moves on.

Three ways, each moving the operation only through ``transitions`` (so terminal states
never change, invariant 5): an authenticated 4WS callback (``handle_callback``: the
operation's secret, compared in constant time, invariant 8); ``reconcile``, which first
marks crashed sends and overdue callbacks ``unknown`` (``stale_operations``), then judges
each ``unknown`` one from the card's balance (``_judge``); and an operator's ``resolve`` of
what stayed in ``manual_review``. ``sweep`` expires holds past their instant.

Each of the three is also what lets the card's queue move (invariant 17): the worker that
settles an operation gives the card's queued operations their turns right after
(``settle_callback``, ``resolve``, ``reconcile``), and ``reconcile`` gives turns on every
idle card that still has some (a worker that died between the two). While operations are
queued behind an ``enqueued`` one, ``reconcile`` also looks at it early
(``Settings.queue_probe_after``) instead of only after ``callback_timeout``: a balance that
moved by exactly its amount settles it, so one lost callback does not hold the queue for the
whole callback timeout.

Balance evidence (``Settings.settle_by_balance``): by default a balance that moved by
exactly the amount settles an ambiguous operation as applied. That is inherent to
balance-only evidence and wrong in one case: a till spending exactly the same amount on the
card while our request was never enqueued (the order is then paid with nothing). With
``settle_by_balance=False`` the balance never settles anything: ambiguous operations go to
``manual_review`` after ``reconcile_window`` (and the early look at queued-behind operations
is off), so only 4WS's callback or an operator decides.

Waiting for one of them (``wait_for_operation``) only reads the ledger, so it sees a
settlement made by any process that shares it: the web worker that received the callback,
a ``reconcile`` job, an operator.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Iterable
from dataclasses import replace
from datetime import timedelta

from fourws_pay.api import wirejson
from fourws_pay.api.models import GenerateGiftCardsResult, GiftCard, UpdateGiftCardResult
from fourws_pay.errors import CallbackRejected, InvalidInputError, InvalidStateError
from fourws_pay.logs import mask_barcode
from fourws_pay.payments.crash import crash_point
from fourws_pay.payments.effects import Pause, PaymentFlow
from fourws_pay.payments.issuing import Issuing
from fourws_pay.payments.models import (
    CallbackResult,
    EventKind,
    Operation,
    OperationKind,
    OperationState,
    OrderRefundOutcome,
    ReconcileReport,
    ReservationState,
)
from fourws_pay.payments.transitions import (
    HOLDING_OPERATION_STATES,
    live_captures,
    token_hash,
)


def parse_callback_path(path: str) -> tuple[str, str]:
    """``…/<operation id>/<token>`` -> (operation id, token), or ``CallbackRejected``."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if len(parts) < 2 or not parts[-2].startswith("op_"):
        raise CallbackRejected("callback path does not name an operation", status_code=404)
    return parts[-2], parts[-1]


# How often wait_for_operation reads the ledger: soon at first (a sandbox or a quick 4WS
# calls back within milliseconds), then less often, so a long wait costs few reads.
WAIT_FIRST_POLL = 0.01
WAIT_MAX_POLL = 0.5


class Settlement(Issuing):
    """The flows that learn what 4WS did with an operation (a sold card's generation and
    activation included: their callbacks move the sold cards, then the issuing pump)."""

    def advance_queue(self, barcode: str) -> PaymentFlow[list[Operation]]:
        """Give the card's queue its turns: ``Checkout.advance_queue`` (a turn is a
        capture's claim, read and confirm); settlement only says when."""
        raise NotImplementedError  # pragma: no cover - PaymentsCore takes Checkout's

    def pending_order_refunds(self) -> list[str]:
        raise NotImplementedError  # pragma: no cover - PaymentsCore takes OrderRefunds'

    def carry_on_order_refund(self, plan_id: str) -> PaymentFlow[OrderRefundOutcome]:
        raise NotImplementedError  # pragma: no cover - PaymentsCore takes OrderRefunds'

    def settle_callback(self, path: str, body: bytes) -> PaymentFlow[CallbackResult]:
        """``handle_callback``, then the card's queue gets its turns if the card is idle.

        A host that must answer 4WS first (the ASGI app does) calls ``handle_callback`` and
        ``advance_queue`` itself, in that order."""
        result = self.handle_callback(path, body)
        yield from self.after_callback(result)
        return result

    def after_callback(self, result: CallbackResult) -> PaymentFlow[None]:
        """What an applied callback lets move on (``after_settlement``)."""
        if result.applied and result.operation is not None:
            yield from self.after_settlement(result.operation)

    def after_settlement(self, operation: Operation) -> PaymentFlow[None]:
        """What a settled operation lets move on: its card's queue, and for a sold card's
        generation or activation, the order's issuing pump (activate, deliver)."""
        if operation.kind is not OperationKind.GENERATE:
            yield from self.advance_queue(operation.barcode)
        order_ref = self.order_of_issuing_operation(operation)
        if order_ref is not None:
            yield from self.advance_issuance(order_ref)

    def wait_for_operation(self, operation_id: str, timeout: float) -> PaymentFlow[Operation]:
        """The operation once it is settled (``succeeded`` or ``failed``: by its callback,
        ``reconcile`` or an operator), or as it stands when ``timeout`` seconds have passed
        on the provider's clock.

        A timeout is not an error and changes nothing: an ``enqueued`` operation still
        settles when 4WS calls back, and an ``unknown`` one needs ``reconcile`` (waiting
        does not run it). A checkout need not wait at all; a script, a test or a refund
        that must follow its capture does. ``NotFoundInLedgerError`` for an unknown id.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise InvalidInputError("timeout must be a number of seconds")
        if not math.isfinite(timeout) or timeout < 0:
            raise InvalidInputError("timeout must be a finite number of seconds, 0 or more")
        deadline = self.clock.monotonic() + timeout
        poll = WAIT_FIRST_POLL
        while True:
            operation = self._operation(operation_id)
            left = deadline - self.clock.monotonic()
            if operation.is_terminal or left <= 0:
                return operation
            yield Pause(min(poll, left))
            poll = min(poll * 2, WAIT_MAX_POLL)

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
        generation = operation.kind is OperationKind.GENERATE
        shape = GenerateGiftCardsResult if generation else UpdateGiftCardResult
        result = self._parse_callback(bytes(body), operation_id, shape)
        spare: list[str] = []
        with self.writing(operation.barcode) as tx:
            now = self.clock.now()  # inside the lock: stamps follow commit order
            current = tx.get_operation(operation_id)
            assert current is not None
            verdict = OperationState.SUCCEEDED if result.success else OperationState.FAILED
            if current.state in (OperationState.PREPARED, OperationState.QUEUED):
                raise CallbackRejected("operation was never sent", status_code=409)
            applied = self._apply_verdict(
                tx,
                current,
                verdict,
                now,
                settled_at=now,
                callback_id=None
                if isinstance(result, GenerateGiftCardsResult)
                else result.id or result.queue_id,
                message=None if result.success else (result.message or "failed")[:500],
            )
            if isinstance(result, GenerateGiftCardsResult):
                if applied is None:  # late or repeated: what it carries is used by no card
                    spare = self._unassigned(tx, current, result.giftcards)
                elif result.success:
                    spare = self._assign_barcodes(tx, applied, result.giftcards, now)[1]
                else:
                    self._refuse_generation(tx, applied, result.message or "failed", now)
            if applied is None and not current.is_terminal:
                # Every sent, unsettled state may take either verdict and every writer of
                # an operation holds its card lock (``_transition``), so this cannot happen;
                # say so loudly rather than lose an authentic callback quietly.
                raise CallbackRejected("operation changed concurrently; retry", status_code=409)
            if applied is not None:
                crash_point("callback.before_commit")
        # Terminal already: the same verdict is a duplicate, another is a conflict.
        conflict = None if applied is not None or current.state is verdict else current
        if spare:
            self.emit(
                EventKind.ALERT,
                operation=applied or current,
                message=f"{len(spare)} generated barcode(s) not used for any sold card "
                "(a late, repeated or oversized generation); they are never activated",
                barcodes=[mask_barcode(code) for code in spare],
            )
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
    def _parse_callback(
        body: bytes,
        operation_id: str,
        shape: type[UpdateGiftCardResult] | type[GenerateGiftCardsResult] = UpdateGiftCardResult,
    ) -> UpdateGiftCardResult | GenerateGiftCardsResult:
        """A callback body of the documented ``shape`` (updateGiftcard's, or
        generateGiftcards' for a generation): strict on ``success``; a payload naming
        another operation is refused."""
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
            return shape.model_validate(data)
        except ValueError:
            raise CallbackRejected("callback body does not match the documented shape") from None

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
                    op.state in HOLDING_OPERATION_STATES for op in live_captures(tx, current.id)
                ):
                    continue  # a hold with an operation in flight never expires
                expired = self._end_hold(tx, current, ReservationState.EXPIRED, now)
                if expired is None:
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
                if op.kind is OperationKind.ACTIVATE:
                    # Never posted: its sold card goes back to ``generated`` (next pass).
                    self._activation_not_sent(op, "never sent (its worker stopped before sending)")
                    continue
                # Never marked sending, so never posted: it waits for its turn again (the
                # shop was told it was accepted), re-checked on a fresh read then.
                self._give_back_turn(op, "never sent (its worker stopped before sending)")
            elif op.state is OperationState.SENDING and op.updated_at + self.send_grace <= now:
                self._transition(
                    op,
                    OperationState.SENDING,
                    state=OperationState.UNKNOWN,
                    message="process stopped while sending",
                )
            elif op.state is OperationState.ENQUEUED and op.deadline <= now:
                self._transition(
                    op,
                    OperationState.ENQUEUED,
                    state=OperationState.UNKNOWN,
                    message="no callback before the deadline",
                )
        return self.store.list_operations([OperationState.UNKNOWN])

    def reconcile(self) -> PaymentFlow[ReconcileReport]:
        """Judge what is overdue or unknown, look early at what holds a queue, give every
        idle card's queue its turns, then sweep. Safe to re-run: every move is a
        compare-and-set, and a second pass finds nothing left to move."""
        report = ReconcileReport()
        for op in [*self.stale_operations(), *self._holding_a_queue()]:
            if op.kind is OperationKind.GENERATE:  # no balance to read: see its judge
                resolved = self._judge_generation(op)
            else:
                read = yield from self.read(op.barcode, cached=False)
                resolved = self._judge(op, read.card)
            bucket = {
                OperationState.SUCCEEDED: report.succeeded,
                OperationState.FAILED: report.failed,
                OperationState.MANUAL_REVIEW: report.manual_review,
            }.get(resolved.state, report.still_pending)
            bucket.append(resolved)
        waiting = {op.barcode: None for op in self.store.list_operations([OperationState.QUEUED])}
        for barcode in waiting:
            report.advanced.extend((yield from self.advance_queue(barcode)))
        for order_ref in self.pending_issuing_orders():
            report.issuing.extend((yield from self.advance_issuance(order_ref)))
        for plan_id in self.pending_order_refunds():
            report.order_refunds.append((yield from self.carry_on_order_refund(plan_id)).refund)
        return replace(report, expired_reservations=self.sweep())

    def _holding_a_queue(self) -> list[Operation]:
        """``enqueued`` operations with operations queued behind them, older than
        ``queue_probe_after``: worth a balance read before their callback timeout."""
        if not self.settings.settle_by_balance:
            return []
        now = self.clock.now()
        probe_after = timedelta(seconds=self.settings.queue_probe_after)
        queued = {op.barcode for op in self.store.list_operations([OperationState.QUEUED])}
        return [
            op
            for op in self.store.list_operations([OperationState.ENQUEUED])
            if op.barcode in queued and op.updated_at + probe_after <= now
        ]

    def _judge(self, op: Operation, card: GiftCard | None) -> Operation:
        """Decide an ``unknown`` operation from the balance (see the module docstring), or
        look early at an ``enqueued`` one that holds a queue.

        Only a balance that moved by exactly the amount is evidence (of success), and only
        with ``settle_by_balance``. Sound because the card was busy with this operation
        alone from its claim (invariant 15): no other operation of ours moved the balance
        since ``balance_before``; a till spending exactly the same amount meanwhile is the
        one case it gets wrong (module docstring). An unchanged balance proves nothing,
        since 4WS's queue may still apply the request, so after the window an ``unknown``
        one goes to ``manual_review``, where its hold stays counted until an authenticated
        callback or an operator (``resolve``) settles it; an ``enqueued`` one is left to its
        callback and deadline.
        """
        now = self.clock.now()
        old_enough = op.created_at + timedelta(seconds=self.settings.reconcile_window) <= now
        if (
            self.settings.settle_by_balance
            and card is not None
            and op.balance_before is not None
            and card.amount == op.balance_before + op.signed_amount
        ):
            return (
                self._settle(
                    op,
                    op.state,
                    OperationState.SUCCEEDED,
                    "balance moved by exactly the amount",
                )
                or op
            )
        if op.state is not OperationState.UNKNOWN or not old_enough:
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

    def resolve(
        self, operation_id: str, *, applied: bool, note: str, actor: str | None = None
    ) -> PaymentFlow[Operation]:
        """An operator's verdict on an operation in ``manual_review``, then the card's queue
        gets its turns (the operation no longer keeps the card busy) and, for a sold card,
        the issuing pump runs."""
        resolved = self.resolve_only(operation_id, applied=applied, note=note, actor=actor)
        yield from self.after_settlement(resolved)
        return resolved

    def resolve_only(
        self, operation_id: str, *, applied: bool, note: str, actor: str | None = None
    ) -> Operation:
        """An operator's verdict on an operation in ``manual_review`` (e.g. after asking 4WS).

        ``applied=True`` settles it as succeeded (a capture's reservation becomes captured),
        ``False`` as failed (its hold stops counting). Any other state is refused, so a
        re-run after success is refused too and never moves money twice.

        Who, when and why are written on the operation in the transaction that settles it
        (``message`` "resolved by operator <actor>: <note>", ``updated_at``): the record of
        the action cannot exist without the action, nor the action without its record.
        """
        if not isinstance(note, str) or not note.strip():
            raise InvalidInputError("say why in a note (it is kept on the operation)")
        if actor is not None and (
            not isinstance(actor, str) or not actor.strip() or len(actor) > 100 or "\x00" in actor
        ):
            raise InvalidInputError("actor must be a name of 1-100 characters")
        op = self._operation(operation_id)
        target = OperationState.SUCCEEDED if applied else OperationState.FAILED
        who = f"resolved by operator {actor.strip()}" if actor else "resolved by operator"
        resolved = self._settle(
            op, OperationState.MANUAL_REVIEW, target, f"{who}: {note.strip()[:400]}"
        )
        if resolved is None:
            raise InvalidStateError(f"operation is {op.state.value}, not in manual review")
        return resolved

    # ----------------------------------------------------------------- listings

    def operations(self, states: Iterable[OperationState] | None = None) -> list[Operation]:
        return self.store.list_operations(states)
