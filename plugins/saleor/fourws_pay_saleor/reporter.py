"""Telling Saleor how an asynchronous charge or refund ended: ``transactionEventReport``.

Reports go through an outbox (``AppStore.enqueue_report``): the event hook only writes a
row (hooks must not do network I/O), and ``flush()`` sends what is pending. A row stays
pending until Saleor acknowledged it, so a crash or a Saleor outage delays a report but never
loses it.

Retrying is safe because Saleor deduplicates reports on (pspReference, type, amount): a
report that did arrive before the connection broke comes back as ``alreadyProcessed``.
Transport errors, 429 and 5xx are retried with exponential backoff (through the injected
clock, so tests do not wait); a mutation error such as NOT_FOUND is final and the row is
marked ``rejected`` for a human to look at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from fourws_pay.clock import Clock
from fourws_pay.logs import get_logger
from fourws_pay_saleor.config import AppConfig
from fourws_pay_saleor.jsonutil import dumps, loads
from fourws_pay_saleor.store import AppStore, ReportRecord

log = get_logger(component="saleor.reporter")

REPORT_MUTATION = """
mutation FourWSTransactionEventReport(
  $id: ID!
  $pspReference: String!
  $type: TransactionEventTypeEnum!
  $amount: PositiveDecimal
  $time: DateTime
  $message: String
  $availableActions: [TransactionActionEnum!]
) {
  transactionEventReport(
    id: $id
    pspReference: $pspReference
    type: $type
    amount: $amount
    time: $time
    message: $message
    availableActions: $availableActions
  ) {
    alreadyProcessed
    transactionEvent { id pspReference type }
    errors { field message code }
  }
}
""".strip()

# What the merchant can do once the reported outcome is known, when the App cannot say
# better (``actions_for``: what is actually still held and refundable, at sending time).
_AVAILABLE_ACTIONS: dict[str, list[str]] = {
    "CHARGE_SUCCESS": ["REFUND"],
    "CHARGE_FAILURE": [],
    "REFUND_SUCCESS": ["REFUND"],
    "REFUND_FAILURE": ["REFUND"],
    "CANCEL_SUCCESS": [],
}

ActionsFor = Callable[[str, str, list[str]], Awaitable[list[str]]]

PENDING = "pending"
SENT = "sent"
REJECTED = "rejected"
ANSWERED = "answered"


class _Retry(Exception):
    pass


class _Final(Exception):
    pass


@dataclass(frozen=True)
class FlushResult:
    sent: int
    rejected: int
    pending: int


class SaleorReporter:
    """Sends queued ``transactionEventReport`` mutations with each Saleor's app token."""

    def __init__(
        self,
        store: AppStore,
        http: httpx.AsyncClient,
        clock: Clock,
        config: AppConfig,
        actions_for: ActionsFor | None = None,
    ) -> None:
        self._actions_for = actions_for
        self._store = store
        self._http = http
        self._clock = clock
        self._config = config
        self._lock = asyncio.Lock()

    def variables(self, report: ReportRecord) -> dict[str, Any]:
        variables: dict[str, Any] = {
            "id": report.transaction_id,
            "pspReference": report.psp_reference,
            "type": report.type,
            "time": report.time.isoformat(),
        }
        if report.amount is not None:
            variables["amount"] = report.amount
        if report.message:
            variables["message"] = report.message[:512]
        if report.type in _AVAILABLE_ACTIONS:
            variables["availableActions"] = _AVAILABLE_ACTIONS[report.type]
        return variables

    async def flush(self) -> FlushResult:
        """Send every pending report once (with in-call retries); safe to call any time."""
        async with self._lock:
            sent = rejected = 0
            for report in self._store.reports(PENDING):
                state = await self._deliver(report)
                if state == SENT:
                    sent += 1
                elif state == REJECTED:
                    rejected += 1
            pending = len(self._store.reports(PENDING))
            return FlushResult(sent=sent, rejected=rejected, pending=pending)

    async def _deliver(self, report: ReportRecord) -> str:
        assert report.id is not None
        installation = self._store.get_installation(report.api_url)
        if installation is None or not installation.active:
            # Deleted (token forgotten) or deactivated: keep the row, say nothing.
            self._store.update_report(
                report.id,
                PENDING,
                report.attempts,
                "not installed" if installation is None else "App inactive",
                self._clock.now(),
            )
            return PENDING
        attempts = report.attempts
        error: str | None = None
        for attempt in range(1, self._config.report_max_attempts + 1):
            attempts += 1
            try:
                await self._send(report, installation.token)
            except _Retry as exc:
                error = str(exc)
                if attempt < self._config.report_max_attempts:
                    await self._clock.asleep(self._backoff(attempt))
                continue
            except _Final as exc:
                self._store.update_report(report.id, REJECTED, attempts, str(exc), self._now())
                log.warning(
                    "saleor.report_rejected",
                    api_url=report.api_url,
                    psp_reference=report.psp_reference,
                    type=report.type,
                    error=str(exc),
                )
                return REJECTED
            self._store.update_report(report.id, SENT, attempts, None, self._now())
            log.info(
                "saleor.report_sent",
                api_url=report.api_url,
                psp_reference=report.psp_reference,
                type=report.type,
            )
            return SENT
        self._store.update_report(report.id, PENDING, attempts, error, self._now())
        log.warning(
            "saleor.report_deferred",
            api_url=report.api_url,
            psp_reference=report.psp_reference,
            type=report.type,
            error=error,
        )
        return PENDING

    def _now(self) -> Any:
        return self._clock.now()

    def _backoff(self, attempt: int) -> float:
        wait = self._config.report_backoff_base * 2 ** (attempt - 1)
        return float(min(wait, self._config.report_backoff_max))

    async def _send(self, report: ReportRecord, token: str) -> None:
        variables = self.variables(report)
        if self._actions_for is not None and "availableActions" in variables:
            # Saleor keeps the list of the latest report: say what is possible now.
            variables["availableActions"] = await self._actions_for(
                report.api_url, report.transaction_id, variables["availableActions"]
            )
        body = dumps({"query": REPORT_MUTATION, "variables": variables})
        try:
            response = await self._http.post(
                report.api_url,
                content=body.encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=self._config.http_timeout,
            )
        except httpx.HTTPError as exc:
            raise _Retry(f"transport: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retry(f"HTTP {response.status_code}")
        if response.status_code in {401, 403}:
            # The token may be replaced by a re-install: keep the report pending.
            raise _Retry(f"HTTP {response.status_code}: app token refused")
        if response.status_code != 200:
            raise _Final(f"HTTP {response.status_code}")
        try:
            document = loads(response.content)
        except ValueError:
            raise _Retry("response is not JSON") from None
        if not isinstance(document, dict):
            raise _Retry("response is not a JSON object")
        if document.get("errors"):
            raise _Retry("GraphQL errors: " + _first_message(document["errors"]))
        result = (document.get("data") or {}).get("transactionEventReport")
        if not isinstance(result, dict):
            raise _Retry("no transactionEventReport in the response")
        errors = result.get("errors") or []
        if errors:
            codes = {str(e.get("code")) for e in errors if isinstance(e, dict)}
            if codes == {"ALREADY_EXISTS"}:
                return
            raise _Final("mutation errors: " + ", ".join(sorted(codes)))


def _first_message(errors: Any) -> str:
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("message", ""))[:200]
    return "unknown"
