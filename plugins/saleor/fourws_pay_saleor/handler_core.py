"""What every webhook handler shares: one worker per transaction, a time budget per answer,
linking operations to Saleor transactions, and remembering what Saleor was told.

The time budget exists because Saleor waits about 20 s in total for a sync answer
(``WEBHOOK_SYNC_TIMEOUT``) and records a failure for anything slower, while the App may wait
for a lock, a card read and 4WS retries. Work therefore runs as a task: when it is not done
within ``AppConfig.sync_budget`` the answer is *pending* (``*_REQUEST`` / an asynchronous
``pspReference``), the task keeps going, and its outcome is reported with
``transactionEventReport`` under the ``pspReference`` already given. A money step is never
cancelled half-way.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, TypeVar

from fourws_pay.clock import Clock
from fourws_pay.errors import (
    AmbiguousOutcomeError,
    CardBusyError,
    InvalidStateError,
    LedgerError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from fourws_pay.logs import get_logger
from fourws_pay.payments.models import Operation, OperationKind, ReservationState
from fourws_pay_saleor.config import AppConfig
from fourws_pay_saleor.gateway import Gateway
from fourws_pay_saleor.payloads import WebhookEvent
from fourws_pay_saleor.reporter import ANSWERED
from fourws_pay_saleor.responses import TERMINAL_RESULTS, payment_method_details
from fourws_pay_saleor.store import AppStore, OperationLink, ReportRecord
from fourws_pay_saleor.versions import SaleorVersion

log = get_logger(component="saleor.handlers")

T = TypeVar("T")

UNIFORM_REFUSAL = "This gift card cannot be used."
NO_CODE = "Enter a gift card code."
TRY_LATER = "The gift card service is temporarily unavailable. Please try again."
THROTTLED = "Too many attempts. Please try again later."


class Unavailable(Exception):
    """The step cannot be done now (busy, 4WS unreachable): nothing moved, try again later."""


# Errors after which nothing moved and the same step may simply be tried again later.
RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    TransportError,
    ServerError,
    RateLimitedError,
    AmbiguousOutcomeError,
    LedgerError,
    InvalidStateError,  # the hold or operation is not in a state to act on yet
    CardBusyError,  # another balance change of the card is unresolved (manual review too)
    Unavailable,
)


def is_retryable(exc: BaseException) -> bool:
    """True for trouble that passes (an error class may also say so with ``retryable``)."""
    return isinstance(exc, RETRYABLE_ERRORS) or bool(getattr(exc, "retryable", False))


def request_psp(prefix: str, *parts: str) -> str:
    """A ``pspReference`` chosen before money moves, stable for the same request.

    Saleor groups a transaction's events by ``pspReference``: the outcome of a pending
    request clears it only when it is reported under the same reference, so the reference
    must exist before the outcome does.
    """
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    return f"4ws-{prefix}-{digest}"


def delivery_key(api_url: str, event: WebhookEvent, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (api_url.encode(), b"\0", event.value.encode(), b"\0", body):
        digest.update(part)
    return digest.hexdigest()


class HandlerCore:
    """State and steps shared by the session and action handlers."""

    def __init__(
        self,
        config: AppConfig,
        store: AppStore,
        gateway: Gateway,
        clock: Clock,
        channel_gateways: Mapping[str, Gateway] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.gateway = gateway
        self.channel_gateways = dict(channel_gateways or {})
        self.clock = clock
        self._owner = uuid.uuid4().hex
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._background: set[asyncio.Task[Any]] = set()

    def _gw(self, channel: str | None) -> Gateway:
        """The 4WS tenant/entity of a Saleor channel (the default gateway for the rest).

        A transaction stays with the gateway of the channel it started in: its channel is
        stored with it, so charges, refunds and the runner find the same ledger.
        """
        if channel is not None and channel in self.channel_gateways:
            return self.channel_gateways[channel]
        return self.gateway

    # -- exclusion -----------------------------------------------------------------------

    @asynccontextmanager
    async def _exclusive(
        self, api_url: str, transaction_id: str, wait: float | None = None
    ) -> AsyncIterator[None]:
        """One worker per transaction; ``Unavailable`` after ``wait`` seconds (lease_wait)."""
        key = f"{api_url}\0{transaction_id}"
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            wait = self.config.lease_wait if wait is None else wait
            if lock.locked() and wait <= 0:
                raise Unavailable("another request is working on this transaction")
            try:
                # An uncontended lock is taken at once (wait_for(timeout=0) would not).
                await asyncio.wait_for(lock.acquire(), timeout=wait if lock.locked() else None)
            except TimeoutError:
                raise Unavailable("another request is working on this transaction") from None
            try:
                deadline = self.clock.monotonic() + wait
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
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    # -- time budget ---------------------------------------------------------------------

    async def _within_budget(
        self, work: Awaitable[T], on_late: Callable[[Any], None]
    ) -> tuple[bool, T | None]:
        """Run ``work``; (True, result) if it ends within the budget, else (False, None).

        A late task is not cancelled: ``on_late`` gets its result when it ends (to report
        what the pending answer promised). Exceptions of a late task are logged only.
        """
        task: asyncio.Task[T] = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=self.config.sync_budget)
        if task in done:
            return True, task.result()
        self._background.add(task)

        def finished(t: asyncio.Task[T]) -> None:
            self._background.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                log.error("saleor.late_work_failed", error=repr(exc))
                return
            try:
                on_late(t.result())
            except Exception as error:  # the outbox or the runner picks it up again
                log.error("saleor.late_result_failed", error=repr(error))

        task.add_done_callback(finished)
        log.warning("saleor.answered_pending", budget=self.config.sync_budget)
        return False, None

    async def drain(self) -> None:
        """Wait for work that outlived its answer (tests; a graceful shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- helpers -------------------------------------------------------------------------

    def _details(self, code: str, version: SaleorVersion | None) -> dict[str, Any] | None:
        """``paymentMethodDetails`` in a shape the calling Saleor accepts, or None.

        Type ``GIFT_CARD`` exists from Saleor 3.23; 3.21 and 3.22 reject it (and drop the
        whole answer), so they get type ``OTHER``; an unknown or older version gets none.
        """
        if not self.config.send_payment_method_details or version is None:
            return None
        if version < (3, 21):
            return None
        kind = "GIFT_CARD" if version >= (3, 23) else "OTHER"
        return payment_method_details(
            self.config.payment_method_name, self.config.payment_method_brand, code, kind
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

    def _report(
        self,
        api_url: str,
        transaction_id: str,
        psp: str,
        result: str,
        amount: Decimal | None,
        message: str = "",
    ) -> None:
        """Queue an outcome Saleor did not get in an answer.

        A row marked ``answered`` for it (written when the answer was built, before it
        turned out to be too late) is queued again: that answer was never given.
        """
        self.store.requeue_answered(api_url, psp, result, self.clock.now())
        self.store.enqueue_report(
            ReportRecord(
                api_url=api_url,
                transaction_id=transaction_id,
                psp_reference=psp,
                type=result,
                amount=amount,
                time=self.clock.now(),
                message=message[:512],
            ),
            self.clock.now(),
        )

    def _link(
        self,
        api_url: str,
        transaction_id: str,
        operation: Operation,
        kind: OperationKind,
        psp: str,
    ) -> None:
        self.store.link_operation(
            OperationLink(
                operation_id=operation.id,
                api_url=api_url,
                transaction_id=transaction_id,
                kind=kind.value,
                amount=operation.amount,
                currency=operation.currency,
                psp_reference=psp,
            )
        )

    async def _release_quietly(self, reservation_id: str | None, channel: str | None) -> bool:
        """Release a hold; True if it is no longer held (released or expired)."""
        if reservation_id is None:
            return False
        try:
            reservation = await self._gw(channel).release(reservation_id)
        except Exception as exc:  # the hold expires on its own anyway
            log.warning("saleor.release_failed", reservation_id=reservation_id, error=repr(exc))
            return False
        return reservation.state in (ReservationState.RELEASED, ReservationState.EXPIRED)
