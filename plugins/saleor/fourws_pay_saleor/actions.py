"""TRANSACTION_CHARGE_REQUESTED, _REFUND_REQUESTED and _CANCELATION_REQUESTED.

Saleor sends these from a Celery task (``handle_transaction_request_task`` in
``saleor/webhook/transport/synchronous/transport.py``) and retries an answer >= 500 --
but the retried request arrives with an empty body (a Saleor bug since late 2024). So the
App never relies on a retry: every request is written down under a ``pspReference`` chosen
before money moves, and one that cannot be finished now (another request on the same
transaction, the card busy with an operation in flight, 4WS unreachable, the time budget
spent) is answered *pending* (``{"pspReference": ...}``, which Saleor books as
``*_REQUEST``) and finished by the App's own runner, whose outcome is reported with
``transactionEventReport`` under that reference.

Answers are remembered per delivery (hash of the signed body), so a delivery that does come
again with its body gets the same answer and is never acted on twice.

Several charges of one authorization: Saleor subtracts each ``CHARGE_SUCCESS`` from
``authorized_value`` (``saleor/payment/transaction_item_calculations.py``), so an order
authorized for 50 and charged 20 still shows 30 authorized and may charge or cancel it. A
partial charge captures with ``keep_remainder``: the provider splits the hold in the same
ledger transaction, the captured part shrinks to the charge and the rest stays held as a
new reservation with the same expiry, so the rest is never unheld for a moment. A capture
that consumed a whole hold without splitting it (made by an older App or provider) has its
rest held again once settled (``keep_remainders``); if the card's balance was spent in
between, the lost rest is reported as ``CANCEL_SUCCESS`` so Saleor stops offering it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fourws_pay.errors import APIError, InvalidInputError, NotFoundInLedgerError, PaymentRefused
from fourws_pay.logs import get_logger
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)
from fourws_pay_saleor.handler_core import (
    HandlerCore,
    Unavailable,
    delivery_key,
    is_retryable,
    request_psp,
)
from fourws_pay_saleor.payloads import TransactionActionRequest, WebhookEvent
from fourws_pay_saleor.responses import (
    CANCEL_RESULTS,
    CHARGE_RESULTS,
    REFUND_RESULTS,
    Result,
    TransactionAction,
    async_response,
    transaction_response,
)
from fourws_pay_saleor.store import (
    ActionRecord,
    ActionState,
    TransactionRecord,
    TransactionState,
)

log = get_logger(component="saleor.actions")

_OPEN = frozenset({ActionState.QUEUED, ActionState.POSTING})

ACTION_PREFIX = {
    WebhookEvent.TRANSACTION_CHARGE_REQUESTED.value: "charge",
    WebhookEvent.TRANSACTION_REFUND_REQUESTED.value: "refund",
    WebhookEvent.TRANSACTION_CANCELATION_REQUESTED.value: "cancel",
}
_FAILURE = {
    WebhookEvent.TRANSACTION_CHARGE_REQUESTED.value: Result.CHARGE_FAILURE,
    WebhookEvent.TRANSACTION_REFUND_REQUESTED.value: Result.REFUND_FAILURE,
    WebhookEvent.TRANSACTION_CANCELATION_REQUESTED.value: Result.CANCEL_FAILURE,
}
_ALLOWED = {
    WebhookEvent.TRANSACTION_CHARGE_REQUESTED.value: CHARGE_RESULTS,
    WebhookEvent.TRANSACTION_REFUND_REQUESTED.value: REFUND_RESULTS,
    WebhookEvent.TRANSACTION_CANCELATION_REQUESTED.value: CANCEL_RESULTS,
}


def _authorized(record: TransactionRecord) -> Decimal | None:
    """What Saleor was told is authorized; for a record written by an App before 0.2 (no
    ``authorized`` column yet) the amount of the AUTHORIZATION_SUCCESS it answered."""
    if record.authorized is not None:
        return record.authorized
    response = record.response or {}
    if response.get("result") == Result.AUTHORIZATION_SUCCESS.value and "amount" in response:
        return Decimal(str(response["amount"]))
    return None


def _held(reservation: Reservation) -> Decimal:
    return reservation.applied_amount


_SETTLED = frozenset({OperationState.SUCCEEDED, OperationState.FAILED})


class _Refused(Exception):
    """4WS refused a refund part outright: nothing was applied for it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _TooLarge(Exception):
    def __init__(self, most: Decimal) -> None:
        super().__init__(str(most))
        self.most = most


