"""TRANSACTION_CHARGE_REQUESTED, _REFUND_REQUESTED and _CANCELATION_REQUESTED.

Answers are remembered per delivery (hash of the signed body, which Saleor re-sends
unchanged on retry), so a retried delivery is answered from memory and never acted on twice.
"""

from __future__ import annotations

from typing import Any

from fourws_pay.errors import (
    AmbiguousOutcomeError,
    APIError,
    InvalidInputError,
    InvalidStateError,
    NotFoundInLedgerError,
    PaymentRefused,
    RateLimitedError,
    ServerError,
    TransportError,
)
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    ReservationState,
)
from fourws_pay_saleor.handler_core import HandlerCore, Unavailable, delivery_key
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
from fourws_pay_saleor.store import TransactionRecord, TransactionState


class ActionHandlers(HandlerCore):
    """Acting on an existing transaction: capture, release, refund."""

    # -- *_REQUESTED -----------------------------------------------------------------------

    async def action_requested(
        self,
        api_url: str,
        event: WebhookEvent,
        payload: TransactionActionRequest,
        body: bytes,
    ) -> dict[str, Any]:
        """Dispatch a charge/refund/cancel request, answering a retried delivery from memory."""
        key = delivery_key(api_url, event, body)
        stored = self.store.get_delivery(key)
        if stored is not None:
            return stored
        tx_id = payload.transaction.id
        async with self._exclusive(api_url, tx_id):
            stored = self.store.get_delivery(key)
            if stored is not None:
                return stored
            record = self.store.get_transaction(api_url, tx_id)
            if event is WebhookEvent.TRANSACTION_CHARGE_REQUESTED:
                response = await self._charge(record, payload)
            elif event is WebhookEvent.TRANSACTION_REFUND_REQUESTED:
                response = await self._refund(record, payload)
            elif event is WebhookEvent.TRANSACTION_CANCELATION_REQUESTED:
                response = await self._cancel(record, payload)
            else:  # pragma: no cover - routing guarantees one of the three
                raise ValueError(f"not an action request: {event}")
            self.store.save_delivery(key, api_url, event.value, tx_id, response, self.clock.now())
            self._mark_answered(api_url, tx_id, response)
            return response

    def _action_failure(
        self, result: Result, allowed: frozenset[Result], message: str
    ) -> dict[str, Any]:
        return transaction_response(result, allowed=allowed, message=message, time=self.clock.now())

    async def _charge(
        self, record: TransactionRecord | None, payload: TransactionActionRequest
    ) -> dict[str, Any]:
        if record is None or record.reservation_id is None:
            return self._action_failure(
                Result.CHARGE_FAILURE, CHARGE_RESULTS, "Unknown gift-card transaction."
            )
        amount = payload.action.amount
        existing = None
        if record.capture_operation_id is not None:
            existing = await self.gateway.get_operation(record.capture_operation_id)
            if existing.state is OperationState.FAILED:
                existing = None  # a failed capture may be tried again
        if existing is not None:
            if existing.amount != amount:
                return self._action_failure(
                    Result.CHARGE_FAILURE,
                    CHARGE_RESULTS,
                    "This gift-card authorization was already charged.",
                )
            operation = existing
        else:
            reservation = await self.gateway.get_reservation(record.reservation_id)
            if amount <= 0 or amount > reservation.applied_amount:
                return self._action_failure(
                    Result.CHARGE_FAILURE,
                    CHARGE_RESULTS,
                    f"Cannot charge {amount}: the authorization is for "
                    f"{reservation.applied_amount}.",
                )
            try:
                operation = await self._capture_once(
                    record, None if amount == reservation.applied_amount else amount
                )
            except PaymentRefused as exc:
                return self._action_failure(
                    Result.CHARGE_FAILURE, CHARGE_RESULTS, exc.public_message
                )
            except (InvalidInputError, InvalidStateError) as exc:
                return self._action_failure(Result.CHARGE_FAILURE, CHARGE_RESULTS, str(exc))
        return self._operation_response(
            operation,
            Result.CHARGE_SUCCESS,
            Result.CHARGE_FAILURE,
            CHARGE_RESULTS,
            "The gift card could not be charged.",
        )

    async def _cancel(
        self, record: TransactionRecord | None, payload: TransactionActionRequest
    ) -> dict[str, Any]:
        if record is None or record.reservation_id is None:
            return self._action_failure(
                Result.CANCEL_FAILURE, CANCEL_RESULTS, "Unknown gift-card transaction."
            )
        if record.capture_operation_id is not None:
            return self._action_failure(
                Result.CANCEL_FAILURE,
                CANCEL_RESULTS,
                "The gift card was already charged; refund it instead.",
            )
        try:
            reservation = await self.gateway.release(record.reservation_id)
        except (InvalidStateError, NotFoundInLedgerError) as exc:
            return self._action_failure(Result.CANCEL_FAILURE, CANCEL_RESULTS, str(exc))
        if reservation.state is ReservationState.CAPTURED:
            return self._action_failure(
                Result.CANCEL_FAILURE,
                CANCEL_RESULTS,
                "The gift card was already charged; refund it instead.",
            )
        record.state = TransactionState.CANCELED
        record.updated_at = self.clock.now()
        self.store.save_transaction(record)
        return transaction_response(
            Result.CANCEL_SUCCESS,
            allowed=CANCEL_RESULTS,
            psp_reference=reservation.id,
            amount=payload.action.amount,
            time=self.clock.now(),
            actions=[],
        )

    async def _refund(
        self, record: TransactionRecord | None, payload: TransactionActionRequest
    ) -> dict[str, Any]:
        if record is None or record.capture_operation_id is None:
            return self._action_failure(
                Result.REFUND_FAILURE, REFUND_RESULTS, "Nothing was charged on this gift card."
            )
        capture = await self.gateway.get_operation(record.capture_operation_id)
        if capture.state is not OperationState.SUCCEEDED:
            return self._action_failure(
                Result.REFUND_FAILURE,
                REFUND_RESULTS,
                "The charge is not settled yet; refund it once it is.",
            )
        try:
            operation = await self.gateway.refund(capture.id, payload.action.amount)
        except PaymentRefused as exc:
            return self._action_failure(Result.REFUND_FAILURE, REFUND_RESULTS, exc.public_message)
        except InvalidInputError as exc:
            return self._action_failure(Result.REFUND_FAILURE, REFUND_RESULTS, str(exc))
        except InvalidStateError as exc:
            # The capture is settled (checked above): another operation is in flight.
            raise Unavailable(f"refund not possible now: {exc}") from exc
        except (ServerError, RateLimitedError) as exc:
            raise Unavailable(f"refund not possible now: {exc!r}") from exc
        except APIError as exc:
            # 4WS refused the POST: nothing was applied (an ambiguous POST does not raise,
            # it comes back as an ``unknown`` operation).
            return self._action_failure(
                Result.REFUND_FAILURE, REFUND_RESULTS, f"4WS refused the refund: {exc}"
            )
        except (TransportError, AmbiguousOutcomeError) as exc:
            raise Unavailable(f"refund not possible now: {exc!r}") from exc
        self._link(record.api_url, record.transaction_id, operation, OperationKind.REFUND)
        operation = await self.gateway.get_operation(operation.id)
        return self._operation_response(
            operation,
            Result.REFUND_SUCCESS,
            Result.REFUND_FAILURE,
            REFUND_RESULTS,
            "The refund failed.",
        )

    def _operation_response(
        self,
        operation: Operation,
        success: Result,
        failure: Result,
        allowed: frozenset[Result],
        failure_message: str,
    ) -> dict[str, Any]:
        """Settled already: answer the outcome now; still pending: report it later."""
        if operation.state is OperationState.SUCCEEDED:
            return transaction_response(
                success,
                allowed=allowed,
                psp_reference=operation.id,
                amount=operation.amount,
                time=self.clock.now(),
                actions=[TransactionAction.REFUND],
            )
        if operation.state is OperationState.FAILED:
            return transaction_response(
                failure,
                allowed=allowed,
                psp_reference=operation.id,
                amount=operation.amount,
                message=operation.message or failure_message,
                time=self.clock.now(),
            )
        return async_response(operation.id)
