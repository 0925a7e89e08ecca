"""Turning payment events into queued Saleor reports (the ``fourws_pay_payment_event`` hook).

The hook runs inside payment calls and must not do network I/O, so it only writes a row to
the report outbox; ``SaleorReporter.flush()`` sends it. Events for operations the App did not
start (another host sharing the ledger) are ignored: only operations linked to a Saleor
transaction in the App's store are reported, under the ``pspReference`` Saleor was given for
the request (``OperationLink.psp``).

An outcome that turns around after Saleor was told it succeeded (an operation settled, then
resolved by an operator as not applied) is reported as ``CHARGE_BACK`` / ``REFUND_REVERSE``:
Saleor subtracts those from the charged/refunded amount
(``saleor/payment/transaction_item_calculations.py``), where a late ``*_FAILURE`` would
only be weighed against the success by time.

A hold that expires is reported as ``CANCEL_SUCCESS`` for the amount it still held, so
Saleor's ``authorized_value`` drops by exactly what the App no longer holds whatever was
charged before; the message says it expired.
"""

from __future__ import annotations

from collections.abc import Callable

from fourws_pay.clock import Clock
from fourws_pay.hookspecs import hookimpl
from fourws_pay.logs import get_logger
from fourws_pay.payments.models import EventKind, Operation, OperationKind, PaymentEvent
from fourws_pay_saleor.handler_core import request_psp
from fourws_pay_saleor.store import AppStore, ReportRecord, TransactionState

log = get_logger(component="saleor.events")

PLUGIN_NAME = "fourws_pay_saleor"

_REPORT_TYPES: dict[tuple[OperationKind, EventKind], str] = {
    (OperationKind.CAPTURE, EventKind.SETTLED): "CHARGE_SUCCESS",
    (OperationKind.CAPTURE, EventKind.CAPTURE_FAILED): "CHARGE_FAILURE",
    (OperationKind.REFUND, EventKind.REFUNDED): "REFUND_SUCCESS",
    (OperationKind.REFUND, EventKind.REFUND_FAILED): "REFUND_FAILURE",
    (OperationKind.CAPTURE, EventKind.MANUAL_REVIEW): "INFO",
    (OperationKind.REFUND, EventKind.MANUAL_REVIEW): "INFO",
}

# A failure after the success was reported turns the success around.
_SUCCESS_OF = {"CHARGE_FAILURE": "CHARGE_SUCCESS", "REFUND_FAILURE": "REFUND_SUCCESS"}
_REVERSAL_OF = {"CHARGE_SUCCESS": "CHARGE_BACK", "REFUND_SUCCESS": "REFUND_REVERSE"}

_MANUAL_REVIEW_MESSAGE = (
    "The gift-card operation could not be confirmed by 4WS and awaits manual review."
)


class SaleorEventListener:
    """A pluggy plugin: register it on the payments' plugin manager."""

    def __init__(
        self,
        store: AppStore,
        clock: Clock,
        on_enqueued: Callable[[], None],
        callback_base_url: str | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_enqueued = on_enqueued
        self._callback_base_url = callback_base_url

    @hookimpl
    def fourws_pay_callback_base_url(self) -> str | None:
        """4WS callbacks go to this App's receiver (``AppConfig.callback_path``)."""
        return self._callback_base_url

    @hookimpl
    def fourws_pay_payment_event(self, event: PaymentEvent) -> None:
        try:
            if self.record(event):
                self._on_enqueued()
        except Exception as exc:  # a listener must never break a payment step
            log.error("saleor.event_listener_failed", kind=str(event.kind), error=repr(exc))

    def record(self, event: PaymentEvent) -> bool:
        """Queue the report an event calls for; True when a new report was queued."""
        operation = event.operation
        if operation is not None:
            report_type = _REPORT_TYPES.get((operation.kind, event.kind))
            if report_type is None:
                return False
            link = self._store.get_operation_link(operation.id)
            if link is None:
                return False
            if operation.kind is OperationKind.REFUND and self._is_refund_part(link.psp, operation):
                # One part of a refund spread over several charges: the action runner
                # reports the request once, for the sum, when every part has settled.
                self._on_enqueued()
                return False
            success = _SUCCESS_OF.get(report_type)
            if success is not None and self._store.has_report(link.api_url, link.psp, success):
                report_type = _REVERSAL_OF[success]
            message = _MANUAL_REVIEW_MESSAGE if report_type == "INFO" else event.message
            if report_type != "INFO":
                self._store.finish_action(link.psp, self._clock.now())
            return self._store.enqueue_report(
                ReportRecord(
                    api_url=link.api_url,
                    transaction_id=link.transaction_id,
                    psp_reference=link.psp,
                    type=report_type,
                    amount=None if report_type == "INFO" else operation.amount,
                    time=event.at,
                    message=(message or "")[:512],
                ),
                self._clock.now(),
            )
        if event.kind is EventKind.EXPIRED and event.reservation is not None:
            record = self._store.find_by_reservation(event.reservation.id)
            if (
                record is None
                or record.action_type != "AUTHORIZATION"
                or record.state in (TransactionState.CANCELED, TransactionState.FAILED)
            ):
                return False
            # Every hold of an authorization (parts split off by partial charges, a part a
            # failed capture left) expires at the same instant; each reports its own amount.
            record.state = TransactionState.LAPSED
            record.updated_at = self._clock.now()
            self._store.save_transaction(record)
            return self._store.enqueue_report(
                ReportRecord(
                    api_url=record.api_url,
                    transaction_id=record.transaction_id,
                    psp_reference=request_psp("lapse", event.reservation.id),
                    type="CANCEL_SUCCESS",
                    amount=event.reservation.applied_amount,
                    time=event.at,
                    message="The gift-card authorization expired.",
                ),
                self._clock.now(),
            )
        return False

    def _is_refund_part(self, psp: str, operation: Operation) -> bool:
        action = self._store.get_action(psp)
        return action is not None and operation.amount != action.amount
