"""What every webhook handler shares: one worker per transaction, linking operations to
Saleor transactions, capturing at most once, and remembering what Saleor was told."""

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
    PaymentRefused,
    RateLimitedError,
    ServerError,
    TransportError,
)
from fourws_pay.logs import get_logger
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    RefusalReason,
    ReservationState,
)
from fourws_pay_saleor.config import AppConfig
from fourws_pay_saleor.gateway import Gateway
from fourws_pay_saleor.payloads import WebhookEvent
from fourws_pay_saleor.reporter import ANSWERED
from fourws_pay_saleor.responses import TERMINAL_RESULTS, payment_method_details
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


def delivery_key(api_url: str, event: WebhookEvent, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (api_url.encode(), b"\0", event.value.encode(), b"\0", body):
        digest.update(part)
    return digest.hexdigest()


class HandlerCore:
    """State and steps shared by the session and action handlers."""

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
