"""Two workers on one ledger, interleaved at every step: hypothesis looks for lost money.

Worker A reserves, captures and refunds one effect at a time (``run_stepped``). Before and
after each of A's 4WS calls, hypothesis lets the rest of the world act: 4WS works through
its queue (settling A's or B's operations, sending callbacks), worker B (another provider
on the same ledger file) captures, refunds, reconciles or sweeps, time passes, the next POST
meets a 503 that 4WS never enqueued, a hang after enqueueing or a lost callback, and
someone spends on the card in a shop. After every rule the books must balance against the
sandbox's (invariants 1, 3, 5); a granted hold must fit the card (2); a refusal to capture
a granted hold must be explained by an in-shop spend (16).

Captures and refunds that meet a busy card are queued (invariant 17) and posted at their
turn by whoever settles the operation before them: a callback delivered by 4WS's queue, B's
reconcile, or A itself. Every POST is checked as it leaves, A's between its steps and every
other one (a turn given inside a callback, B's) by the clients' wrapper.

Before the fix of the stale-evidence, busy-card and false-refusal races, this machine found
each of them (a capture reconciled as succeeded on another capture's debit; a capture
refused with ``insufficient_balance`` on a card that could pay it).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from fourws_pay import (
    CardBusyError,
    FourWSError,
    GiftCardPayments,
    InvalidStateError,
    OrderAllocationError,
    OrderCaptureError,
    PaymentRefused,
    SQLiteStore,
    make_plugin_manager,
)
from fourws_pay.payments.core import PostUpdate, counts_as_held
from fourws_pay.payments.models import (
    OperationKind,
    OperationState,
    RefusalReason,
    Reservation,
    ReservationState,
)
from fourws_pay.sandbox.faults import Fault
from tests.payments.harness import Shop, run_stepped, undecided

CARDS = ("7200000000001", "7200000000002")
AMOUNTS = st.sampled_from(["10.00", "20.00", "30.00", "33.33", "60.00"])
WORLD = st.sampled_from(
    [
        "settle",
        "settle",
        "settle_one",
        "b_capture",
        "b_refund",
        "b_reconcile",
        "b_sweep",
        "time",
        "post_503",
        "post_hang",
        "drop_callback",
        "spend",
        "b_capture_order",
        "b_refund_order",
    ]
)
ORDERS = ("ORD-A", "ORD-B")  # orders paid with both cards (reserve_order)
REFUND_KEYS = {"r-small": "7.00", "r-large": "25.00"}  # a key always means one amount
FINAL = (OperationState.SUCCEEDED, OperationState.FAILED)
EXPECTED = (CardBusyError, InvalidStateError, PaymentRefused, FourWSError)
ORDER_EXPECTED = (*EXPECTED, OrderAllocationError, OrderCaptureError)


class TwoWorkers(RuleBasedStateMachine):
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp())
        self.shop = Shop(self.tmp)
        for barcode in CARDS:
            self.shop.card(barcode, amount="100.00")
        self.b_store = SQLiteStore(self.tmp / "ledger.db")  # B: its own connections
        self.b = GiftCardPayments(
            settings=self.shop.settings(),
            client=self.shop.sandbox.client(self.shop.settings()),
            store=self.b_store,
            clock=self.shop.clock,
            plugin_manager=make_plugin_manager(load_entrypoints=False),
        )
        self.shop.payments.client.update_giftcard = self.checked(  # type: ignore[method-assign]
            self.shop.payments.client.update_giftcard
        )
        self.b.client.update_giftcard = self.checked(  # type: ignore[method-assign]
            self.b.client.update_giftcard
        )
        self.stepping_post = False  # A's own POST, checked by ``world``'s ``between``
        self.spends: Counter[str] = Counter()
        self.order: dict[str, int] = {}  # reservation id -> creation rank (ids are random)
        self.spends_at_grant: dict[str, int] = {}
        # Per order, an upper bound of what plain refund() calls (A's and B's, 5.00 each)
        # may have given back on its captures: the rest of its refunds are its plans'.
        self.plain_refunds: Counter[str] = Counter()

    def teardown(self) -> None:
        self.shop.payments.client.close()
        self.b.close()
        self.shop.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------ the rest of the world

    def pick(self, data: st.DataObject, items: list[Any], label: str) -> Any:
        """One of ``items``, chosen the same way on every replay: random ids must not
        decide the order, and the draw's shape must not depend on how many there are."""
        ranked = (
            sorted(
                items,
                key=lambda x: (self.order.get(getattr(x, "reservation_id", x.id), -1), str(x.kind)),
            )
            if items and hasattr(items[0], "kind")
            else sorted(items, key=lambda x: self.order.get(x.id, -1))
        )
        return ranked[data.draw(st.integers(0, 63), label=label) % len(ranked)]

    def world(self, data: st.DataObject, card: str | None = None) -> Callable[[str, Any], None]:
        """The world acting around each of A's 4WS calls; for a capture or refund of
        ``card``, the evidence is also checked as the POST leaves (invariant 15)."""
        spends_at_start = self.spends[card] if card else 0

        def between(moment: str, effect: Any) -> None:
            if card and moment == "before" and isinstance(effect, PostUpdate):
                self.evidence_is_sound(effect.update, card, spends_at_start)
            self.stepping_post = moment == "before" and isinstance(effect, PostUpdate)
            label = f"world {moment} {type(effect).__name__}"
            for action in data.draw(st.lists(WORLD, max_size=2), label=label):
                self.act(action, data)

        return between

    def act(self, action: str, data: st.DataObject) -> None:
        shop = self.shop
        if action == "settle":
            shop.sandbox.run_until_idle()
        elif action == "settle_one":
            shop.sandbox.process_queue()
        elif action == "b_capture":
            active = shop.store.list_reservations([ReservationState.ACTIVE])
            if active:
                target = self.pick(data, active, "B captures")
                with contextlib.suppress(*EXPECTED):
                    self.b.capture(target.id)
        elif action == "b_refund":
            settled = [
                op
                for op in shop.store.list_operations([OperationState.SUCCEEDED])
                if op.kind is OperationKind.CAPTURE
            ]
            if settled:
                target = self.pick(data, settled, "B refunds")
                self.count_plain_refund(target)
                with contextlib.suppress(*EXPECTED):
                    self.b.refund(target.id, amount="5.00")
        elif action == "b_reconcile":
            self.b.reconcile()
        elif action == "b_sweep":
            self.b.sweep()
        elif action == "time":
            shop.clock.advance(data.draw(st.sampled_from([1, 60, 900, 4000]), label="seconds"))
        elif action == "post_503":
            shop.sandbox.faults.add("update_giftcard", Fault.server_error(503))
        elif action == "post_hang":
            shop.sandbox.faults.add("update_giftcard", Fault.hang(after_enqueue=True))
        elif action == "drop_callback":
            shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
        elif action == "b_capture_order":
            order = data.draw(st.sampled_from(ORDERS), label="B captures order")
            with contextlib.suppress(*ORDER_EXPECTED):
                self.b.capture_order(order)
        elif action == "b_refund_order":
            order = data.draw(st.sampled_from(ORDERS), label="B refunds order")
            key = data.draw(st.sampled_from(sorted(REFUND_KEYS)), label="B refund key")
            with contextlib.suppress(*ORDER_EXPECTED):
                self.b.refund_order(order, refund_key=key, amount=REFUND_KEYS[key])
        elif action == "spend":
            card = data.draw(st.sampled_from(CARDS), label="spent card")
            with contextlib.suppress(Exception):
                shop.sandbox.spend_in_shop(card, "3.00")
                self.spends[card] += 1

    def checked(self, post: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Every POST not made by A's stepped flow (A's is checked between its steps): a
        queue turn given inside a callback, B's captures, refunds and reconciles. Each runs
        its read and its POST with no world action between, so no spend can explain a
        difference."""

        def post_checked(update: Any) -> Any:
            if not self.stepping_post:
                self.evidence_is_sound(update, update.barcode, self.spends[update.barcode])
            return post(update)

        return post_checked

    def evidence_is_sound(self, update: Any, card: str, spends_at_start: int) -> None:
        """Invariant 15, as the POST leaves: nothing else of ours may still move the card's
        balance (queued operations wait and move nothing), and the balance ``reconcile``
        will compare against is 4WS's balance now (unless someone spent on the card in a
        shop meanwhile, which no lock can stop)."""
        posting = update.payload["operation_id"]
        others = [
            op
            for op in self.shop.store.list_operations()
            if op.barcode == card and op.id != posting
        ]
        unresolved = [
            op.state.value
            for op in others
            if op.state not in FINAL and op.state is not OperationState.QUEUED
        ]
        assert not unresolved, f"posted while {unresolved} may still move the balance (inv. 15)"
        if self.spends[card] == spends_at_start:
            op = self.shop.store.get_operation(posting)
            assert op is not None
            assert op.balance_before == self.shop.sandbox.balance(card), (
                "stale evidence: balance_before is not 4WS's balance at the POST (inv. 15)"
            )

    # ------------------------------------------------------------------- worker A

    @rule(target=holds, card=st.sampled_from(CARDS), amount=AMOUNTS, data=st.data())
    def reserve(self, card: str, amount: str, data: st.DataObject) -> Reservation | None:
        spends_before = self.spends[card]
        flow = self.shop.payments.core.reserve(card, amount, "EUR", "H", None, False, 86_400)
        try:
            r: Reservation = run_stepped(self.shop.payments, flow, self.world(data))
        except EXPECTED:
            return None
        self.spends_at_grant[r.id] = self.spends[card]
        self.order[r.id] = len(self.order)
        if self.spends[card] == spends_before:
            assert self.unapplied_holds(card) <= self.shop.sandbox.balance(card), (
                "over-reservation (invariant 2)"
            )
        return r

    @rule(reservation=holds, data=st.data())
    def capture(self, reservation: Reservation | None, data: st.DataObject) -> None:
        if reservation is None:
            return
        part = data.draw(st.sampled_from([None, None, Decimal("5.00")]), label="part")
        keep = data.draw(st.booleans(), label="keep remainder")
        flow = self.shop.payments.core.capture(reservation.id, part, keep)
        try:
            run_stepped(self.shop.payments, flow, self.world(data, reservation.barcode))
        except PaymentRefused as refused:
            if refused.reason in (RefusalReason.INSUFFICIENT_BALANCE, RefusalReason.EMPTY):
                granted_with = self.spends_at_grant.get(reservation.id, 0)
                assert self.spends[reservation.barcode] > granted_with, (
                    "a hold granted within the balance was refused at capture (invariant 16)"
                )
        except (CardBusyError, InvalidStateError, FourWSError):
            pass
        finally:
            self.shop.sandbox.faults.clear()

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        settled = [
            op
            for op in self.shop.store.list_operations([OperationState.SUCCEEDED])
            if op.kind is OperationKind.CAPTURE
        ]
        if not settled:
            return
        target = self.pick(data, settled, "A refunds")
        self.count_plain_refund(target)
        flow = self.shop.payments.core.refund(target.id, Decimal("5.00"))
        with contextlib.suppress(*EXPECTED):
            run_stepped(self.shop.payments, flow, self.world(data, target.barcode))
        self.shop.sandbox.faults.clear()

    @rule(order=st.sampled_from(ORDERS), amount=AMOUNTS, data=st.data())
    def reserve_order(self, order: str, amount: str, data: st.DataObject) -> None:
        """A holds one order on both cards (all or nothing), the world acting between its
        reads and its holds; B may capture or refund the same order meanwhile."""
        flow = self.shop.payments.core.reserve_order(
            order, list(CARDS), amount, "EUR", f"checkout-{amount}", None, None, True, 86_400
        )
        before = {c: self.spends[c] for c in CARDS}
        try:
            allocation = run_stepped(self.shop.payments, flow, self.world(data))
        except ORDER_EXPECTED:
            return
        finally:
            self.shop.sandbox.faults.clear()
        for hold in allocation.reservations:
            if hold.id in self.order:
                continue  # a hold an earlier call granted, returned again (same key)
            self.order[hold.id] = len(self.order)
            self.spends_at_grant[hold.id] = self.spends[hold.barcode]
            if self.spends[hold.barcode] == before[hold.barcode]:
                assert self.unapplied_holds(hold.barcode) <= self.shop.sandbox.balance(
                    hold.barcode
                ), "over-reservation by an order allocation (invariants 2, 20)"

    @rule(order=st.sampled_from(ORDERS), data=st.data())
    def capture_order(self, order: str, data: st.DataObject) -> None:
        flow = self.shop.payments.core.capture_order(order)
        with contextlib.suppress(*ORDER_EXPECTED):
            run_stepped(self.shop.payments, flow, self.world(data))
        self.shop.sandbox.faults.clear()

    def count_plain_refund(self, capture: Any) -> None:
        reservation = self.shop.store.get_reservation(capture.reservation_id)
        if reservation is not None and reservation.order_ref in ORDERS:
            self.plain_refunds[reservation.order_ref] += 5

    def settled_orders(self) -> list[str]:
        holds = {
            r.id: r.order_ref for r in self.shop.store.list_reservations() if r.order_ref in ORDERS
        }
        return sorted(
            {
                holds[op.reservation_id]
                for op in self.shop.store.list_operations([OperationState.SUCCEEDED])
                if op.kind is OperationKind.CAPTURE and op.reservation_id in holds
            }
        )

    @precondition(lambda self: bool(self.settled_orders()))
    @rule(key=st.sampled_from(sorted(REFUND_KEYS)), data=st.data())
    def refund_order(self, key: str, data: st.DataObject) -> None:
        """A refunds part of an order across its captures (one plan per key); the world --
        B refunding or capturing the same order, settling, reconciling -- acts between the
        plan and each part."""
        order = data.draw(st.sampled_from(self.settled_orders()), label="A refunds order")
        flow = self.shop.payments.core.refund_order(order, REFUND_KEYS[key], key, "newest_first")
        with contextlib.suppress(*ORDER_EXPECTED):
            run_stepped(self.shop.payments, flow, self.world(data))
        self.shop.sandbox.faults.clear()

    @rule(data=st.data())
    def reconcile(self, data: st.DataObject) -> None:
        """A reconciles step by step: the world may settle, capture or spend between its
        card reads and its verdicts."""
        run_stepped(self.shop.payments, self.shop.payments.core.reconcile(), self.world(data))
        self.shop.sandbox.faults.clear()

    @rule(data=st.data())
    def world_acts(self, data: st.DataObject) -> None:
        self.act(data.draw(WORLD, label="world"), data)
        self.shop.sandbox.faults.clear()

    @precondition(lambda self: bool(self.shop.store.list_operations()))
    @rule()
    def much_later(self) -> None:
        """Past every deadline and window, every operation is decided (invariant 6)."""
        s = self.shop.payments.settings
        self.shop.sandbox.faults.clear()
        for _ in range(10):  # each pass may post what was queued behind the last one
            self.shop.sandbox.run_until_idle()
            self.shop.clock.advance(s.callback_timeout + s.reconcile_window + 600)
            self.b.reconcile()
            if not undecided(self.shop.store.list_operations()):
                break
        left = undecided(self.shop.store.list_operations())
        assert not left, f"{[op.state.value for op in left]} after every window (invariant 6)"

    # ------------------------------------------------------------------ the books

    def unapplied_holds(self, card: str) -> Decimal:
        """Holds 4WS's balance does not reflect: active, unexpired or pinned, and whose
        capture (if any) 4WS has not applied."""
        now = self.shop.clock.now()
        applied = self.shop.consumption_counts()
        ops = [op for op in self.shop.store.list_operations() if op.barcode == card]
        pinned = {
            op.reservation_id
            for op in ops
            if (op.kind is OperationKind.CAPTURE and not op.is_terminal)
            or op.state is OperationState.MANUAL_REVIEW
        }
        taken = {op.reservation_id for op in ops if applied[op.id]}
        return sum(
            (
                r.amount
                for r in self.shop.store.list_reservations([ReservationState.ACTIVE])
                if r.barcode == card and counts_as_held(r, now, pinned) and r.id not in taken
            ),
            Decimal(0),
        )

    @invariant()
    def books_balance(self) -> None:
        self.shop.audit()

    @invariant()
    def order_refund_parts_once(self) -> None:
        """Invariant 19: each part of a plan is at most one refund operation, of at most the
        part's amount; a plan never promises more than it was asked for."""
        for order in ORDERS:
            holds = {r.id for r in self.shop.store.list_reservations(order_ref=order)}
            captures = {
                op.id
                for op in self.shop.store.list_operations()
                if op.kind is OperationKind.CAPTURE and op.reservation_id in holds
            }
            given_back = sum(
                (
                    op.amount
                    for op in self.shop.store.list_operations()
                    if op.kind is OperationKind.REFUND
                    and op.parent_id in captures
                    and op.state is not OperationState.FAILED
                ),
                Decimal(0),
            )
            planned = sum(
                (o.refund.amount for o in self.shop.payments.order_refunds(order)), Decimal(0)
            )
            assert given_back <= planned + self.plain_refunds[order], (
                f"{order}: {given_back} given back, plans asked {planned} and plain refunds"
                f" at most {self.plain_refunds[order]} (a part refunded twice, invariant 19)"
            )
            for outcome in self.shop.payments.order_refunds(order):
                plan = outcome.refund
                assert sum((p.amount for p in plan.parts), Decimal(0)) <= plan.amount
                for part in plan.parts:
                    op = self.shop.store.get_operation(part.operation_id)
                    if op is not None:
                        assert op.kind is OperationKind.REFUND
                        assert op.parent_id == part.capture_id
                        assert op.amount <= part.amount


TestTwoWorkers = TwoWorkers.TestCase
TestTwoWorkers.settings = settings(
    max_examples=60,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
