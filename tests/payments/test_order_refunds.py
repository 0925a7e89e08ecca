"""Order-level refunds (``refund_order``): one amount for an order, spread over its settled
captures on several cards, each part posted exactly once, never beyond a capture.

The second-worker tests interleave another worker (a re-run of the same refund, a plain
``refund`` of one capture, a restart that reconciles) between the plan and its parts; each
names the protection it relies on, and the twin tests switch that protection off and show
the money going wrong.
"""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fourws_pay import InvalidAmountError, InvalidInputError, RefundStrategy
from fourws_pay.payments import order_refunds
from fourws_pay.payments.core import PaymentsCore
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    OrderRefundState,
)
from tests.payments.harness import Shop
from tests.services import StoreFactory

A, B, C = "7000000000001", "7000000000002", "7000000000003"


def _order_paid_with(shop: Shop, amounts: dict[str, str], order_ref: str = "ORD-1") -> list[str]:
    """One order paid with several cards, captured and settled in the order given (so
    the last card's capture is the newest). Returns the capture ids, oldest first."""
    captures = []
    for barcode, amount in amounts.items():
        shop.card(barcode, amount="100.00")
        hold = shop.payments.reserve(barcode, amount=amount, currency="EUR", order_ref=order_ref)
        captures.append(shop.payments.capture(hold.id).id)
        shop.settle()
    assert all(
        shop.store.get_operation(c).state is OperationState.SUCCEEDED  # type: ignore[union-attr]
        for c in captures
    )
    return captures


def _refunded(shop: Shop, capture_id: str) -> Decimal:
    """What 4WS gave back for one capture (its refund operations, as 4WS applied them)."""
    applied = shop.consumption_counts()
    return sum(
        (
            op.amount * applied[op.id]
            for op in shop.store.list_operations()
            if op.kind is OperationKind.REFUND and op.parent_id == capture_id
        ),
        Decimal(0),
    )


def test_newest_capture_first_across_cards(shop: Shop) -> None:
    first, second = _order_paid_with(shop, {A: "30.00", B: "20.00"})
    outcome = shop.payments.refund_order("ORD-1", refund_key="R1", amount="40")
    shop.settle()
    assert [(p.capture_id, p.amount) for p in outcome.refund.parts] == [
        (second, Decimal("20.00")),
        (first, Decimal("20.00")),
    ]
    assert shop.sandbox.balance(B) == Decimal("100.00")
    assert shop.sandbox.balance(A) == Decimal("90.00")
    (done,) = shop.payments.order_refunds("ORD-1")
    assert done.complete
    assert done.settled == Decimal("40.00")
    assert done.shortfall == 0
    shop.audit()


def test_pro_rata_in_proportion_to_what_is_left(shop: Shop) -> None:
    first, second, third = _order_paid_with(shop, {A: "30.00", B: "10.00", C: "20.00"})
    outcome = shop.payments.refund_order(
        "ORD-1", refund_key="R1", amount="10.00", strategy=RefundStrategy.PRO_RATA
    )
    shares = {p.capture_id: p.amount for p in outcome.refund.parts}
    # 10 over 30/10/20: 5, 1.66, 3.33 rounded down, the cent left to the newest (C's)
    assert shares == {first: Decimal("5.00"), second: Decimal("1.66"), third: Decimal("3.34")}
    assert sum(shares.values()) == Decimal("10.00")
    shop.settle()
    assert shop.sandbox.balance(C) == Decimal("83.34")
    shop.audit()


def test_the_whole_order_without_an_amount_and_nothing_left_after(shop: Shop) -> None:
    _order_paid_with(shop, {A: "30.00", B: "20.00"})
    outcome = shop.payments.refund_order("ORD-1", refund_key="all")
    assert outcome.refund.amount == Decimal("50.00")
    shop.settle()
    with pytest.raises(InvalidAmountError, match="nothing left"):
        shop.payments.refund_order("ORD-1", refund_key="again")
    assert shop.sandbox.balance(A) == shop.sandbox.balance(B) == Decimal("100.00")


def test_bad_requests_are_refused_and_write_nothing(shop: Shop) -> None:
    _order_paid_with(shop, {A: "30.00", B: "20.00"})
    with pytest.raises(InvalidAmountError, match=r"only 50\.00"):
        shop.payments.refund_order("ORD-1", refund_key="R1", amount="50.01")
    for bad in ("NaN", "-1", "0", "1.001"):
        with pytest.raises(InvalidAmountError):
            shop.payments.refund_order("ORD-1", refund_key="R1", amount=bad)
    with pytest.raises(InvalidInputError, match="strategy"):
        shop.payments.refund_order("ORD-1", refund_key="R1", strategy="biggest")
    with pytest.raises(InvalidInputError, match="refund_key"):
        shop.payments.refund_order("ORD-1", refund_key="")
    with pytest.raises(InvalidAmountError, match="no settled capture"):
        shop.payments.refund_order("ORD-unknown", refund_key="R1")
    assert shop.payments.order_refunds("ORD-1") == []
    assert not [o for o in shop.store.list_operations() if o.kind is OperationKind.REFUND]