@dataclass(frozen=True)
class Outcome:
    """What one attempt at an action came to.

    ``response``: final, Saleor can be told now. ``pending``: money is moving and the
    operation's settlement is reported by the event hook. Neither: nothing moved, retry.
    """

    response: dict[str, Any] | None = None
    pending: bool = False
    error: str | None = None


class ActionHandlers(HandlerCore):
    """Acting on an existing transaction: capture (in parts), release, refund."""

    # -- the webhook -----------------------------------------------------------------------

    async def action_requested(
        self,
        api_url: str,
        event: WebhookEvent,
        payload: TransactionActionRequest,
        body: bytes,
    ) -> dict[str, Any]:
        """Take a charge/refund/cancel request; answer its outcome or that it is pending."""
        key = delivery_key(api_url, event, body)
        stored = self.store.get_delivery(key)
        if stored is not None:
            return stored
        psp = request_psp(ACTION_PREFIX[event.value], key)
        action = self.store.get_action(psp)
        if action is None:
            now = self.clock.now()
            action = ActionRecord(
                psp_reference=psp,
                api_url=api_url,
                transaction_id=payload.transaction.id,
                event=event.value,
                amount=payload.action.amount,
                currency=payload.action.currency,
                state=ActionState.QUEUED,
                created_at=now,
                updated_at=now,
                granted_refund_id=payload.granted_refund_id,
            )
            self.store.save_action(action)  # written before any money moves
        in_time, outcome = await self._within_budget(
            self._attempt(psp, wait=self.config.sync_budget), self._late_outcome
        )
        if in_time and outcome is not None and outcome.response is not None:
            response = outcome.response
            self._mark_answered(api_url, action.transaction_id, response)
        else:
            response = async_response(psp)
        self.store.save_delivery(
            key, api_url, event.value, action.transaction_id, response, self.clock.now()
        )
        return response

    def _late_outcome(self, outcome: Outcome) -> None:
        """A task that outlived its (pending) answer: report a final outcome it reached."""
        if outcome.response is not None:
            self._queue_final(outcome.response)

    def report_answer(self, response: dict[str, Any]) -> None:
        """Report a final answer Saleor did not get (it was told "pending")."""
        self._queue_final(response)

    def _queue_final(self, response: dict[str, Any]) -> None:
        psp = str(response["pspReference"])
        action = self.store.get_action(psp)
        assert action is not None
        self._report(
            action.api_url,
            action.transaction_id,
            psp,
            str(response["result"]),
            response.get("amount"),
            str(response.get("message", "")),
        )

    # -- the runner ------------------------------------------------------------------------

    async def run_pending(self) -> int:
        """Work through queued actions (oldest first); returns how many were settled."""
        settled = 0
        for action in self.store.actions(ActionState.QUEUED, ActionState.POSTING):
            installation = self.store.get_installation(action.api_url)
            if installation is None or not installation.active:
                continue  # forgotten or deactivated: the App does not act for it
            outcome = await self._attempt(action.psp_reference, wait=0.0)
            if outcome.response is not None:
                self._queue_final(outcome.response)
            if outcome.response is not None or outcome.pending:
                settled += 1
        return settled

    async def keep_remainders(self) -> None:
        """Re-hold the rest of authorizations whose partial capture has settled."""
        for record in self.store.transactions_in_state(TransactionState.PARTIAL):
            try:
                async with self._exclusive(record.api_url, record.transaction_id, wait=0.0):
                    fresh = self.store.get_transaction(record.api_url, record.transaction_id)
                    if fresh is not None and fresh.state == TransactionState.PARTIAL:
                        await self._ensure_rest(fresh)
            except Unavailable:
                continue  # busy or not settled yet: the next pass
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                log.warning("saleor.rehold_deferred", error=repr(exc))

    # -- one attempt -----------------------------------------------------------------------

    async def _attempt(self, psp: str, *, wait: float) -> Outcome:
        """Try an action once, under the transaction's lease; records where it got to."""
        action = self.store.get_action(psp)
        assert action is not None
        if action.state not in _OPEN:
            return Outcome(pending=action.state == ActionState.WAITING)
        try:
            async with self._exclusive(action.api_url, action.transaction_id, wait=wait):
                action = self.store.get_action(psp)
                assert action is not None
                if action.state not in _OPEN:
                    return Outcome(pending=action.state == ActionState.WAITING)
                outcome = await self._act(action)
        except Exception as exc:
            # Whatever went wrong, Saleor was (or will be) told "pending": never a 5xx,
            # whose retry would come without a body. The runner tries again.
            if not is_retryable(exc):
                log.error("saleor.action_failed", psp_reference=psp, error=repr(exc))
            outcome = Outcome(error=str(exc) or type(exc).__name__)
        assert action is not None
        outcome = self._record(action, outcome)
        if outcome.response is not None and "actions" in outcome.response:
            outcome.response["actions"] = await self.available_actions(
                action.api_url, action.transaction_id, outcome.response["actions"]
            )
        return outcome

    async def available_actions(
        self, api_url: str, transaction_id: str, default: list[str]
    ) -> list[str]:
        """What staff can still do on the transaction (Saleor's ``availableActions``).

        CHARGE and CANCEL while part of the authorization is still held (authorize 50,
        charge 20: 30 is), REFUND while some settled charge is not refunded (charge 20, the
        rest lapses: 20 is). Saleor's Dashboard offers only these; ``default`` is used for
        a transaction the App does not know.
        """
        record = self.store.get_transaction(api_url, transaction_id)
        if record is None:
            return default
        try:
            actions = []
            if await self._remaining(record) > 0:
                actions += [TransactionAction.CHARGE.value, TransactionAction.CANCEL.value]
            for capture in await self._captures(record):
                if capture.state is OperationState.SUCCEEDED and (
                    await self._refundable(record, capture) > 0
                ):
                    actions.append(TransactionAction.REFUND.value)
                    break
        except Exception as exc:
            if not is_retryable(exc):
                raise
            return default
        return actions

    def _record(self, action: ActionRecord, outcome: Outcome) -> Outcome:
        now = self.clock.now()
        action.updated_at = now
        if outcome.response is not None:
            action.state = ActionState.DONE
        elif outcome.pending:
            action.state = ActionState.WAITING
        else:
            # Nothing moved (a refund that may have been posted stays POSTING, so the next
            # attempt looks for it before posting again).
            action.attempts += 1
            action.last_error = (outcome.error or "")[:500]
            age = (now - action.created_at).total_seconds()
            if age >= self.config.action_give_up_after:
                log.error("saleor.action_given_up", psp_reference=action.psp_reference)
                action.state = ActionState.DONE
                outcome = Outcome(
                    response=self._action_failure(
                        action, "The gift-card service could not complete this in time."
                    )
                )
        self.store.save_action(action)
        return outcome

    async def _act(self, action: ActionRecord) -> Outcome:
        record = self.store.get_transaction(action.api_url, action.transaction_id)
        if action.event == WebhookEvent.TRANSACTION_CHARGE_REQUESTED.value:
            return await self._charge(action, record)
        if action.event == WebhookEvent.TRANSACTION_REFUND_REQUESTED.value:
            return await self._refund(action, record)
        return await self._cancel(action, record)

    def _action_failure(self, action: ActionRecord, message: str) -> dict[str, Any]:
        return transaction_response(
            _FAILURE[action.event],
            allowed=_ALLOWED[action.event],
            psp_reference=action.psp_reference,
            amount=action.amount,
            message=message,
            time=self.clock.now(),
        )

    def _final(self, action: ActionRecord, message: str) -> Outcome:
        return Outcome(response=self._action_failure(action, message))

    # -- charge ----------------------------------------------------------------------------

    async def _captures(self, record: TransactionRecord) -> list[Operation]:
        """Every capture made for the transaction that did not fail."""
        captures = []
        for link in self.store.operation_links(record.api_url, record.transaction_id):
            if link.kind == OperationKind.CAPTURE.value:
                operation = await self._gw(record.channel).get_operation(link.operation_id)
                if operation.state is not OperationState.FAILED:
                    captures.append(operation)
        return captures

    async def _remaining(self, record: TransactionRecord) -> Decimal:
        """What Saleor still sees as authorized: authorized minus charges and the canceled."""
        authorized = _authorized(record)
        if authorized is None or record.state in (
            TransactionState.CANCELED,
            TransactionState.LAPSED,
            TransactionState.FAILED,
        ):
            return Decimal(0)
        charged = sum((op.amount for op in await self._captures(record)), Decimal(0))
        return max(authorized - charged, Decimal(0))

    async def _free_holds(self, record: TransactionRecord) -> list[Reservation]:
        """The authorization's active holds that no capture is using, oldest first.

        An authorization is a set of holds: a partial charge splits one (the charged part
        is captured, the rest held on), and a capture that fails leaves its part held again.
        """
        gateway = self._gw(record.channel)
        used = {op.reservation_id for op in await self._captures(record)}
        now = self.clock.now()
        free = []
        for reservation_id in self.store.holds_of(record.api_url, record.transaction_id):
            hold = await gateway.get_reservation(reservation_id)
            if (
                hold.state is ReservationState.ACTIVE
                and hold.expires_at > now
                and hold.id not in used
            ):
                free.append(hold)
        return free

    async def _in_flight(self, record: TransactionRecord) -> bool:
        return any(not op.is_terminal for op in await self._captures(record))

    async def _hold_for(self, record: TransactionRecord, amount: Decimal) -> Reservation | None:
        """A free hold that can pay ``amount`` (the exact one first, else the smallest that
        is larger); None when nothing is held any more. Raises ``Unavailable`` while the
        rest of an unsplit capture waits for its settlement, ``_TooLarge`` when the amount
        spans several holds."""
        free = await self._free_holds(record)
        if not free:
            await self._ensure_rest(record)
            free = await self._free_holds(record)
            if not free:
                return None
        self._mark_authorized(record)
        exact = [h for h in free if h.applied_amount == amount]
        if exact:
            return exact[0]
        larger = sorted((h for h in free if h.applied_amount > amount), key=_held)
        if larger:
            return larger[0]
        raise _TooLarge(max(h.applied_amount for h in free))

    def _mark_authorized(self, record: TransactionRecord) -> None:
        if record.state == TransactionState.PARTIAL:
            record.state = TransactionState.AUTHORIZED
            record.updated_at = self.clock.now()
            self.store.save_transaction(record)

    async def _ensure_rest(self, record: TransactionRecord) -> None:
        """Hold again what is still authorized when no hold covers it (a capture that
        consumed a whole hold without splitting it, once it has settled)."""
        if await self._free_holds(record):
            self._mark_authorized(record)
            return
        remaining = await self._remaining(record)
        if remaining <= 0 or record.reservation_id is None:
            return
        if await self._in_flight(record):
            raise Unavailable("a charge of this authorization is still being settled")
        used = await self._gw(record.channel).get_reservation(record.reservation_id)
        if used.state is ReservationState.CAPTURED:
            await self._rehold(record, used, remaining)

    async def _rehold(
        self, record: TransactionRecord, used: Reservation, remaining: Decimal
    ) -> Reservation | None:
        """Hold ``remaining`` again on the card of ``used`` (until ``used`` would expire)."""
        adopted = await self._adopt_hold(record, used, remaining)
        if adopted is not None:
            hold: Reservation | None = adopted
        else:
            ttl = (used.expires_at - self.clock.now()).total_seconds()
            hold = None
            message = "The gift-card authorization expired."
            if ttl > 0:
                try:
                    hold = await self._gw(record.channel).reserve(
                        used.barcode,
                        remaining,
                        used.currency,
                        record.transaction_id,
                        None,
                        ttl=ttl,
                    )
                except PaymentRefused:
                    message = (
                        "The rest of the gift-card authorization could not be kept:"
                        " the card's balance is no longer available."
                    )
        if hold is None:
            # Honest: Saleor stops showing an authorization the App no longer holds.
            record.state = TransactionState.LAPSED
            record.updated_at = self.clock.now()
            self.store.save_transaction(record)
            self._report(
                record.api_url,
                record.transaction_id,
                request_psp("lapse", used.id),
                Result.CANCEL_SUCCESS.value,
                remaining,
                message,
            )
            log.warning("saleor.authorization_rest_lost", transaction_id=record.transaction_id)
            return None
        record.reservation_id = hold.id
        record.state = TransactionState.AUTHORIZED
        record.updated_at = self.clock.now()
        self.store.save_transaction(record)
        return hold

    async def _unrecorded_hold(
        self,
        record: TransactionRecord,
        other_than: Reservation,
        fits: Callable[[Reservation], bool],
    ) -> Reservation | None:
        """An active hold of this transaction that the App's store does not know yet."""
        for candidate in await self._gw(record.channel).find_reservations(record.transaction_id):
            if (
                candidate.id != other_than.id
                and candidate.state is ReservationState.ACTIVE
                and fits(candidate)
                and self.store.find_by_reservation(candidate.id) is None
            ):
                return candidate
        return None

    async def _split_rest(
        self, record: TransactionRecord, captured: Reservation, rest: Decimal
    ) -> Reservation | None:
        """The new hold a ``keep_remainder`` capture split off ``captured``, if any."""
        return await self._unrecorded_hold(
            record,
            captured,
            lambda c: c.amount == rest and c.expires_at == captured.expires_at,
        )

    async def _adopt_hold(
        self, record: TransactionRecord, used: Reservation, remaining: Decimal
    ) -> Reservation | None:
        """A re-hold made just before a crash (not yet in the store) is adopted, not doubled."""
        return await self._unrecorded_hold(record, used, lambda c: c.applied_amount == remaining)

    async def _charge(self, action: ActionRecord, record: TransactionRecord | None) -> Outcome:
        if record is None or _authorized(record) is None:
            return self._final(action, "Unknown gift-card transaction.")
        amount = action.amount
        remaining = await self._remaining(record)
        if not amount.is_finite() or amount <= 0 or amount > remaining:
            return self._final(
                action, f"Cannot charge {amount}: {remaining} is authorized and not charged."
            )
        try:
            hold = await self._hold_for(record, amount)
        except _TooLarge as exc:
            return self._final(
                action, f"This authorization is held in parts: charge at most {exc.most} at once."
            )
        if hold is None:
            return self._final(action, "The gift-card authorization is no longer held.")
        if hold.forfeited > 0 and amount != hold.applied_amount:
            return self._final(action, "This gift card can only be charged in full.")
        known = {
            link.operation_id
            for link in self.store.operation_links(record.api_url, record.transaction_id)
        }
        whole = amount == hold.applied_amount
        try:
            operation = await self._gw(record.channel).capture(
                hold.id, None if whole else amount, keep_remainder=not whole
            )
        except PaymentRefused as exc:
            return self._final(action, exc.public_message)
        except InvalidInputError as exc:
            return self._final(action, str(exc))
        except APIError as exc:
            if is_retryable(exc):
                raise
            return self._final(action, f"4WS refused the charge: {exc}")
        wanted = hold.amount if amount == hold.applied_amount else amount
        if operation.id in known or operation.amount != wanted:
            # The provider handed back an earlier capture of this hold (capture is
            # idempotent per reservation): another charge's, to be finished by it first.
            raise Unavailable("an earlier charge of this authorization is being completed")
        self._link(
            record.api_url,
            record.transaction_id,
            operation,
            OperationKind.CAPTURE,
            action.psp_reference,
        )
        action.operation_ids.append(operation.id)
        if amount == remaining:
            record.state = TransactionState.CHARGED
        else:
            rest = await self._split_rest(record, hold, hold.applied_amount - amount)
            if rest is not None:
                record.reservation_id = rest.id  # the rest is held on its own already
                record.state = TransactionState.AUTHORIZED
            else:
                record.state = TransactionState.PARTIAL  # re-held once the capture settles
        record.updated_at = self.clock.now()
        self.store.save_transaction(record)
        operation = await self._gw(record.channel).get_operation(operation.id)
        return self._operation_outcome(action, operation, CHARGE_RESULTS)

    # -- cancel ----------------------------------------------------------------------------

    async def _cancel(self, action: ActionRecord, record: TransactionRecord | None) -> Outcome:
        if record is None or _authorized(record) is None:
            return self._final(action, "Unknown gift-card transaction.")
        remaining = await self._remaining(record)
        if remaining <= 0:
            return self._final(
                action, "Nothing authorized is left to cancel; refund the charges instead."
            )
        if await self._in_flight(record):
            raise Unavailable("a charge of this authorization is still being settled")
        gateway = self._gw(record.channel)
        for hold in await self._free_holds(record):
            try:
                await gateway.release(hold.id)
            except NotFoundInLedgerError as exc:
                return self._final(action, str(exc))
        record.state = TransactionState.CANCELED
        record.updated_at = self.clock.now()
        self.store.save_transaction(record)
        charged = bool(await self._captures(record))
        return Outcome(
            response=transaction_response(
                Result.CANCEL_SUCCESS,
                allowed=CANCEL_RESULTS,
                psp_reference=action.psp_reference,
                amount=remaining,
                time=self.clock.now(),
                actions=[TransactionAction.REFUND] if charged else [],
            )
        )

    # -- refund ----------------------------------------------------------------------------

    async def _refundable(self, record: TransactionRecord, capture: Operation) -> Decimal:
        refunded = Decimal(0)
        for link in self.store.operation_links(record.api_url, record.transaction_id):
            if link.kind != OperationKind.REFUND.value:
                continue
            refund = await self._gw(record.channel).get_operation(link.operation_id)
            if refund.parent_id == capture.id and refund.state is not OperationState.FAILED:
                refunded += refund.amount
        return capture.amount - refunded

    async def _refund(self, action: ActionRecord, record: TransactionRecord | None) -> Outcome:
        """Refund across the charges, newest first, each part posted (and recorded) once.

        Saleor sends one refund for the transaction; after partial charges it may exceed
        any single charge. The parts are 4WS refunds of the newest charge first, each for
        what is left of it; every part is recorded on the action (``operation_ids``) as soon
        as it is posted, so a resumed attempt posts only what is still missing (and adopts
        a part posted before it could be recorded). Saleor hears one outcome, under its
        ``pspReference``: the sum refunded, once every part has settled.
        """
        if record is None:
            return self._final(action, "Nothing was charged on this gift card.")
        captures = await self._captures(record)
        if not captures:
            return self._final(action, "Nothing was charged on this gift card.")
        if any(op.state is not OperationState.SUCCEEDED for op in captures):
            raise Unavailable("a charge is not settled yet; the refund follows once it is")
        gateway = self._gw(record.channel)
        parts = [await gateway.get_operation(op_id) for op_id in action.operation_ids]
        if not parts:
            total = sum([await self._refundable(record, op) for op in captures], Decimal(0))
            if action.amount > total:
                return self._final(action, f"Cannot refund {action.amount}: {total} is refundable.")
        # Links are kept in the order the charges were made; the clock breaks no ties.
        newest_first = sorted(reversed(captures), key=lambda op: op.created_at, reverse=True)
        while not any(part.state is OperationState.FAILED for part in parts):
            missing = action.amount - sum((part.amount for part in parts), Decimal(0))
            if missing <= 0:
                break
            chosen: tuple[Operation, Decimal] | None = None
            for capture in newest_first:
                left = await self._refundable(record, capture)
                if left > 0:
                    chosen = (capture, min(left, missing))
                    break
            if chosen is None:
                break  # refunded meanwhile by another request: report what this one did
            capture, amount = chosen
            try:
                operation = await self._post_refund_part(action, record, capture, amount)
            except _Refused as exc:
                if not parts:
                    return self._final(action, exc.message)
                # Some parts moved money: this request refunds what they did, no more.
                action.amount = sum((part.amount for part in parts), Decimal(0))
                action.last_error = exc.message[:500]
                self.store.save_action(action)
                break
            parts.append(operation)
        if len(parts) == 1 and parts[0].amount == action.amount:
            # One part: its settlement is reported by the event hook, as any refund.
            return self._operation_outcome(action, parts[0], REFUND_RESULTS)
        return self._parts_outcome(action, parts)

    async def _post_refund_part(
        self, action: ActionRecord, record: TransactionRecord, capture: Operation, amount: Decimal
    ) -> Operation:
        gateway = self._gw(record.channel)
        if action.state == ActionState.POSTING:
            # A previous attempt may have posted before it could record the refund: adopt
            # it rather than refund twice (refunds are not idempotent at 4WS).
            linked = {
                link.operation_id
                for link in self.store.operation_links(record.api_url, record.transaction_id)
            }
            for op in await gateway.find_refunds(capture.id):
                if (
                    op.id not in linked
                    and op.amount == amount
                    and (op.state is not OperationState.FAILED)
                ):
                    self._refund_posted(action, record, op)
                    self.store.save_action(action)
                    return op
        action.state = ActionState.POSTING
        action.updated_at = self.clock.now()
        self.store.save_action(action)
        try:
            operation = await gateway.refund(capture.id, amount)
        except PaymentRefused as exc:
            raise _Refused(exc.public_message) from exc
        except InvalidInputError as exc:
            raise _Refused(str(exc)) from exc
        except APIError as exc:
            if is_retryable(exc):
                raise
            # 4WS refused the POST: nothing was applied (an ambiguous POST does not raise,
            # it comes back as an ``unknown`` operation).
            raise _Refused(f"4WS refused the refund: {exc}") from exc
        self._refund_posted(action, record, operation)
        self.store.save_action(action)  # recorded before the next part is posted
        return await gateway.get_operation(operation.id)

    def _parts_outcome(self, action: ActionRecord, parts: list[Operation]) -> Outcome:
        """A refund in several parts: one outcome once every part has settled."""
        if any(part.state not in _SETTLED for part in parts):
            # Not final yet: the runner looks again each maintenance pass (the event hook
            # does not report single parts, see ``events.py``).
            return Outcome(error="refund parts are still settling")
        refunded = sum(
            (part.amount for part in parts if part.state is OperationState.SUCCEEDED), Decimal(0)
        )
        if refunded == 0:
            return self._final(action, "The gift-card refund failed at 4WS.")
        message = (
            ""
            if refunded == action.amount
            else f"Refunded {refunded}; the rest could not be refunded to the gift card."
        )
        return Outcome(
            response=transaction_response(
                Result.REFUND_SUCCESS,
                allowed=REFUND_RESULTS,
                psp_reference=action.psp_reference,
                amount=refunded,
                time=self.clock.now(),
                message=message,
                actions=[TransactionAction.REFUND],
            )
        )

    def _refund_posted(
        self, action: ActionRecord, record: TransactionRecord, operation: Operation
    ) -> Outcome:
        self._link(
            record.api_url,
            record.transaction_id,
            operation,
            OperationKind.REFUND,
            action.psp_reference,
        )
        action.operation_ids.append(operation.id)
        return self._operation_outcome(action, operation, REFUND_RESULTS)

    async def _refund_recorded(
        self, action: ActionRecord, record: TransactionRecord, operation: Operation
    ) -> Outcome:
        self._refund_posted(action, record, operation)
        operation = await self._gw(record.channel).get_operation(operation.id)
        return self._operation_outcome(action, operation, REFUND_RESULTS)

    def _operation_outcome(
        self, action: ActionRecord, operation: Operation, allowed: frozenset[Result]
    ) -> Outcome:
        """Settled already: the outcome now; still moving: the event hook reports it."""
        success = Result.CHARGE_SUCCESS if allowed is CHARGE_RESULTS else Result.REFUND_SUCCESS
        if operation.state is OperationState.SUCCEEDED:
            return Outcome(
                response=transaction_response(
                    success,
                    allowed=allowed,
                    psp_reference=action.psp_reference,
                    amount=operation.amount,
                    time=self.clock.now(),
                    actions=[TransactionAction.REFUND],
                )
            )
        if operation.state is OperationState.FAILED:
            return self._final(
                action, operation.message or "The gift-card operation failed at 4WS."
            )
        return Outcome(pending=True)
