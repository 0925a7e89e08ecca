"""PAYMENT_GATEWAY_INITIALIZE_SESSION, TRANSACTION_INITIALIZE_SESSION and _PROCESS_SESSION.

Initialize answers are remembered per ``idempotencyKey``; each step is written before the
next so that a repeated or resumed initialize never reserves or captures twice.

The ``pspReference`` of a session is chosen (and stored) before the card is touched, so an
initialize that outlives its time budget can be answered ``AUTHORIZATION_REQUEST`` /
``CHARGE_REQUEST`` and its outcome reported later under the same reference. The shape of
the answer (``paymentMethodDetails``) is decided from the ``Saleor-Version`` header before
money moves: an answer Saleor would reject must never follow a reservation.

An authorization is held for ``AppConfig.authorization_ttl`` (default 7 days): shops charge
on fulfilment, not at checkout. The hold is the App's own (4WS has no holds), so the card
can still be spent at a till meanwhile; the capture re-checks the balance and fails
cleanly (``CHARGE_FAILURE``) if it was.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from fourws_pay.errors import (
    AmbiguousOutcomeError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    InvalidInputError,
    InvalidStateError,
    PaymentRefused,
    PermissionDeniedError,
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
from fourws_pay_saleor.handler_core import (
    NO_CODE,
    THROTTLED,
    TRY_LATER,
    UNIFORM_REFUSAL,
    HandlerCore,
    Unavailable,
    is_retryable,
    request_psp,
)
from fourws_pay_saleor.jsonutil import dumps
from fourws_pay_saleor.payloads import (
    ActionType,
    PaymentGatewayInitializeSession,
    TransactionSession,
    gift_card_code,
)
from fourws_pay_saleor.responses import (
    SESSION_RESULTS,
    Result,
    TransactionAction,
    gateway_response,
    transaction_response,
)
from fourws_pay_saleor.store import TransactionRecord, TransactionState
from fourws_pay_saleor.versions import SaleorVersion, too_old

# 4WS errors about the App's own credentials or settings: never a verdict on the card.
_CONFIGURATION_ERRORS = (AuthenticationError, PermissionDeniedError, ConfigurationError)

log = get_logger(component="saleor.handlers")

OUTDATED = "This Saleor version is too old for the gift-card App; nothing was charged."


def _failure_result(action: ActionType) -> Result:
    if action is ActionType.AUTHORIZATION:
        return Result.AUTHORIZATION_FAILURE
    return Result.CHARGE_FAILURE


def session_psp(api_url: str, transaction_id: str) -> str:
    """The reference of a session, known before the card is touched."""
    return request_psp("session", api_url, transaction_id)


class SessionHandlers(HandlerCore):
    """Starting a payment: balance check, reserve, reserve + capture."""

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
        source_channel = payload.source_object.channel if payload.source_object else None
        channel = source_channel.slug if source_channel else None
        try:
            # A balance check moves no money: past the budget it is simply given up.
            decision = await asyncio.wait_for(
                self._gw(channel).check(code, amount, currency, client_key),
                timeout=self.config.sync_budget,
            )
        except TimeoutError:
            return gateway_response({**info, "ok": False, "message": TRY_LATER})
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
        self, action: ActionType, message: str, psp_reference: str | None
    ) -> dict[str, Any]:
        """A decline. It carries the session's reference: Saleor 3.24 requires one on every
        session result but ``*_ACTION_REQUIRED`` and otherwise books its own generic failure
        instead of this message (``create_transaction_event_for_transaction_session``)."""
        result = _failure_result(action)
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
        self, api_url: str, payload: TransactionSession, version: SaleorVersion | None = None
    ) -> dict[str, Any]:
        if too_old(version):
            return self._failure(
                payload.action.action_type, OUTDATED, session_psp(api_url, payload.transaction.id)
            )
        code = gift_card_code(payload.data)
        key = payload.idempotency_key
        fingerprint = self._fingerprint(payload, code)
        if key:
            stored = self.store.get_idempotent(api_url, key)
            if stored is not None:
                return self._replay(api_url, payload, stored, fingerprint)

        async def work() -> tuple[dict[str, Any], bool]:
            async with self._exclusive(api_url, payload.transaction.id):
                if key:
                    stored = self.store.get_idempotent(api_url, key)
                    if stored is not None:
                        return self._replay(api_url, payload, stored, fingerprint), True
                response, final = await self._start_session(api_url, payload, code, version)
                if key and final:
                    self.store.save_idempotent(
                        api_url,
                        key,
                        fingerprint,
                        payload.transaction.id,
                        response,
                        self.clock.now(),
                    )
                return response, final

        return await self._session_within_budget(api_url, payload, work)

    async def _session_within_budget(
        self,
        api_url: str,
        payload: TransactionSession,
        work: Callable[[], Awaitable[tuple[dict[str, Any], bool]]],
    ) -> dict[str, Any]:
        """Answer in time, or ``*_REQUEST`` now and the outcome by report later."""
        tx_id = payload.transaction.id
        psp = session_psp(api_url, tx_id)

        async def guarded() -> tuple[dict[str, Any], bool]:
            try:
                return await work()
            except Unavailable:
                return self._failure(payload.action.action_type, TRY_LATER, psp), False

        def late(result: tuple[dict[str, Any], bool]) -> None:
            response, _ = result
            outcome = response.get("result")
            if outcome in (Result.CHARGE_REQUEST.value, Result.AUTHORIZATION_REQUEST.value):
                return  # the capture's settlement is reported by the event hook
            self._report(
                api_url,
                tx_id,
                psp,
                str(outcome),
                response.get("amount") if str(outcome).endswith("_SUCCESS") else None,
                str(response.get("message", "")),
            )

        in_time, result = await self._within_budget(guarded(), late)
        if in_time:
            assert result is not None
            return result[0]
        pending = (
            Result.AUTHORIZATION_REQUEST
            if payload.action.action_type is ActionType.AUTHORIZATION
            else Result.CHARGE_REQUEST
        )
        return transaction_response(
            pending,
            allowed=SESSION_RESULTS,
            psp_reference=psp,
            amount=payload.action.amount,
            time=self.clock.now(),
            actions=[],
        )

    def _replay(
        self,
        api_url: str,
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
            session_psp(api_url, payload.transaction.id),
        )

    async def transaction_process(
        self, api_url: str, payload: TransactionSession, version: SaleorVersion | None = None
    ) -> dict[str, Any]:
        """Report where the transaction stands, starting it if it was never initialized."""
        if too_old(version):
            return self._failure(
                payload.action.action_type, OUTDATED, session_psp(api_url, payload.transaction.id)
            )
        code = gift_card_code(payload.data)

        async def work() -> tuple[dict[str, Any], bool]:
            async with self._exclusive(api_url, payload.transaction.id):
                return await self._start_session(api_url, payload, code, version)

        return await self._session_within_budget(api_url, payload, work)

    async def _start_session(
        self,
        api_url: str,
        payload: TransactionSession,
        code: str | None,
        version: SaleorVersion | None,
    ) -> tuple[dict[str, Any], bool]:
        """Reserve (and capture) for one Saleor transaction, resuming from what is stored.

        Returns the answer and whether it is final (worth remembering for the idempotency
        key): transient trouble is answered as a failure but not remembered.
        """
        action = payload.action
        tx_id = payload.transaction.id
        psp = session_psp(api_url, tx_id)
        now = self.clock.now()
        record = self.store.get_transaction(api_url, tx_id)
        if record is not None and record.response is not None:
            if record.action_type != action.action_type.value or record.amount != action.amount:
                return self._failure(
                    action.action_type, "This transaction was already started differently.", psp
                ), True
            return await self._current_status(record), True
        if action.action_type not in (ActionType.AUTHORIZATION, ActionType.CHARGE):
            return self._failure(action.action_type, "Unsupported action.", psp), True
        if code is None:
            return self._failure(action.action_type, NO_CODE, psp), True
        if not action.amount.is_finite() or action.amount <= 0:
            return self._failure(action.action_type, "Nothing to pay.", psp), True
        details = self._details(code, version)  # decided before money moves
        if record is None:
            channel = payload.source_object.channel if payload.source_object else None
            record = TransactionRecord(
                api_url=api_url,
                transaction_id=tx_id,
                action_type=action.action_type.value,
                amount=action.amount,
                currency=action.currency,
                state=TransactionState.STARTED,
                created_at=now,
                updated_at=now,
                psp_reference=psp,
                channel=channel.slug if channel else None,
            )
            self.store.save_transaction(record)
        client_key = payload.customer_ip_address or (
            payload.source_object.id if payload.source_object else tx_id
        )
        if record.reservation_id is None:
            # A reservation made just before a crash (not yet in our store) is adopted
            # rather than doubled: the order reference is the Saleor transaction id.
            record.reservation_id = await self._adoptable(record)
        if record.reservation_id is None:
            authorization = action.action_type is ActionType.AUTHORIZATION
            try:
                reservation = await self._gw(record.channel).reserve(
                    code,
                    action.amount,
                    action.currency,
                    tx_id,
                    client_key,
                    ttl=self.config.authorization_ttl if authorization else None,
                )
            except PaymentRefused as exc:
                return self._finish_failed(record, action.action_type, exc.public_message), True
            except ThrottledError:
                return self._failure(action.action_type, THROTTLED, psp), False
            except InvalidInputError as exc:
                return self._finish_failed(record, action.action_type, str(exc)), True
            except (TransportError, APIError, AmbiguousOutcomeError) as exc:
                log.warning("saleor.reserve_unavailable", transaction_id=tx_id, error=repr(exc))
                return self._failure(action.action_type, TRY_LATER, psp), False
            record.reservation_id = reservation.id
            record.state = TransactionState.AUTHORIZED
            record.authorized = reservation.applied_amount
            record.updated_at = self.clock.now()
            self.store.save_transaction(record)
            log.info(
                "saleor.reserved",
                transaction_id=tx_id,
                reservation_id=reservation.id,
                barcode=mask_barcode(code),
            )
        if action.action_type is ActionType.AUTHORIZATION:
            reservation = await self._gw(record.channel).get_reservation(record.reservation_id)
            record.authorized = reservation.applied_amount
            response = transaction_response(
                Result.AUTHORIZATION_SUCCESS,
                allowed=SESSION_RESULTS,
                psp_reference=psp,
                amount=reservation.applied_amount,
                # Honest about the App's own hold: the merchant sees when it lapses.
                message=f"Gift card held until {reservation.expires_at:%Y-%m-%d %H:%M} UTC.",
                time=self.clock.now(),
                actions=[TransactionAction.CHARGE, TransactionAction.CANCEL],
                details=details,
            )
            return self._finish(record, response), True
        try:
            operation = await self._capture_once(record, psp)
        except PaymentRefused as exc:
            await self._release_quietly(record.reservation_id, record.channel)
            return self._finish_failed(record, action.action_type, exc.public_message), True
        except (InvalidInputError, InvalidStateError) as exc:
            if not isinstance(exc, InvalidInputError) and is_retryable(exc):
                return await self._give_up_charge(record, action.action_type), False
            await self._release_quietly(record.reservation_id, record.channel)
            return self._finish_failed(record, action.action_type, str(exc)), True
        except Unavailable:
            return await self._give_up_charge(record, action.action_type), False
        response = self._charge_session_response(operation, psp, details)
        return self._finish(record, response), True

    async def _give_up_charge(
        self, record: TransactionRecord, action: ActionType
    ) -> dict[str, Any]:
        """Nothing was posted: let the hold go so the card is not blocked, answer failure.

        A fresh attempt with the same transaction starts afresh.
        """
        if await self._release_quietly(record.reservation_id, record.channel):
            record.reservation_id = None
            record.state = TransactionState.STARTED
            record.updated_at = self.clock.now()
            self.store.save_transaction(record)
        return self._failure(action, TRY_LATER, record.psp_reference)

    async def _capture_once(self, record: TransactionRecord, psp: str) -> Operation:
        """Capture the whole reservation of a CHARGE session unless that already happened.

        ``capture`` is idempotent per reservation (it hands back the capture in flight or
        settled) and an ambiguous POST comes back as an ``unknown`` operation that
        ``reconcile`` settles, so a resumed request never posts twice. A capture that
        failed is forgotten so that a new attempt can try again.
        """
        assert record.reservation_id is not None
        if record.capture_operation_id is not None:
            previous = await self._gw(record.channel).get_operation(record.capture_operation_id)
            if previous.state is OperationState.FAILED:
                record.capture_operation_id = None
        if record.capture_operation_id is None:
            reservation = await self._gw(record.channel).get_reservation(record.reservation_id)
            if (
                reservation.state is not ReservationState.ACTIVE
                and reservation.operation_id is None
            ):
                raise InvalidInputError(
                    f"the authorization is {reservation.state.value} and cannot be charged"
                )
            try:
                operation = await self._gw(record.channel).capture(record.reservation_id, None)
            except (PaymentRefused, InvalidInputError):
                raise
            except (APIError, ConfigurationError) as exc:
                if is_retryable(exc):
                    raise Unavailable(f"capture not possible now: {exc!r}") from exc
                if isinstance(exc, _CONFIGURATION_ERRORS):
                    # The App's 4WS credentials or settings, not the shopper's card: say
                    # "try again" (nothing was applied, the hold is let go) and tell staff.
                    log.error(
                        "saleor.fourws_configuration_refused",
                        transaction_id=record.transaction_id,
                        error=type(exc).__name__,
                        status=getattr(exc, "status_code", None),
                    )
                    raise Unavailable(
                        f"4WS refused the App's credentials or configuration ({type(exc).__name__})"
                    ) from exc
                raise PaymentRefused(
                    RefusalReason.NOT_A_GIFT_CARD,
                    f"4WS refused the capture: {exc}",
                    public_message="The gift card could not be charged.",
                ) from exc
            except Exception as exc:
                if is_retryable(exc):
                    raise Unavailable(f"capture not possible now: {exc!r}") from exc
                raise
            record.capture_operation_id = operation.id
            record.state = TransactionState.CHARGE_PENDING
            record.updated_at = self.clock.now()
            self.store.save_transaction(record)
        operation = await self._gw(record.channel).get_operation(record.capture_operation_id)
        self._link(record.api_url, record.transaction_id, operation, OperationKind.CAPTURE, psp)
        # Read again after linking: a settlement that landed before the link existed was
        # not queued by the event hook, so the answer must carry it.
        return await self._gw(record.channel).get_operation(record.capture_operation_id)

    async def _adoptable(self, record: TransactionRecord) -> str | None:
        for reservation in await self._gw(record.channel).find_reservations(record.transaction_id):
            if (
                reservation.state in (ReservationState.ACTIVE, ReservationState.CAPTURED)
                and reservation.applied_amount <= record.amount
                and reservation.currency == record.currency
                and self.store.find_by_reservation(reservation.id) is None
            ):
                log.info(
                    "saleor.reservation_adopted",
                    transaction_id=record.transaction_id,
                    reservation_id=reservation.id,
                )
                record.authorized = reservation.applied_amount
                return reservation.id
        return None

    def _charge_session_response(
        self, operation: Operation, psp: str, details: dict[str, Any] | None
    ) -> dict[str, Any]:
        if operation.state is OperationState.SUCCEEDED:
            return transaction_response(
                Result.CHARGE_SUCCESS,
                allowed=SESSION_RESULTS,
                psp_reference=psp,
                amount=operation.amount,
                time=self.clock.now(),
                actions=[TransactionAction.REFUND],
                details=details,
            )
        if operation.state is OperationState.FAILED:
            return transaction_response(
                Result.CHARGE_FAILURE,
                allowed=SESSION_RESULTS,
                psp_reference=psp,
                amount=operation.amount,
                message=operation.message or "The gift card could not be charged.",
                time=self.clock.now(),
                details=details,
            )
        return transaction_response(
            Result.CHARGE_REQUEST,
            allowed=SESSION_RESULTS,
            psp_reference=psp,
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
        return self._finish(record, self._failure(action, message, record.psp_reference))

    async def _current_status(self, record: TransactionRecord) -> dict[str, Any]:
        """The stored answer, refreshed for a charge that was still pending."""
        stored = record.response or {}
        if record.capture_operation_id is None or stored.get("result") != "CHARGE_REQUEST":
            return stored
        operation = await self._gw(record.channel).get_operation(record.capture_operation_id)
        if operation.state not in (OperationState.SUCCEEDED, OperationState.FAILED):
            return stored
        psp = record.psp_reference or str(stored.get("pspReference", ""))
        return self._charge_session_response(operation, psp, stored.get("paymentMethodDetails"))
