"""The card queue (invariant 17) and the defects issue 16 found around it.

Each test names the defect or promise it checks; each was run against the code before its
fix (or with the fix switched off, see the ``*_twin`` tests) and failed there.
"""

from __future__ import annotations

import contextlib
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fourws_pay import InvalidAmountError, ManualClock
from fourws_pay.payments import transitions
from fourws_pay.payments.core import PaymentsCore
from fourws_pay.payments.models import EventKind, OperationState, RefusalReason, ReservationState
from fourws_pay.sandbox.faults import Fault
from tests.payments.harness import Shop
from tests.services import StoreFactory

# ------------------------------------------------------------- contention, every store


def _contention(shop: Shop, threads: int) -> list[Any]:
    """``threads`` checkouts of 10.00 on one card holding exactly their total, while another
    thread keeps 4WS working through its queue (callbacks land on the provider, which gives
    the queue its turns). Returns what each ``capture`` returned or raised."""
    card = shop.card(amount=f"{10 * threads}.00")
    outcomes: list[Any] = []
    done = threading.Event()
    tick = threading.Event()

    def settler() -> None:
        while not done.is_set():
            shop.sandbox.run_until_idle()
            tick.wait(0.001)

    def checkout(n: int) -> None:
        hold = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref=f"C{n}")
        try:
            outcomes.append(shop.payments.capture(hold.id))
        except Exception as exc:  # recorded, asserted below
            outcomes.append(exc)

    background = threading.Thread(target=settler)
    background.start()
    workers = [threading.Thread(target=checkout, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    done.set()
    background.join(30)
    # The rest of the queue drains as 4WS's callbacks land, each giving the next operation
    # its turn: driven here step by step, bounded by steps rather than by wall time, so a
    # loaded machine cannot stop the drain early.
    for _ in range(10 * threads):
        if all(
            op.state is OperationState.SUCCEEDED
            for op in shop.store.list_operations()
            if op.barcode == card
        ):
            break
        shop.sandbox.run_until_idle()
    return outcomes


def test_eight_threads_on_one_card_every_store(store_factory: StoreFactory, tmp_path: Path) -> None:
    """Issue 16's contention scenario on every store: no capture raises (none is busy),
    every granted hold is captured, and what 4WS took is exactly what the ledger says."""
    shop = Shop(tmp_path, ledger=store_factory())
    try:
        outcomes = _contention(shop, threads=8)
        errors = [o for o in outcomes if isinstance(o, Exception)]
        assert errors == []
        assert len(outcomes) == 8
        ops = shop.store.list_operations()
        assert [op.state for op in ops] == [OperationState.SUCCEEDED] * 8
        card = ops[0].barcode
        assert shop.sandbox.total_consumed(card) == Decimal("80.00")
        assert shop.sandbox.balance(card) == Decimal("0.00")
        shop.audit()
    finally:
        shop.payments.client.close()


# ------------------------------------------------------------------ defect 1: a callback
# racing the recording of the POST's answer must be applied.


def test_a_callback_racing_the_posts_answer_is_applied(
    store_factory: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4WS calls back while the POST's answer (``sending -> enqueued``) is being recorded.
    The callback reads the operation as ``sending`` under the card lock and pauses before
    its write; the recording of the answer must wait for the lock, so the callback's
    compare-and-set cannot lose (before the fix, on PostgreSQL and MariaDB, it did: 409,
    and 4WS never resends). The pause is an event wait: with the fix the answer-recording
    cannot get through while the callback holds the lock, however long it waits."""
    shop = Shop(tmp_path, ledger=store_factory())
    try:
        card = shop.card(amount="100.00")
        hold = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="R")
        callback_read = threading.Event()
        answer_recorded = threading.Event()
        callback_results: list[int] = []

        apply_verdict = PaymentsCore._apply_verdict

        def pausing(self: Any, tx: Any, current: Any, *args: Any, **kw: Any) -> Any:
            if current.state is OperationState.SENDING:
                callback_read.set()
                answer_recorded.wait(1.0)  # the race window, held open
            return apply_verdict(self, tx, current, *args, **kw)

        transition = PaymentsCore._transition

        def recording(self: Any, op: Any, expected: Any, **changes: Any) -> Any:
            if changes.get("state") is OperationState.ENQUEUED:
                callback_read.wait(5.0)  # the callback got there first
            try:
                return transition(self, op, expected, **changes)
            finally:
                if changes.get("state") is OperationState.ENQUEUED:
                    answer_recorded.set()

        monkeypatch.setattr(PaymentsCore, "_apply_verdict", pausing)
        monkeypatch.setattr(PaymentsCore, "_transition", recording)

        delivered = threading.Event()

        def deliver_now() -> None:
            try:
                shop.sandbox.run_until_idle()
                callback_results.extend(shop.callback_statuses)
            finally:
                delivered.set()

        post = shop.payments.client.update_giftcard

        def post_then_call_back(update: Any) -> Any:
            queued = post(update)
            threading.Thread(target=deliver_now).start()
            return queued

        shop.payments.client.update_giftcard = post_then_call_back  # type: ignore[method-assign]
        operation = shop.payments.capture(hold.id)
        assert delivered.wait(30)
        assert callback_read.is_set()  # the race window was really open
        assert callback_results == [200]
        final = shop.payments.get_operation(operation.id)
        assert final.state is OperationState.SUCCEEDED
        assert final.queue_id is not None  # the answer's queue id is kept beside the verdict
        shop.audit()
    finally:
        shop.payments.client.close()


# ------------------------------------------------------------ defect 3: one-go card split


def test_a_one_go_card_is_never_split_and_nothing_is_written(shop: Shop) -> None:
    """``flgPartiallyUsage = N`` reserved for its whole balance: a partial capture (with or
    without ``keep_remainder``) is refused before any write, and the whole hold stays
    capturable (before the fix the split was committed, then every capture of either part
    was refused: the order could never be paid with the card)."""
    card = shop.card(amount="25.00", partial_usage=False)
    hold = shop.payments.reserve(card, amount="25.00", currency="EUR", order_ref="G")
    before = (shop.store.list_reservations(), shop.store.list_operations())
    for keep in (True, False):
        with pytest.raises(InvalidAmountError, match="spent in one go"):
            shop.payments.capture(hold.id, amount="10.00", keep_remainder=keep)
    assert (shop.store.list_reservations(), shop.store.list_operations()) == before
    operation = shop.payments.capture(hold.id)
    shop.settle()
    assert shop.payments.get_operation(operation.id).state is OperationState.SUCCEEDED
    assert shop.sandbox.balance(card) == Decimal("0.00")
    shop.audit()


# ----------------------------------------------- defect 4: check counts a capture twice


def test_check_does_not_count_a_capture_settled_at_the_reads_instant(tmp_path: Path) -> None:
    """The pytest plugin's frozen clock stamps a settlement and the next card read alike:
    ``check`` must take the read as showing it (before the fix: 100.00 card, 30.00
    captured, ``check(70.00)`` answered usable 40.00)."""
    shop = Shop(tmp_path, clock=ManualClock(), settings_overrides={"check_cache_ttl": 0})
    try:
        card = shop.card(amount="100.00")
        hold = shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="F")
        shop.payments.capture(hold.id)
        shop.sandbox.run_until_idle()  # settled at the frozen instant
        decision = shop.payments.check(card, Decimal("70.00"), "EUR")
        assert decision.ok
        assert decision.usable_amount == Decimal("70.00")
        # reserve is still conservative on a tie and reads again, never refusing falsely:
        assert shop.payments.reserve(card, amount="70.00", currency="EUR", order_ref="G")
    finally:
        shop.payments.client.close()


# ------------------------------------------- defect 6: an exact in-shop spend, strictly


def _exact_spend_during_an_unknown_capture(shop: Shop) -> OperationState:
    card = shop.card(amount="100.00")
    hold = shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="S")
    shop.sandbox.faults.add("update_giftcard", Fault.server_error(503))  # never enqueued
    operation = shop.payments.capture(hold.id)
    assert operation.state is OperationState.UNKNOWN
    shop.sandbox.spend_in_shop(card, "30.00")  # a till, the very same amount
    settings = shop.payments.settings
    shop.clock.advance(settings.reconcile_window + 1)
    shop.payments.reconcile()
    return shop.payments.get_operation(operation.id).state


def test_balance_evidence_is_fooled_by_an_exact_in_shop_spend(shop: Shop) -> None:
    """The documented limit of balance-only evidence (docs/design.md, docs/operations.md):
    by default the capture is settled as applied although 4WS never took it."""
    assert _exact_spend_during_an_unknown_capture(shop) is OperationState.SUCCEEDED


def test_strict_evidence_sends_it_to_review_instead(tmp_path: Path) -> None:
    """``settle_by_balance=False``: the balance alone never settles an ambiguous capture as
    applied; after the window it waits in manual review for an operator."""
    shop = Shop(tmp_path, settings_overrides={"settle_by_balance": False})
    try:
        assert _exact_spend_during_an_unknown_capture(shop) is OperationState.MANUAL_REVIEW
    finally:
        shop.payments.client.close()


# ---------------------------------------------------------------- the queue's promises


def test_a_queued_refund_waits_for_a_capture_in_flight(shop: Shop) -> None:
    card = shop.card(amount="100.00")
    paid = shop.payments.reserve(card, amount="40.00", currency="EUR", order_ref="P")
    capture = shop.payments.capture(paid.id)
    shop.settle()
    other = shop.payments.reserve(card, amount="20.00", currency="EUR", order_ref="Q")
    in_flight = shop.payments.capture(other.id)
    refund = shop.payments.refund(capture.id, amount="15.00")
    assert refund.state is OperationState.QUEUED
    with pytest.raises(InvalidAmountError):  # the queued refund counts: 25.00 left
        shop.payments.refund(capture.id, amount="30.00")
    shop.settle()
    shop.settle()
    assert shop.payments.get_operation(in_flight.id).state is OperationState.SUCCEEDED
    assert shop.payments.get_operation(refund.id).state is OperationState.SUCCEEDED
    assert shop.sandbox.balance(card) == Decimal("55.00")
    shop.audit()


def test_a_queued_capture_the_card_can_no_longer_pay_fails_at_its_turn(shop: Shop) -> None:
    """Spent in a shop while it waited: at its turn, the fresh read refuses it with the
    reason and a payment event; nothing is posted."""
    card = shop.card(amount="100.00")
    first = shop.payments.reserve(card, amount="50.00", currency="EUR", order_ref="A")
    second = shop.payments.reserve(card, amount="50.00", currency="EUR", order_ref="B")
    shop.payments.capture(first.id)
    waiting = shop.payments.capture(second.id)
    shop.sandbox.spend_in_shop(card, "20.00")
    posts = len(shop.sandbox.requests_to("update_giftcard"))
    shop.settle()
    failed = shop.payments.get_operation(waiting.id)
    assert failed.state is OperationState.FAILED
    assert "re-check refused" in (failed.message or "")
    assert len(shop.sandbox.requests_to("update_giftcard")) == posts
    (event,) = [e for e in shop.recorder.events if e.kind is EventKind.CAPTURE_FAILED]
    assert event.details["reason"] == RefusalReason.INSUFFICIENT_BALANCE.value
    assert event.operation is not None
    assert event.operation.id == waiting.id
    shop.payments.release(second.id)  # its hold is the shop's to let go now
    shop.audit()


def test_a_failed_read_at_its_turn_gives_the_turn_back(shop: Shop) -> None:
    """4WS unreachable when the turn comes: the operation waits again (``queued``), and
    the next reconcile posts it; nothing is failed that the shop was promised."""
    card = shop.card(amount="100.00")
    first = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="A")
    second = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="B")
    shop.payments.capture(first.id)
    waiting = shop.payments.capture(second.id)
    shop.sandbox.faults.add("get_giftcard", Fault.server_error(503), times=10)
    shop.settle()
    assert shop.payments.get_operation(waiting.id).state is OperationState.QUEUED
    shop.sandbox.faults.clear()
    report = shop.payments.reconcile()
    assert [op.id for op in report.advanced] == [waiting.id]
    shop.settle()
    assert shop.payments.get_operation(waiting.id).state is OperationState.SUCCEEDED
    shop.audit()


def test_a_lost_callback_holds_the_queue_only_until_reconcile_looks_early(shop: Shop) -> None:
    """The blocker's callback is lost: a reconcile after ``queue_probe_after`` (well before
    ``callback_timeout``) settles it from the balance and posts what waited behind it."""
    card = shop.card(amount="100.00")
    first = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="A")
    second = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="B")
    shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    blocker = shop.payments.capture(first.id)
    waiting = shop.payments.capture(second.id)
    shop.sandbox.run_until_idle()  # 4WS applies the first; its callback never comes
    settings = shop.payments.settings
    shop.payments.reconcile()  # too early to look: nothing moves
    assert shop.payments.get_operation(waiting.id).state is OperationState.QUEUED
    shop.clock.advance(settings.queue_probe_after + 1)
    assert settings.queue_probe_after + 1 < settings.callback_timeout
    report = shop.payments.reconcile()
    assert [op.id for op in report.succeeded] == [blocker.id]
    assert [op.id for op in report.advanced] == [waiting.id]
    shop.settle()
    assert shop.payments.get_operation(waiting.id).state is OperationState.SUCCEEDED
    assert shop.sandbox.balance(card) == Decimal("80.00")
    shop.audit()


def test_a_queued_hold_is_pinned_twin(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    """With queued captures not pinning their holds (the protection off), a sweep while
    one waits expires its hold and the shop's accepted capture fails at its turn."""
    unpinned = transitions.HOLDING_OPERATION_STATES - {OperationState.QUEUED}
    monkeypatch.setattr(transitions, "HOLDING_OPERATION_STATES", unpinned)
    from fourws_pay.payments import settlement

    monkeypatch.setattr(settlement, "HOLDING_OPERATION_STATES", unpinned)
    card = shop.card(amount="100.00")
    first = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="A", ttl=60)
    second = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="B", ttl=60)
    shop.payments.capture(first.id)
    waiting = shop.payments.capture(second.id)
    shop.clock.advance(120)
    shop.payments.sweep()
    assert shop.payments.get_reservation(second.id).state is ReservationState.EXPIRED
    shop.settle()
    assert shop.payments.get_operation(waiting.id).state is OperationState.FAILED


