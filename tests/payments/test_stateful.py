"""Hypothesis drives random shop histories; the books must balance after every step.

Steps: reserve, release, capture, deliver 4WS's queue (normally, or with callbacks
dropped, duplicated, delayed or sent before the POST's answer), ambiguous POSTs, forged
callbacks, an in-shop spend behind our back, time passing, a restart of the shop process
(a new provider on the same ledger), and reconcile. After each step the auditor checks
invariants 1, 3 and 5 against the sandbox's books, and every successful reservation is
checked against what the card could hold at that moment (invariant 2).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from fourws_pay import (
    AmbiguousOutcomeError,
    CallbackRejected,
    FourWSError,
    InvalidStateError,
    PaymentRefused,
)
from fourws_pay.payments.models import OperationState, Reservation
from fourws_pay.sandbox.faults import Fault
from tests.payments.harness import Shop, undecided

CARDS = ("7100000000001", "7100000000002")
AMOUNTS = st.sampled_from(["5.00", "12.50", "20.00", "33.33", "60.00"])
CALLBACK_FAULTS = st.sampled_from([None, "drop", "duplicate", "delay", "before_response", "hang"])


class ShopHistory(RuleBasedStateMachine):
    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp())
        self.shop = Shop(self.tmp)
        for barcode in CARDS:
            self.shop.card(barcode, amount="100.00")

    def teardown(self) -> None:
        self.shop.payments.client.close()
        self.shop.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(target=reservations, card=st.sampled_from(CARDS), amount=AMOUNTS)
    def reserve(self, card: str, amount: str) -> Reservation | None:
        could_hold = self.shop.sandbox.balance(card) - self.shop.held(card)
        try:
            r = self.shop.payments.reserve(card, amount=amount, currency="EUR", order_ref="H")
        except (PaymentRefused, FourWSError):
            return None
        assert r.amount <= could_hold, "over-reservation (invariant 2)"
        return r

    @rule(reservation=consumes(reservations))
    def release(self, reservation: Reservation | None) -> None:
        if reservation is None:
            return
        with contextlib.suppress(InvalidStateError):
            self.shop.payments.release(reservation.id)

    @rule(reservation=reservations, fault=CALLBACK_FAULTS)
    def capture(self, reservation: Reservation | None, fault: str | None) -> None:
        if reservation is None:
            return
        faults = {
            "drop": Fault.drop_callback(),
            "duplicate": Fault.duplicate_callback(3),
            "delay": Fault.delay_callback(120),
            "before_response": Fault.callback_before_response(),
            "hang": Fault.hang(after_enqueue=True),
        }
        if fault is not None:
            self.shop.sandbox.faults.add("update_giftcard", faults[fault])
        with contextlib.suppress(
            PaymentRefused, InvalidStateError, AmbiguousOutcomeError, FourWSError
        ):
            self.shop.payments.capture(reservation.id)
        self.shop.sandbox.faults.clear()

    @rule()
    def deliver(self) -> None:
        self.shop.sandbox.process_queue()

    @rule(seconds=st.sampled_from([1, 60, 900, 4000]))
    def time_passes(self, seconds: int) -> None:
        self.shop.clock.advance(seconds)

    @rule(card=st.sampled_from(CARDS), amount=st.sampled_from(["1.00", "7.00"]))
    def spend_in_shop(self, card: str, amount: str) -> None:
        with contextlib.suppress(Exception):
            self.shop.sandbox.spend_in_shop(card, amount)

    @rule(data=st.data())
    def forged_callback(self, data: st.DataObject) -> None:
        ops = self.shop.store.list_operations()
        if not ops:
            return
        op = data.draw(st.sampled_from(ops))
        before = self.shop.store.get_operation(op.id)
        with contextlib.suppress(CallbackRejected):
            self.shop.payments.handle_callback(f"/cb/{op.id}/forged", b'{"success": true}')
        assert self.shop.store.get_operation(op.id) == before

    @rule()
    def restart(self) -> None:
        self.shop.payments.client.close()
        self.shop.payments = self.shop.new_provider()

    @rule()
    def reconcile(self) -> None:
        self.shop.payments.reconcile()

    @rule()
    def reconcile_much_later(self) -> None:
        """Past every callback deadline and reconcile window: all must be decided."""
        s = self.shop.payments.settings
        for _ in range(10):  # each pass may post what was queued behind the last one
            self.shop.sandbox.process_queue()
            self.shop.clock.advance(s.callback_timeout + s.reconcile_window + s.read_timeout + 60)
            self.shop.payments.reconcile()
            if not undecided(self.shop.store.list_operations()):
                break
        left = undecided(self.shop.store.list_operations())
        assert not left, f"{[op.state.value for op in left]} after every window (invariant 6)"

    @invariant()
    def books_balance(self) -> None:
        self.shop.audit()

    @invariant()
    def terminal_states_stay(self) -> None:
        for op in self.shop.store.list_operations():
            if op.state in (OperationState.SUCCEEDED, OperationState.FAILED):
                assert self.shop.consumption_counts()[op.id] == (
                    1 if op.state is OperationState.SUCCEEDED else 0
                )


TestShopHistory = ShopHistory.TestCase
TestShopHistory.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