def test_the_same_key_carries_the_same_refund_on(shop: Shop) -> None:
    """A retried request finds the plan by its key: nothing is refunded twice, and the
    same key for another refund is refused rather than guessed at."""
    _order_paid_with(shop, {A: "30.00", B: "20.00"})
    first = shop.payments.refund_order("ORD-1", refund_key="R1", amount="40")
    again = shop.payments.refund_order("ORD-1", refund_key="R1", amount="40")
    assert again.refund.id == first.refund.id
    assert [op.id for op in again.operations] == [op.id for op in first.operations]
    with pytest.raises(InvalidInputError, match="another refund"):
        shop.payments.refund_order("ORD-1", refund_key="R1", amount="10")
    shop.settle()
    assert shop.sandbox.balance(A) + shop.sandbox.balance(B) == Decimal("190.00")
    shop.audit()


def test_two_plans_of_one_order_never_count_the_same_money(shop: Shop, monkeypatch: Any) -> None:
    """A second plan, written while the first's parts are not posted yet, counts them as
    promised: together they never ask more than the order took."""
    _order_paid_with(shop, {A: "30.00", B: "20.00"})
    monkeypatch.setattr(PaymentsCore, "carry_on_order_refund", _plan_only)
    shop.payments.refund_order("ORD-1", refund_key="R1", amount="45")
    with pytest.raises(InvalidAmountError, match=r"only 5\.00"):
        shop.payments.refund_order("ORD-1", refund_key="R2", amount="6")
    shop.payments.refund_order("ORD-1", refund_key="R2", amount="5")
    monkeypatch.undo()
    report = shop.payments.reconcile()  # carries both plans on
    assert {r.state for r in report.order_refunds} == {OrderRefundState.POSTED}
    shop.settle()
    assert shop.sandbox.balance(A) == shop.sandbox.balance(B) == Decimal("100.00")
    shop.audit()


def _plan_only(self: Any, plan_id: str) -> Any:
    """A worker that wrote its plan and stopped (a crash right after the plan)."""
    if False:  # pragma: no cover - makes this a generator, like the flow it replaces
        yield
    from fourws_pay.payments.models import OrderRefundOutcome

    return OrderRefundOutcome(self._order_refund(plan_id), ())


class _Stop(Exception):
    """A worker dying between two parts."""


def test_a_crash_between_parts_is_finished_by_reconcile_once(shop: Shop, monkeypatch: Any) -> None:
    """The first part is posted, the worker dies before the second: the plan stays open;
    a restarted worker's ``reconcile`` posts the second part only."""
    first, second = _order_paid_with(shop, {A: "30.00", B: "20.00"})
    post_part = PaymentsCore._post_part
    posted: list[str] = []

    def dying(self: Any, plan: Any, part: Any) -> Any:
        if posted:
            raise _Stop
        result = yield from post_part(self, plan, part)
        posted.append(part.capture_id)
        return result

    monkeypatch.setattr(PaymentsCore, "_post_part", dying)
    with pytest.raises(_Stop):
        shop.payments.refund_order("ORD-1", refund_key="R1", amount="40")
    monkeypatch.undo()
    (open_plan,) = shop.store.list_order_refunds()
    assert open_plan.state is OrderRefundState.OPEN
    shop.settle()
    shop.payments = shop.new_provider()  # the restart
    report = shop.payments.reconcile()
    assert [r.state for r in report.order_refunds] == [OrderRefundState.POSTED]
    shop.settle()
    assert _refunded(shop, second) == Decimal("20.00")
    assert _refunded(shop, first) == Decimal("20.00")
    assert shop.payments.reconcile().order_refunds == []  # nothing left to carry on
    shop.audit()


def test_a_refund_by_other_means_between_plan_and_part_shortens_it(
    shop: Shop, monkeypatch: Any
) -> None:
    """Second worker: a plain ``refund`` of the older capture lands after the plan was
    written, before its part. The part is posted for what is left (the capture is never
    refunded beyond what it took) and the outcome reports the shortfall."""
    first, _second = _order_paid_with(shop, {A: "30.00", B: "20.00"})
    post_part = PaymentsCore._post_part

    def interleaved(self: Any, plan: Any, part: Any) -> Any:
        if part.capture_id == first:
            shop.new_provider().refund(first, amount="25")  # the second worker
            shop.settle()
        return (yield from post_part(self, plan, part))

    monkeypatch.setattr(PaymentsCore, "_post_part", interleaved)
    outcome = shop.payments.refund_order("ORD-1", refund_key="R1", amount="40")
    shop.settle()
    assert _refunded(shop, first) == Decimal("30.00")  # 25 + the 5 left, not 25 + 20
    assert outcome.refund.state is OrderRefundState.POSTED
    assert outcome.posted == Decimal("25.00")
    assert outcome.shortfall == Decimal("15.00")
    shop.audit()