def test_concurrent_advances_give_one_turn(shop: Shop) -> None:
    """Two workers advancing the same card's queue at once: one claims, the other finds
    the card busy with that claim and stops; one POST."""
    card = shop.card(amount="100.00")
    first = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="A")
    second = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="B")
    shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    blocker = shop.payments.capture(first.id)
    waiting = shop.payments.capture(second.id)
    shop.sandbox.run_until_idle()
    other = shop.new_provider()
    with contextlib.closing(other.client):
        # The blocker settles by a late callback; both workers then advance at once.
        path = shop.callback_urls[blocker.id]
        body = (
            b'{"success":true,"id":"late","payload":{"operation_id":"'
            + blocker.id.encode()
            + b'"}}'
        )
        shop.payments.core.handle_callback(urlsplit(path).path, body)
        results: list[Any] = []
        barrier = threading.Barrier(2)

        def advance(provider: Any) -> None:
            barrier.wait(5)
            results.append(provider._run(provider.core.advance_queue(card)))

        threads = [threading.Thread(target=advance, args=(p,)) for p in (shop.payments, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    posted = [op for turn in results for op in turn]
    assert [op.id for op in posted] == [waiting.id]
    assert shop.consumption_counts()[waiting.id] <= 1
    shop.settle()
    assert shop.payments.get_operation(waiting.id).state is OperationState.SUCCEEDED
    shop.audit()
