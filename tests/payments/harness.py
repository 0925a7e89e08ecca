"""A shop wired to the in-process sandbox, and the auditor that checks the money invariants.

The auditor compares our ledger with the sandbox's books, which are the source of truth for
what 4WS actually did. Every consumption we post carries ``payload.operation_id``, so each
record in the sandbox's books can be traced to one of our operations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fourws_pay import (
    CallbackRejected,
    FourWSError,
    GiftCardPayments,
    ManualClock,
    PaymentEvent,
    Settings,
    SQLiteStore,
    hookimpl,
    make_plugin_manager,
)
from fourws_pay.payments.core import HOLDING_OPERATION_STATES, ReadCard, counts_as_held
from fourws_pay.payments.effects import PostGenerate, RequestPdf
from fourws_pay.payments.models import (
    OperationKind,
    OperationState,
    ReservationState,
)
from fourws_pay.sandbox import Sandbox


class EventRecorder:
    def __init__(self) -> None:
        self.events: list[PaymentEvent] = []

    @hookimpl
    def fourws_pay_payment_event(self, event: PaymentEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind.value for e in self.events]


@dataclass
class Shop:
    """Sandbox + ledger + provider with callbacks delivered in-process."""

    tmp: Path
    clock: ManualClock = field(default_factory=ManualClock)
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    ledger: Any = None  # a store of any kind; a SQLite file under ``tmp`` by default

    def __post_init__(self) -> None:
        self.sandbox = Sandbox(clock=self.clock)
        self.recorder = EventRecorder()
        self.callback_statuses: list[int] = []
        self.callback_urls: dict[str, str] = {}
        self.store = self.ledger or SQLiteStore(self.tmp / "ledger.db")
        self.payments = self.new_provider()
        self.sandbox.set_callback_handler(self.deliver)

    def settings(self) -> Settings:
        values = self.sandbox.settings.model_dump()
        values.update(self.settings_overrides)
        return Settings(**values)

    def new_provider(self) -> GiftCardPayments:
        """A provider on the same ledger file, as after a restart."""
        client = self.sandbox.client(self.settings())
        original = client.update_giftcard

        def recording(update: Any) -> Any:
            self.callback_urls[update.payload["operation_id"]] = update.callback
            return original(update)

        client.update_giftcard = recording  # type: ignore[method-assign]
        return GiftCardPayments(
            settings=self.settings(),
            client=client,
            store=self.store,
            clock=self.clock,
            plugin_manager=make_plugin_manager(load_entrypoints=False, plugins=[self.recorder]),
        )

    def deliver(self, url: str, body: bytes) -> int:
        try:
            status = self.payments.handle_callback(urlsplit(url).path, body).status_code
        except CallbackRejected as exc:
            status = exc.status_code
        self.callback_statuses.append(status)
        return status

    def card(self, barcode: str = "7000000000001", amount: str = "100.00", **kw: Any) -> str:
        self.sandbox.add_giftcard(barcode, amount=Decimal(amount), **kw)
        return barcode

    def settle(self) -> None:
        """4WS works through its queue; then a second passes, as between checkout steps
        (a card read starting at the very instant of a settlement is treated as possibly
        not reflecting it, which is conservative)."""
        self.sandbox.run_until_idle()
        self.clock.advance(1)

    # ------------------------------------------------------------------ audit

    def consumption_counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for record in self.sandbox.applied_operations():
            payload = record.payload
            if isinstance(payload, dict) and "operation_id" in payload:
                counts[str(payload["operation_id"])] += 1
        return counts

    def audit(self) -> None:
        """Invariants 1, 3 and 5 against the sandbox's books; raises AssertionError."""
        applied = self.consumption_counts()
        ops = [o for o in self.store.list_operations() if o.kind is not OperationKind.GENERATE]
        for op in ops:
            times = applied[op.id]
            assert times <= 1, f"{op.id} was applied {times} times by 4WS (invariant 3)"
            if op.state is OperationState.SUCCEEDED:
                assert times == 1, f"{op.id} succeeded in the ledger but 4WS never applied it"
            if op.state is OperationState.FAILED:
                assert times == 0, f"{op.id} failed in the ledger but 4WS applied it"
        for reservation in self.store.list_reservations():
            captured = [
                op
                for op in ops
                if op.reservation_id == reservation.id
                and op.kind is OperationKind.CAPTURE
                and op.state is OperationState.SUCCEEDED
            ]
            assert len(captured) <= 1, f"{reservation.id} captured {len(captured)} times"
            total = sum((op.amount for op in captured), Decimal(0))
            assert total <= reservation.amount, "captured more than reserved"
            if captured:
                assert reservation.state is ReservationState.CAPTURED
        # Conservation per card: what 4WS took for us = what our ledger says we took,
        # counting operations whose outcome is still open (unknown/manual review) on the
        # side where 4WS put them.
        cards = {op.barcode for op in ops}
        for barcode in cards:
            taken_by_4ws = sum(
                (
                    -r.amount
                    for r in self.sandbox.applied_operations(barcode)
                    if isinstance(r.payload, dict) and "operation_id" in r.payload
                ),
                Decimal(0),
            )
            ours = Decimal(0)
            for op in ops:
                if op.barcode != barcode:
                    continue
                settled = op.state is OperationState.SUCCEEDED
                open_and_applied = op.state in HOLDING_OPERATION_STATES and applied[op.id] == 1
                if settled or open_and_applied:
                    ours += op.amount if op.kind is OperationKind.CAPTURE else -op.amount
            assert taken_by_4ws == ours, (
                f"conservation broken on {barcode[-4:]}: 4WS moved {taken_by_4ws}, "
                f"ledger accounts for {ours} (invariant 1)"
            )
        # No capture refunded beyond what it took (invariants 18 and 19): every refund that
        # may still be or was applied counts against its capture.
        for capture in ops:
            if capture.kind is not OperationKind.CAPTURE:
                continue
            given_back = sum(
                (
                    op.amount
                    for op in ops
                    if op.kind is OperationKind.REFUND
                    and op.parent_id == capture.id
                    and op.state is not OperationState.FAILED
                ),
                Decimal(0),
            )
            assert given_back <= capture.amount, (
                f"capture {capture.id} of {capture.amount} refunded {given_back} (over-refund)"
            )

    def held(self, barcode: str) -> Decimal:
        now = self.clock.now()
        ops = [
            op
            for op in self.store.list_operations(HOLDING_OPERATION_STATES)
            if op.kind is OperationKind.CAPTURE and op.barcode == barcode
        ]
        pinned = {op.reservation_id for op in ops}
        return sum(
            (
                r.amount
                for r in self.store.list_reservations([ReservationState.ACTIVE])
                if r.barcode == barcode and counts_as_held(r, now, pinned)
            ),
            Decimal(0),
        )


