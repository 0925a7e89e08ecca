"""What every payment flow shares: settings, ledger, clock, hooks, and a few verbs.

Events to hosts (``emit``), the card's critical section (``writing``), reading a card (the
one 4WS read every flow makes), the host's cart and callback URL, and finding a
reservation or operation by id with a typed error. No rule and no state change lives here:
the state machine is ``transitions``, the flows are ``checkout`` and ``settlement``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pluggy

from fourws_pay.api.retry import worst_case_seconds
from fourws_pay.clock import Clock
from fourws_pay.errors import APIFailure, InvalidInputError, NotFoundInLedgerError
from fourws_pay.logs import get_logger, mask_barcode
from fourws_pay.payments.cache import CardCache, CardRead
from fourws_pay.payments.effects import PaymentFlow, ReadCard
from fourws_pay.payments.models import (
    CartSnapshot,
    EventKind,
    IssuedCard,
    IssuedCardState,
    Operation,
    OperationKind,
    OperationState,
    PaymentEvent,
    Reservation,
)
from fourws_pay.payments.throttle import LookupThrottle
from fourws_pay.settings import Settings

if TYPE_CHECKING:
    from fourws_pay.payments.ports import LedgerStore, LedgerTransaction

log = get_logger()


class CoreBase:
    """The provider's state and plumbing; ``PaymentsCore`` adds the flows."""

    def __init__(
        self,
        settings: Settings,
        store: LedgerStore,
        clock: Clock,
        plugin_manager: pluggy.PluginManager,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.pm = plugin_manager
        self.cards = CardCache(settings.check_cache_ttl, clock)
        self.throttle = LookupThrottle(
            window=settings.throttle_window, limit=settings.throttle_limit, clock=clock
        )
        # A crashed send is recognised after the longest a live send can take.
        # A crashed worker is recognised only after the longest a live one can take, so
        # that reconcile never turns a live request into "unknown" or "failed" (inv. 6):
        # ``sending`` covers the POST with the client's own retries of unsent attempts;
        # ``prepared`` covers the card read between the claim and ``sending``.
        margin = 5.0
        self.send_grace = timedelta(seconds=worst_case_seconds(settings, idempotent=False) + margin)
        self.prepared_grace = timedelta(
            seconds=worst_case_seconds(settings, idempotent=True) + margin
        )

    # ------------------------------------------------------------------ plumbing

    def emit(
        self,
        kind: EventKind,
        *,
        reservation: Reservation | None = None,
        operation: Operation | None = None,
        issued_card: IssuedCard | None = None,
        message: str = "",
        **details: Any,
    ) -> None:
        """Tell hosts (after the commit); a failing listener never breaks a payment.

        Events carry masked barcodes only (invariant 12): a listener that needs the card
        asks the provider for the reservation by id.
        """
        event = PaymentEvent(
            kind=kind,
            at=self.clock.now(),
            reservation=replace(reservation, barcode=reservation.masked_barcode)
            if reservation is not None
            else None,
            operation=replace(operation, barcode=operation.masked_barcode)
            if operation is not None
            else None,
            message=message,
            details=details,
            issued_card=replace(issued_card, barcode=issued_card.masked_barcode)
            if issued_card is not None
            else None,
        )
        subject = reservation or operation or issued_card
        barcode = subject.barcode if subject is not None else None
        log.info(
            f"fourws_pay.payments.{kind.value}",
            barcode=mask_barcode(barcode) if barcode else None,
            reservation_id=reservation.id if reservation else None,
            operation_id=operation.id if operation else None,
            issued_card_id=issued_card.id if issued_card else None,
            state=operation.state.value if operation else None,
            message=message,
        )
        try:
            self.pm.hook.fourws_pay_payment_event(event=event)
        except Exception as exc:
            log.error(
                "fourws_pay.payments.event_hook_failed", kind=kind.value, error=type(exc).__name__
            )

    @contextmanager
    def writing(self, barcode: str) -> Iterator[LedgerTransaction]:
        """The card's critical section for a write; the check cache forgets the card after."""
        try:
            with self.store.card_transaction(barcode) as tx:
                yield tx
        finally:
            self.cards.evict(barcode)

    def cart(self, order_ref: str) -> CartSnapshot | None:
        result: CartSnapshot | None = self.pm.hook.fourws_pay_cart_snapshot(order_ref=order_ref)
        return result

    def callback_base_url(self) -> str:
        url: str | None = self.pm.hook.fourws_pay_callback_base_url()
        return (url or self.settings.callback_base_url).rstrip("/")

    def read(self, barcode: str, *, cached: bool) -> PaymentFlow[CardRead]:
        """Read a card; ``success: false`` from 4WS means "no such card" here.

        Drivers answer ``ReadCard`` with a ``CardRead`` whose ``read_at`` is the instant
        before the request left (a settlement landing during the request counts as possibly
        not reflected in the balance).
        """
        read_at = self.clock.now()
        try:
            result: CardRead = yield ReadCard(barcode, cached=cached)
        except APIFailure:
            return CardRead(None, read_at)
        return result

    def _reservation(self, reservation_id: str) -> Reservation:
        if not isinstance(reservation_id, str):
            raise InvalidInputError("reservation id must be a string")
        reservation = self.store.get_reservation(reservation_id)
        if reservation is None:
            raise NotFoundInLedgerError(f"no reservation {reservation_id!r}")
        return reservation

    def _operation(self, operation_id: str) -> Operation:
        if not isinstance(operation_id, str):
            raise InvalidInputError("operation id must be a string")
        operation = self.store.get_operation(operation_id)
        if operation is None:
            raise NotFoundInLedgerError(f"no operation {operation_id!r}")
        return operation

    # ---------------------------------------------------------------------- check

    def _emit_settlement(self, operation: Operation) -> None:
        if operation.kind in (OperationKind.GENERATE, OperationKind.ACTIVATE):
            self._emit_issuing_settlement(operation)
            return
        reservation = self.store.get_reservation(operation.reservation_id)
        capture = operation.kind is OperationKind.CAPTURE
        if operation.state is OperationState.SUCCEEDED:
            kind = EventKind.SETTLED if capture else EventKind.REFUNDED
        elif operation.state is OperationState.FAILED:
            kind = EventKind.CAPTURE_FAILED if capture else EventKind.REFUND_FAILED
        else:
            kind = EventKind.MANUAL_REVIEW
        self.emit(
            kind, reservation=reservation, operation=operation, message=operation.message or ""
        )

    def _emit_issuing_settlement(self, operation: Operation) -> None:
        """A generation or activation settled: say what it means for its sold card."""
        sold = self.store.get_issued_card(operation.reservation_id)
        if operation.state is OperationState.MANUAL_REVIEW:
            kind = EventKind.MANUAL_REVIEW
        elif operation.kind is OperationKind.GENERATE:
            if operation.state is not OperationState.FAILED:
                return  # the barcodes are in; the activation is the event that matters
            kind = EventKind.ISSUE_FAILED
        elif sold is not None and sold.state is IssuedCardState.ACTIVE:
            kind = EventKind.CARD_ISSUED
        elif operation.state is OperationState.FAILED:
            kind = EventKind.ISSUE_FAILED
        else:
            return
        self.emit(kind, operation=operation, issued_card=sold, message=operation.message or "")

    # ------------------------------------------------------------ sweep, reconcile
