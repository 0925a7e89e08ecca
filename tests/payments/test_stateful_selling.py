"""Selling cards with a second worker interleaved at every step: hypothesis looks for a card
loaded twice, a barcode loaded that no sold card holds, or a cancel taking back more than
was left (invariant 18).

Worker A sells lines, cancels sold cards and reconciles one effect at a time
(``run_stepped``). Before and after each of A's 4WS calls the rest of the world acts: 4WS
works its queue (callbacks reach A's provider, which pumps), worker B (another provider on
the same ledger) reconciles or cancels, a recipient spends on a sold card through B, time
passes, the next generate or update meets a 503, a hang after enqueueing, a lost or a
repeated callback, and an operator resolves what is in review by 4WS's books. After every
rule the books must hold; at the end, past every window, every sold card is settled.

With an ambiguous activation taken for one that never left (the twin of invariant 18), this
machine finds the failure in a handful of steps; 400 examples at 20 steps pass with the
protection on (about 25 s; the default suite runs 60 at 15).
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
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fourws_pay import FourWSError, InvalidStateError, PaymentRefused
from fourws_pay.payments.models import IssuedCard, IssuedCardState, OperationState
from fourws_pay.sandbox.faults import Fault
from tests.payments.harness import Shop, run_stepped, undecided

ITEM = "GIFTCARD_IVA_TAGLIO_100"
AMOUNTS = st.sampled_from(["10.00", "25.00", "40.00"])
WORLD = st.sampled_from(
    [
        "settle",
        "settle",
        "settle_one",
        "b_reconcile",
        "b_cancel",
        "spend",
        "time",
        "post_503",
        "post_hang",
        "drop_callback",
        "duplicate_callback",
        "operator",
    ]
)
EXPECTED = (InvalidStateError, PaymentRefused, FourWSError)
SETTLED = {IssuedCardState.DELIVERED, IssuedCardState.CANCELLED, IssuedCardState.FAILED}


class Selling(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp())
        self.shop = Shop(self.tmp, settings_overrides={"issuing_item_code": ITEM})
        self.shop.sandbox.add_product(ITEM, item_type="FINANCIAL")
        self.b = self.shop.new_provider()
        self.lines = 0
        self.spent: Counter[str] = Counter()  # barcode -> spent by recipients

    def teardown(self) -> None:
        self.shop.payments.client.close()
        self.b.client.close()
        self.shop.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------ the rest of the world

    def cards(self) -> list[IssuedCard]:
        return sorted(
            self.shop.store.list_issued_cards(), key=lambda c: (c.order_ref, c.line_index)
        )

    def pick(self, data: st.DataObject, items: list[IssuedCard], label: str) -> IssuedCard:
        return items[data.draw(st.integers(0, 63), label=label) % len(items)]

    def world(self, data: st.DataObject) -> Callable[[str, Any], None]:
        def between(moment: str, effect: Any) -> None:
            label = f"world {moment} {type(effect).__name__}"
            for action in data.draw(st.lists(WORLD, max_size=2), label=label):
                self.act(action, data)

        return between

    def act(self, action: str, data: st.DataObject) -> None:
        shop = self.shop
        faults = shop.sandbox.faults
        endpoint = data.draw(st.sampled_from(["update_giftcard", "generate_giftcards"]), label="on")
        if action == "settle":
            shop.sandbox.run_until_idle()
        elif action == "settle_one":
            shop.sandbox.process_queue()
        elif action == "b_reconcile":
            self.b.reconcile()
        elif action == "b_cancel":
            cards = self.cards()
            if cards:
                with contextlib.suppress(*EXPECTED):
                    self.b.cancel_issued_card(self.pick(data, cards, "B cancels").id)
        elif action == "spend":
            loaded = [c for c in self.cards() if c.barcode and shop.sandbox.balance(c.barcode) > 0]
            if loaded:
                card = self.pick(data, loaded, "recipient")
                assert card.barcode is not None
                with contextlib.suppress(*EXPECTED):
                    hold = self.b.reserve(
                        card.barcode, amount="5.00", currency="EUR", order_ref="SPEND"
                    )
                    self.b.capture(hold.id)
        elif action == "time":
            shop.clock.advance(data.draw(st.sampled_from([1, 60, 700, 4000]), label="seconds"))
        elif action == "post_503":
            faults.add(endpoint, Fault.server_error(503))
        elif action == "post_hang":
            faults.add(endpoint, Fault.hang(after_enqueue=True))
        elif action == "drop_callback":
            faults.add(endpoint, Fault.drop_callback())
        elif action == "duplicate_callback":
            faults.add(endpoint, Fault.duplicate_callback(2))
        elif action == "operator":
            self.operator_resolves()

    def operator_resolves(self) -> None:
        """Staff ask 4WS (here: its books) about what is in review and record the answer."""
        applied = self.shop.consumption_counts()
        for op in self.shop.store.list_operations([OperationState.MANUAL_REVIEW]):
            with contextlib.suppress(*EXPECTED):
                self.shop.payments.resolve(op.id, applied=applied[op.id] > 0, note="4WS says")

    # ------------------------------------------------------------------- worker A

    @rule(amount=AMOUNTS, count=st.integers(1, 2), again=st.booleans(), data=st.data())
    def sell(self, amount: str, count: int, again: bool, data: st.DataObject) -> None:
        if not again or not self.lines:
            self.lines += 1
        order = f"ORD-{self.lines}"
        existing = self.shop.store.list_issued_cards(order_ref=order)
        if existing:  # a retry of that line, as a shop's webhook re-delivery would be
            amount, count = str(existing[0].amount), max(count, len(existing))
        flow = self.shop.payments.core.issue_cards(
            order, "line", Decimal(amount), "EUR", count, None, 2
        )
        with contextlib.suppress(*EXPECTED):
            run_stepped(self.shop.payments, flow, self.world(data))
        self.shop.sandbox.faults.clear()

    @precondition(lambda self: bool(self.shop.store.list_issued_cards()))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        card = self.pick(data, self.cards(), "A cancels")
        flow = self.shop.payments.core.cancel_issued_card(card.id)
        with contextlib.suppress(*EXPECTED):
            run_stepped(self.shop.payments, flow, self.world(data))
        self.shop.sandbox.faults.clear()

    @rule(data=st.data())
    def reconcile(self, data: st.DataObject) -> None:
        run_stepped(self.shop.payments, self.shop.payments.core.reconcile(), self.world(data))
        self.shop.sandbox.faults.clear()

    @precondition(lambda self: bool(self.shop.store.list_issued_cards()))
    @rule()
    def much_later(self) -> None:
        """Past every deadline and window, with an operator, every sold card is settled."""
        s = self.shop.payments.settings
        self.shop.sandbox.faults.clear()
        for _ in range(6):
            self.shop.sandbox.run_until_idle()
            self.shop.clock.advance(
                s.callback_timeout + s.reconcile_window + s.delivery_retry_after + 600
            )
            self.b.reconcile()
            self.operator_resolves()
        self.shop.sandbox.run_until_idle()
        self.b.reconcile()
        left = undecided(self.shop.store.list_operations())
        assert not left, f"{[op.state.value for op in left]} after every window"
        stuck = [c.state.value for c in self.cards() if c.state not in SETTLED]
        assert not stuck, f"sold cards {stuck} after every window"

    # ------------------------------------------------------------------ the books

    @invariant()
    def each_card_loaded_once_with_its_amount(self) -> None:
        sandbox = self.shop.sandbox
        cards = self.cards()
        held = {c.barcode: c for c in cards if c.barcode}
        loads = Counter(r.barcode for r in sandbox.applied_operations() if r.kind == "activation")
        for barcode, times in loads.items():
            assert barcode in held, "a barcode no sold card holds was loaded"
            assert times == 1, f"{barcode[-4:]} loaded {times} times (invariant 18)"
        for barcode, card in held.items():
            recredits = [r for r in sandbox.applied_operations(barcode) if r.kind == "recredit"]
            assert recredits == [], "a positive update on a loaded card (loaded twice)"
            if loads[barcode]:
                taken = sum(
                    (-r.amount for r in sandbox.applied_operations(barcode) if r.amount < 0),
                    Decimal(0),
                )
                assert taken <= card.amount, "more taken from a sold card than was on it"
                assert sandbox.balance(barcode) == card.amount - taken
            if card.state in (IssuedCardState.ACTIVE, IssuedCardState.DELIVERED):
                assert loads[barcode] == 1, f"{card.state.value} but never loaded"
        self.shop.audit()


TestSelling = Selling.TestCase
TestSelling.settings = settings(
    max_examples=60,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