def undecided(operations: list[Any]) -> list[Any]:
    """Operations that invariant 6 says should be decided by now: not terminal, not in
    manual review (an operator decides), and not queued behind one in manual review on the
    same card (the queue waits for that operator too, invariant 17)."""
    reviewed = {op.barcode for op in operations if op.state is OperationState.MANUAL_REVIEW}
    return [
        op
        for op in operations
        if not op.is_terminal
        and op.state is not OperationState.MANUAL_REVIEW
        and not (op.state is OperationState.QUEUED and op.barcode in reviewed)
    ]


Moment = str  # "before" or "after" an effect is carried out


def run_stepped(
    payments: GiftCardPayments,
    flow: Any,
    between: Callable[[Moment, Any], None],
) -> Any:
    """Drive one provider flow effect by effect, as ``GiftCardPayments`` does, calling
    ``between(moment, effect)`` just before and just after each 4WS call is carried out.

    A flow holds no ledger transaction across an effect, so ``between`` is exactly where a
    second worker (another process sharing the ledger, 4WS's queue, a callback) can act
    between two steps of this one: after the card read and before the lock, after
    ``sending`` was committed and before the POST, after the POST and before ``enqueued``.
    """
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        between("before", effect)
        try:
            if isinstance(effect, ReadCard):
                value = payments._read(effect)
            elif isinstance(effect, PostGenerate):
                value = payments.client.generate_giftcards(
                    effect.item_code, effect.count, effect.callback
                )
            elif isinstance(effect, RequestPdf):
                value = payments.client.giftcard_pdf(effect.barcodes)
            else:
                value = payments.client.update_giftcard(effect.update)
        except FourWSError as exc:
            error = exc
        between("after", effect)
