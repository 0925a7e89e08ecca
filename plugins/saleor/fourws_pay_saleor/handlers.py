"""What the App does for each verified webhook: Saleor's semantics mapped onto 4WS payments.

======================================  =============================================
Saleor                                  4WS payments
======================================  =============================================
PAYMENT_GATEWAY_INITIALIZE_SESSION      ``check`` (balance check; uniform refusals)
TRANSACTION_INITIALIZE_SESSION          AUTHORIZATION: ``reserve`` -> AUTHORIZATION_SUCCESS
                                        CHARGE: ``reserve`` + ``capture`` -> CHARGE_REQUEST,
                                        the settlement is reported later
TRANSACTION_PROCESS_SESSION             the current state of the same transaction
TRANSACTION_CHARGE_REQUESTED            ``capture`` (async answer, reported when settled)
TRANSACTION_CANCELATION_REQUESTED       ``release`` -> CANCEL_SUCCESS
TRANSACTION_REFUND_REQUESTED            ``refund`` (async answer, reported when settled)
======================================  =============================================

Exactly-once, as far as money is concerned:

- each step's result (reservation id, capture operation id) is written to the App's store
  before the next step, and a repeated or resumed request reads it back instead of
  reserving or capturing again; a reservation already captured gives back its operation;
- INITIALIZE_SESSION answers are remembered per ``idempotencyKey``; the same key with the
  same input gets the same answer, with different input a failure;
- ``*_REQUESTED`` answers are remembered per delivery (hash of the signed body, which Saleor
  re-sends unchanged on retry);
- one worker at a time works on a transaction: an asyncio lock within the process and a
  lease row in the store across processes.

Declines are answers (``*_FAILURE`` with HTTP 200); ``Unavailable`` (4WS unreachable, the
outcome unknown, another worker busy) becomes a 503 so that Saleor retries what it retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from fourws_pay.clock import Clock
from fourws_pay.errors import (
    AmbiguousOutcomeError,
    APIError,
    InvalidInputError,
    InvalidStateError,
    NotFoundInLedgerError,
    PaymentRefused,
    RateLimitedError,
    ServerError,
    ThrottledError,
    TransportError,
)
from fourws_pay.logs import get_logger, mask_barcode
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    RefusalReason,
    ReservationState,
)
from fourws_pay_saleor.config import AppConfig
from fourws_pay_saleor.gateway import Gateway
from fourws_pay_saleor.jsonutil import dumps
from fourws_pay_saleor.payloads import (
    ActionType,
    PaymentGatewayInitializeSession,
    TransactionActionRequest,
    TransactionSession,
    WebhookEvent,
    gift_card_code,
)
from fourws_pay_saleor.reporter import ANSWERED
from fourws_pay_saleor.responses import (
    CANCEL_RESULTS,
    CHARGE_RESULTS,
    REFUND_RESULTS,
    SESSION_RESULTS,
    TERMINAL_RESULTS,
    Result,
    TransactionAction,
    async_response,
    gateway_response,
    payment_method_details,
    transaction_response,
)
from fourws_pay_saleor.store import (
    AppStore,
    OperationLink,
    ReportRecord,
    TransactionRecord,
    TransactionState,
)

log = get_logger(component="saleor.handlers")

UNIFORM_REFUSAL = "This gift card cannot be used."
NO_CODE = "Enter a gift card code."
TRY_LATER = "The gift card service is temporarily unavailable. Please try again."
THROTTLED = "Too many attempts. Please try again later."


class Unavailable(Exception):
    """The request cannot be answered now; the App replies 503 and stores nothing."""


def _delivery_key(api_url: str, event: WebhookEvent, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (api_url.encode(), b"\0", event.value.encode(), b"\0", body):
        digest.update(part)
    return digest.hexdigest()


class PaymentHandlers:
    """The business side of every webhook; the ASGI layer has already verified the request."""

    def __init__(self, config: AppConfig, store: AppStore, gateway: Gateway, clock: Clock) -> None:
        self.config = config
        self.store = store
        self.gateway = gateway
        self.clock = clock
        self._owner = uuid.uuid4().hex
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    # -- exclusion -----------------------------------------------------------------------

    @asynccontextmanager
    async def _exclusive(self, api_url: str, transaction_id: str) -> AsyncIterator[None]:
        key = f"{api_url}\0{transaction_id}"
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                deadline = self.clock.monotonic() + self.config.lease_wait
                while not self.store.try_lease(
                    key, self._owner, self.clock.now().timestamp(), self.config.lease_ttl
                ):
                    if self.clock.monotonic() >= deadline:
                        raise Unavailable("another worker is processing this transaction")
                    await self.clock.asleep(0.05)
                try:
                    yield
                finally:
                    self.store.release_lease(key, self._owner)
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    # -- helpers -------------------------------------------------------------------------

    def _details(self, code: str) -> dict[str, Any] | None:
        if not self.config.send_payment_method_details:
            return None
        return payment_method_details(
            self.config.payment_method_name, self.config.payment_method_brand, code
        )

    def _mark_answered(self, api_url: str, transaction_id: str, response: dict[str, Any]) -> None:
        """Remember a terminal outcome Saleor got in a response, so it is not reported too."""
        result = response.get("result")
        psp = response.get("pspReference")
        if result not in TERMINAL_RESULTS or not psp:
            return
        self.store.enqueue_report(
            ReportRecord(
                api_url=api_url,
                transaction_id=transaction_id,
                psp_reference=str(psp),
                type=str(result),
                amount=response.get("amount"),
                time=self.clock.now(),
                state=ANSWERED,
            ),
            self.clock.now(),
        )

    def _link(
        self, api_url: str, transaction_id: str, operation: Operation, kind: OperationKind
    ) -> None:
        self.store.link_operation(
            OperationLink(
                operation_id=operation.id,
                api_url=api_url,
                transaction_id=transaction_id,
                kind=kind.value,
                amount=operation.amount,
                currency=operation.currency,
            )
        )

    # -- PAYMENT_GATEWAY_INITIALIZE_SESSION -----------------------------------------------

    async def gateway_initialize(
        self, api_url: str, payload: PaymentGatewayInitializeSession
    ) -> dict[str, Any]:
        """Describe the gateway and, when ``data`` carries a code, check that card.

        A refusal is uniform and shows no balance, whatever the reason, so the endpoint
        cannot be used to learn which codes exist.
        """
        info: dict[str, Any] = {"gateway": "fourws-giftcard", "dataFields": ["code"]}
        code = gift_card_code(payload.data)
        if code is None:
            return gateway_response(info)
        gross = payload.source_object.gross if payload.source_object else None
        amount = payload.amount if payload.amount is not None else (gross.amount if gross else None)
        currency = gross.currency if gross else None
        if amount is None or currency is None or amount <= 0:
            return gateway_response({**info, "ok": False, "message": "Nothing to pay."})
        client_key = payload.source_object.id if payload.source_object else None
        try:
            decision = await self.gateway.check(code, amount, currency, client_key)
        except ThrottledError:
            return gateway_response({**info, "ok": False, "message": THROTTLED})
        except InvalidInputError:
            return gateway_response({**info, "ok": False, "message": UNIFORM_REFUSAL})
        except (TransportError, APIError, AmbiguousOutcomeError):
            return gateway_response({**info, "ok": False, "message": TRY_LATER})
        if not decision.ok:
            return gateway_response(
                {**info, "ok": False, "message": decision.public_message or UNIFORM_REFUSAL}
            )
        return gateway_response(
            {
                **info,
                "ok": True,
                "usableAmount": decision.usable_amount,
                "currency": decision.currency,
                "coversFullAmount": decision.covers_full_amount,
                "lastChars": code[-4:] if len(code) > 4 else "",
            }
        )

    # -- TRANSACTION_INITIALIZE_SESSION / TRANSACTION_PROCESS_SESSION ----------------------

    def _failure(
        self, action: ActionType, message: str, psp_reference: str | None = None
    ) -> dict[str, Any]:
        result = (
            Result.AUTHORIZATION_FAILURE
            if action is ActionType.AUTHORIZATION
            else Result.CHARGE_FAILURE
        )
        return transaction_response(
            result,
            allowed=SESSION_RESULTS,
            psp_reference=psp_reference,
            message=message,
            time=self.clock.now(),
        )

    @staticmethod
    def _fingerprint(payload: TransactionSession, code: str | None) -> str:
        material = dumps(
            {
                "transaction": payload.transaction.id,
                "action": payload.action.action_type.value,
                "amount": str(payload.action.amount),
                "currency": payload.action.currency,
                "code": code or "",
            }
        )
        return hashlib.sha256(material.encode()).hexdigest()

    async def transaction_initialize(
        self, api_url: str, payload: TransactionSession
    ) -> dict[str, Any]:
        code = gift_card_code(payload.data)
        key = payload.idempotency_key
        fingerprint = self._fingerprint(payload, code)
        if key:
            stored = self.store.get_idempotent(api_url, key)
            if stored is not None:
                return self._replay(payload, stored, fingerprint)
        async with self._exclusive(api_url, payload.transaction.id):
            if key:
                stored = self.store.get_idempotent(api_url, key)
                if stored is not None:
                    return self._replay(payload, stored, fingerprint)
            response, final = await self._start_session(api_url, payload, code)
            if key and final:
                self.store.save_idempotent(
                    api_url, key, fingerprint, payload.transaction.id, response, self.clock.now()
                )
            return response

    def _replay(
        self,
        payload: TransactionSession,
        stored: tuple[str, dict[str, Any]],
        fingerprint: str,
    ) -> dict[str, Any]:
        stored_fingerprint, response = stored
        if stored_fingerprint == fingerprint:
            return response
        log.warning("saleor.idempotency_key_reused", transaction_id=payload.transaction.id)
        return self._failure(
            payload.action.action_type,
            "This idempotency key was already used for a different payment.",
        )

    async def transaction_process(
        self, api_url: str, payload: TransactionSession
    ) -> dict[str, Any]:
        """Report where the transaction stands, starting it if it was never initialized."""
        code = gift_card_code(payload.data)
        async with self._exclusive(api_url, payload.transaction.id):
            response, _ = await self._start_session(api_url, payload, code)
            return response

    async def _start_session(
        self, api_url: str, payload: TransactionSession, code: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Reserve (and capture) for one Saleor transaction, resuming from what is stored.

        Returns the answer and whether it is final (worth remembering for the idempotency
        key): transient trouble is answered as a failure but not remembered.
        """
        action = payload.action
        tx_id = payload.transaction.id
        now = self.clock.now()
        record = self.store.get_transaction(api_url, tx_id)
        if record is not None and record.response is not None:
            if record.action_type != action.action_type.value or record.amount != action.amount:
                return self._failure(
                    action.action_type, "This transaction was already started differently."
                ), True
            return await self._current_status(record), True
        if action.action_type not in (ActionType.AUTHORIZATION, ActionType.CHARGE):
            return self._failure(action.action_type, "Unsupported action."), True
        if code is None:
            return self._failure(action.action_type, NO_CODE), True
        if not action.amount.is_finite() or action.amount <= 0:
            return self._failure(action.action_type, "Nothing to pay."), True
        if record is None:
            record = TransactionRecord(
                api_url=api_url,
                transaction_id=tx_id,
                action_type=action.action_type.value,
                amount=action.amount,
                currency=action.currency,
                state=TransactionState.STARTED,
                created_at=now,
                updated_at=now,
            )
        client_key = payload.customer_ip_address or (
            payload.source_object.id if payload.source_object else tx_id
        )
        if record.reservation_id is None:
            # A reservation made just before a crash (not yet in our store) is adopted
            # rather than doubled: the order reference is the Saleor transaction id.
            record.reservation_id = await self._adoptable(record)
        if record.reservation_id is None:
            try:
                reservation = await self.gateway.reserve(
                    code, action.amount, action.currency, tx_id, client_key
                )
            except PaymentRefused as exc:
                return self._finish_failed(record, action.action_type, exc.public_message), True
            except ThrottledError:
                return self._failure(action.action_type, THROTTLED), False
            except InvalidInputError as exc:
                return self._finish_failed(record, action.action_type, str(exc)), True
            except (TransportError, APIError, AmbiguousOutcomeError) as exc:
                log.warning("saleor.reserve_unavailable", transaction_id=tx_id, error=repr(exc))
                return self._failure(action.action_type, TRY_LATER), False
            record.reservation_id = reservation.id
            record.state = TransactionState.AUTHORIZED
            record.updated_at = self.clock.now()
            self.store.save_transaction(record)
            log.info(
                "saleor.reserved",
                transaction_id=tx_id,
                reservation_id=reservation.id,
                barcode=mask_barcode(code),
            )
        if action.action_type is ActionType.AUTHORIZATION:
            reservation = await self.gateway.get_reservation(record.reservation_id)
            response = transaction_response(
                Result.AUTHORIZATION_SUCCESS,
                allowed=SESSION_RESULTS,
                psp_reference=reservation.id,
                amount=reservation.applied_amount,
                time=self.clock.now(),
                actions=[TransactionAction.CHARGE, TransactionAction.CANCEL],
                details=self._details(code),
            )
            return self._finish(record, response), True
        try:
            operation = await self._capture_once(record, None)
        except PaymentRefused as exc:
            await self._release_quietly(record.reservation_id)
            return self._finish_failed(record, action.action_type, exc.public_message), True
        except (InvalidInputError, InvalidStateError) as exc:
            await self._release_quietly(record.reservation_id)
            return self._finish_failed(record, action.action_type, str(exc)), True
        except Unavailable:
            # Saleor takes this answer as final for the transaction: let the hold go so
            # the card is not blocked, and start afresh if the same request comes back.
            if await self._release_quietly(record.reservation_id):
                record.reservation_id = None
                record.state = TransactionState.STARTED
                record.updated_at = self.clock.now()
                self.store.save_transaction(record)
            return self._failure(action.action_type, TRY_LATER), False
        response = self._charge_session_response(operation, code)
        return self._finish(record, response), True

    async def _adoptable(self, record: TransactionRecord) -> str | None:
        for reservation in await self.gateway.find_reservations(record.transaction_id):
            if (
                reservation.state in (ReservationState.ACTIVE, ReservationState.CAPTURED)
                and reservation.applied_amount == record.amount
                and reservation.currency == record.currency
            ):
                log.info(
                    "saleor.reservation_adopted",
                    transaction_id=record.transaction_id,
                    reservation_id=reservation.id,
                )
                return reservation.id
        return None

    def _charge_session_response(self, operation: Operation, code: str | None) -> dict[str, Any]:
        details = self._details(code) if code else None
        if operation.state is OperationState.SUCCEEDED:
            return transaction_response(
                Result.CHARGE_SUCCESS,
                allowed=SESSION_RESULTS,
                psp_reference=operation.id,
                amount=operation.amount,
                time=self.clock.now(),
                actions=[TransactionAction.REFUND],
                details=details,
            )
        if operation.state is OperationState.FAILED:
            return transaction_response(
                Result.CHARGE_FAILURE,
                allowed=SESSION_RESULTS,
                psp_reference=operation.id,
                amount=operation.amount,
                message=operation.message or "The gift card could not be charged.",
                time=self.clock.now(),
                details=details,
            )
        return transaction_response(
            Result.CHARGE_REQUEST,
            allowed=SESSION_RESULTS,
            psp_reference=operation.id,
            amount=operation.amount,
            time=self.clock.now(),
            actions=[],
            details=details,
        )

    def _finish(self, record: TransactionRecord, response: dict[str, Any]) -> dict[str, Any]:
        record.response = response
        record.updated_at = self.clock.now()
        self.store.save_transaction(record)
        self._mark_answered(record.api_url, record.transaction_id, response)
        return response

    def _finish_failed(
        self, record: TransactionRecord, action: ActionType, message: str
    ) -> dict[str, Any]:
        record.state = TransactionState.FAILED
        return self._finish(record, self._failure(action, message))

    async def _current_status(self, record: TransactionRecord) -> dict[str, Any]:
        """The stored answer, refreshed for a charge that was still pending."""
        stored = record.response or {}
        if record.capture_operation_id is None or stored.get("result") != "CHARGE_REQUEST":
            return stored
        operation = await self.gateway.get_operation(record.capture_operation_id)
        if operation.state not in (OperationState.SUCCEEDED, OperationState.FAILED):
            return stored
        response = self._charge_session_response(operation, None)
        if "paymentMethodDetails" in stored:
            response["paymentMethodDetails"] = stored["paymentMethodDetails"]
        return response

    async def _capture_once(self, record: TransactionRecord, amount: Decimal | None) -> Operation:
        """Capture the record's reservation unless that already happened; link the operation.

        ``capture`` is idempotent per reservation (it hands back the capture in flight or
        settled), and an ambiguous POST comes back as an ``unknown`` operation that
        ``reconcile`` settles, so calling it again on a resumed request never posts twice.
        A capture that failed is forgotten so that a new charge request can try again.

        Raises ``PaymentRefused`` / ``InvalidInputError`` / ``InvalidStateError`` for
        declines and ``Unavailable`` when 4WS could not be asked.
        """
        assert record.reservation_id is not None
        if record.capture_operation_id is not None:
            previous = await self.gateway.get_operation(record.capture_operation_id)
            if previous.state is OperationState.FAILED:
                record.capture_operation_id = None
        if record.capture_operation_id is None:
            reservation = await self.gateway.get_reservation(record.reservation_id)
            usable = reservation.state is ReservationState.ACTIVE
            if not usable and reservation.operation_id is None:
                raise InvalidStateError(
                    f"the authorization is {reservation.state.value} and cannot be charged"
                )
            try:
                operation = await self.gateway.capture(record.reservation_id, amount)
            except (PaymentRefused, InvalidInputError):
                raise
            except InvalidStateError as exc:
                # Another operation on the card is in flight: worth retrying shortly.
                raise Unavailable(f"capture not possible now: {exc}") from exc
            except (ServerError, RateLimitedError) as exc:
                # The fresh card read before the POST failed: nothing was posted (a POST
                # whose outcome is unclear comes back as an ``unknown`` operation instead).
                raise Unavailable(f"capture not possible now: {exc!r}") from exc
            except APIError as exc:
                raise PaymentRefused(
                    RefusalReason.NOT_A_GIFT_CARD,
                    f"4WS refused the capture: {exc}",
                    public_message="The gift card could not be charged.",
                ) from exc
            except (TransportError, AmbiguousOutcomeError) as exc:
                raise Unavailable(f"capture not possible now: {exc!r}") from exc
            record.capture_operation_id = operation.id
            record.state = TransactionState.CHARGE_PENDING
            record.updated_at = self.clock.now()
            self.store.save_transaction(record)
        operation = await self.gateway.get_operation(record.capture_operation_id)
        self._link(record.api_url, record.transaction_id, operation, OperationKind.CAPTURE)
        # Read again after linking: a settlement that landed before the link existed was
        # not queued by the event hook, so the answer must carry it.
        return await self.gateway.get_operation(record.capture_operation_id)

    async def _release_quietly(self, reservation_id: str | None) -> bool:
        """Release a hold; True if it is no longer held (released or expired)."""
        if reservation_id is None:
            return False
        try:
            reservation = await self.gateway.release(reservation_id)
        except Exception as exc:  # the hold expires on its own anyway
            log.warning("saleor.release_failed", reservation_id=reservation_id, error=repr(exc))
            return False
        return reservation.state in (ReservationState.RELEASED, ReservationState.EXPIRED)

    # -- *_REQUESTED -----------------------------------------------------------------------

    async def action_requested(
        self,
        api_url: str,
        event: WebhookEvent,
        payload: TransactionActionRequest,
        body: bytes,
    ) -> dict[str, Any]:
        """Dispatch a charge/refund/cancel request, answering a retried delivery from memory."""
        key = _delivery_key(api_url, event, body)
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
        if operation.state is OperationState.SUCCEEDED:
            return transaction_response(
                Result.CHARGE_SUCCESS,
                allowed=CHARGE_RESULTS,
                psp_reference=operation.id,
                amount=operation.amount,
                time=self.clock.now(),
                actions=[TransactionAction.REFUND],
            )
        if operation.state is OperationState.FAILED:
            return transaction_response(
                Result.CHARGE_FAILURE,
                allowed=CHARGE_RESULTS,
                psp_reference=operation.id,
                amount=operation.amount,
                message=operation.message or "The gift card could not be charged.",
                time=self.clock.now(),
            )
        return async_response(operation.id)

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
        if operation.state is OperationState.SUCCEEDED:
            return transaction_response(
                Result.REFUND_SUCCESS,
                allowed=REFUND_RESULTS,
                psp_reference=operation.id,
                amount=operation.amount,
                time=self.clock.now(),
                actions=[TransactionAction.REFUND],
            )
        if operation.state is OperationState.FAILED:
            return transaction_response(
                Result.REFUND_FAILURE,
                allowed=REFUND_RESULTS,
                psp_reference=operation.id,
                amount=operation.amount,
                message=operation.message or "The refund failed.",
                time=self.clock.now(),
            )
        return async_response(operation.id)