def _race_same_key(shop: Shop, workers: int = 4) -> list[Any]:
    results: list[Any] = []
    start = threading.Barrier(workers)

    def worker() -> None:
        provider = shop.new_provider()
        start.wait()
        try:
            results.append(provider.refund_order("ORD-1", refund_key="R1", amount="40"))
        except Exception as exc:  # recorded, asserted by the caller
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for _ in range(10):
        shop.sandbox.run_until_idle()
    return results


def test_workers_racing_one_refund_post_each_part_once_every_store(
    store_factory: StoreFactory, tmp_path: Path
) -> None:
    """Four workers carry the same refund at once (a host retrying on several nodes): one
    plan, each part one refund operation, 4WS credits 40 in all, on every store."""
    shop = Shop(tmp_path, ledger=store_factory())
    try:
        first, second = _order_paid_with(shop, {A: "30.00", B: "20.00"})
        results = _race_same_key(shop)
        assert not [r for r in results if isinstance(r, Exception)]
        assert len(shop.store.list_order_refunds()) == 1
        assert _refunded(shop, second) == Decimal("20.00")
        assert _refunded(shop, first) == Decimal("20.00")
        shop.audit()
    finally:
        shop.payments.client.close()


def test_twin_without_the_plan_key_racing_workers_refund_twice(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Twin of the test above: with the plan's id no longer derived from the key (each
    call plans anew), a retried refund is refunded again: 4WS credits more than 40."""
    monkeypatch.setattr(order_refunds, "order_refund_id", lambda *_: f"ordref_{uuid.uuid4()}")
    shop = Shop(tmp_path)
    _order_paid_with(shop, {A: "30.00", B: "20.00"})
    shop.payments.refund_order("ORD-1", refund_key="R1", amount="20")
    shop.settle()
    shop.payments.refund_order("ORD-1", refund_key="R1", amount="20")
    shop.settle()
    credited = sum((_refunded(shop, op.id) for op in _captures(shop)), Decimal(0))
    assert credited == Decimal("40.00")  # what the protection prevents: 20 asked, 40 given


def _die_after_the_first_part_then_reconcile(shop: Shop, monkeypatch: Any) -> None:
    """A worker posts the first part of a 10.00 refund and dies before it can mark the
    plan posted; a restarted worker reconciles."""
    post_part = PaymentsCore._post_part

    def dying(self: Any, plan: Any, part: Any) -> Any:
        yield from post_part(self, plan, part)
        raise _Stop

    with monkeypatch.context() as patch:
        patch.setattr(PaymentsCore, "_post_part", dying)
        with pytest.raises(_Stop):
            shop.payments.refund_order("ORD-1", refund_key="R1", amount="10")
    shop.settle()
    shop.payments = shop.new_provider()
    shop.payments.reconcile()
    shop.settle()


def test_a_part_posted_before_a_crash_is_found_by_its_id(shop: Shop, monkeypatch: Any) -> None:
    """The resumed worker finds the part's refund by the id the plan fixed for it, under
    the card's lock: the newest capture gives back 10, once."""
    _first, second = _order_paid_with(shop, {A: "30.00", B: "20.00"})
    _die_after_the_first_part_then_reconcile(shop, monkeypatch)
    assert _refunded(shop, second) == Decimal("10.00")
    shop.audit()


def test_twin_without_the_fixed_part_id_a_resumed_plan_posts_a_part_twice(
    shop: Shop, monkeypatch: Any
) -> None:
    """Twin: when a part's refund is born under a fresh id instead of the plan's, the
    resumed worker cannot find it and posts the part again (the capture still had room):
    20 given back where 10 was asked."""
    _first, second = _order_paid_with(shop, {A: "30.00", B: "20.00"})
    claim = PaymentsCore._claim_or_queue

    def fresh_ids(self: Any, *args: Any, operation_id: str | None = None, **kw: Any) -> Any:
        return claim(self, *args, **kw)

    monkeypatch.setattr(PaymentsCore, "_claim_or_queue", fresh_ids)
    _die_after_the_first_part_then_reconcile(shop, monkeypatch)
    assert _refunded(shop, second) == Decimal("20.00")  # what the protection prevents


def _captures(shop: Shop) -> list[Operation]:
    return [o for o in shop.store.list_operations() if o.kind is OperationKind.CAPTURE]
