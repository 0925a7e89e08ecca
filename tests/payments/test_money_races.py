"""Races found by an adversarial shop, each proved fixed by a scenario and its broken twin.

Same pairing as ``test_invariants.py``: ``test_race_is_handled[name]`` runs the scenario
against the real provider; ``test_race_is_caught_without_its_protection[name]`` switches off
exactly the protection the scenario relies on (one named seam) and requires it to fail.
The second worker acts between the first worker's steps through ``run_stepped`` (before
and after each 4WS call, where no ledger transaction is open).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fourws_pay import (
    AmbiguousOutcomeError,
    AsyncGiftCardPayments,
    CardBusyError,
    PaymentRefused,
    make_plugin_manager,
)
from fourws_pay.api.retry import worst_case_seconds
from fourws_pay.payments import checkout, core, crash, service, transitions
from fourws_pay.payments.models import (
    IN_FLIGHT_OPERATION_STATES,
    OperationState,
)
from fourws_pay.sandbox.faults import Fault
from tests.payments.harness import Shop
from tests.services import StoreFactory

# ----------------------------------------------------------- manual review keeps busy


def manual_review_keeps_the_card_busy(shop: Shop) -> None:
    """A capture in manual review may still be applied by 4WS. A second capture on the same
    card must not be posted meanwhile, or a late debit of the first would be read as proof
    of the second (ledger 80.00 settled, 4WS 40.00 taken)."""
    card = shop.card(amount="100.00")
    week = 7 * 86_400
    first = shop.payments.reserve(card, amount="40.00", currency="EUR", order_ref="A", ttl=week)
    second = shop.payments.reserve(card, amount="40.00", currency="EUR", order_ref="B", ttl=week)
    shop.sandbox.faults.add("update_giftcard", Fault.hang(after_enqueue=True))
    shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    shop.payments.capture(first.id)  # enqueued at 4WS, answer lost: unknown
    settings = shop.payments.settings
    shop.clock.advance(settings.callback_timeout + settings.reconcile_window + 1)
    assert [op.state for op in shop.payments.reconcile().manual_review] == [
        OperationState.MANUAL_REVIEW
    ]
    shop.sandbox.faults.add("update_giftcard", Fault.server_error(503))  # never enqueued
    posts = len(shop.sandbox.requests_to("update_giftcard"))
    waiting = shop.payments.capture(second.id)
    assert waiting.state is OperationState.QUEUED  # accepted, not posted
    assert len(shop.sandbox.requests_to("update_giftcard")) == posts
    shop.sandbox.run_until_idle()  # 4WS applies the first capture, late; its callback is lost
    shop.clock.advance(settings.callback_timeout + settings.reconcile_window + 1)
    shop.payments.reconcile()  # the card is still in review: the queue does not move
    assert shop.payments.get_operation(waiting.id).state is OperationState.QUEUED
    shop.audit()
    # The operator unblocks the card (having asked 4WS), and the second capture goes through.
    (review,) = shop.store.list_operations([OperationState.MANUAL_REVIEW])
    shop.sandbox.faults.clear()
    shop.payments.resolve(review.id, applied=True, note="4WS support: applied on 12 May")
    assert shop.payments.get_operation(waiting.id).state is OperationState.ENQUEUED
    shop.settle()
    assert shop.payments.get_operation(waiting.id).state is OperationState.SUCCEEDED
    shop.audit()
    assert shop.sandbox.balance(card) == Decimal("20.00")


def break_manual_review_keeps_the_card_busy(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(transitions, "CARD_BUSY_STATES", IN_FLIGHT_OPERATION_STATES)


# ----------------------------------------------------------- a live POST is not "crashed"


def live_post_is_not_declared_crashed(shop: Shop) -> None:
    """The client may spend its whole retry budget on a POST's unsent attempts (pool and
    connect phases, with backoff). A second worker reconciling meanwhile must not turn the
    live send into ``unknown``; the capture ends ``enqueued`` and CAPTURED is emitted."""
    card = shop.card(amount="100.00")
    hold = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="A")
    other_worker = shop.new_provider()
    client = shop.payments.client
    post = client.update_giftcard
    budget = worst_case_seconds(shop.payments.settings, idempotent=False)

    def slow_post(update: Any) -> Any:
        shop.clock.advance(budget - 1)  # connect attempts and backoffs, all within budget
        other_worker.reconcile()
        return post(update)

    client.update_giftcard = slow_post  # type: ignore[method-assign]
    operation = shop.payments.capture(hold.id)
    assert operation.state is OperationState.ENQUEUED
    assert "captured" in shop.recorder.kinds()
    other_worker.client.close()
    shop.settle()
    shop.audit()


def break_live_post_is_not_declared_crashed(mp: pytest.MonkeyPatch) -> None:
    init = core.PaymentsCore.__init__

    def short_grace(self: core.PaymentsCore, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        s = self.settings
        self.send_grace = timedelta(seconds=s.connect_timeout + s.read_timeout + 5)  # was

    mp.setattr(core.PaymentsCore, "__init__", short_grace)


# ----------------------------------------------- reserve re-reads late settlements


def reserve_rereads_instead_of_refusing(shop: Shop) -> None:
    """A capture settled at the instant of a reserve's read: the read shows it, so counting
    it again would refuse a card that can pay. The reserve reads again instead."""
    card = shop.card(amount="100.00")
    first = shop.payments.reserve(card, amount="70.00", currency="EUR", order_ref="A")
    shop.payments.capture(first.id)
    shop.sandbox.run_until_idle()  # settled now; no time passes
    rest = shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="B")
    assert rest.amount == Decimal("30.00")
    assert len(shop.sandbox.requests_to("get_giftcard")) >= 4  # 2 reserves, 1 capture, re-read
    shop.audit()


def break_reserve_rereads_instead_of_refusing(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(checkout, "_outcome", lambda decision: (True, None, Decimal(0)))  # never re-read


RACES: dict[str, tuple[Callable[[Shop], None], Callable[[pytest.MonkeyPatch], None]]] = {
    "manual_review_keeps_the_card_busy": (
        manual_review_keeps_the_card_busy,
        break_manual_review_keeps_the_card_busy,
    ),
    "live_post_is_not_declared_crashed": (
        live_post_is_not_declared_crashed,
        break_live_post_is_not_declared_crashed,
    ),
    "reserve_rereads_instead_of_refusing": (
        reserve_rereads_instead_of_refusing,
        break_reserve_rereads_instead_of_refusing,
    ),
}


@pytest.mark.parametrize("name", sorted(RACES))
def test_race_is_handled(name: str, shop: Shop) -> None:
    scenario, _ = RACES[name]
    scenario(shop)


@pytest.mark.parametrize("name", sorted(RACES))
def test_race_is_caught_without_its_protection(
    name: str, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario, disable = RACES[name]
    disable(monkeypatch)
    with pytest.raises((Exception, pytest.fail.Exception)):
        scenario(shop)


# ------------------------------------------------------------------ retryable, not final


def test_a_lost_read_race_is_retryable_never_a_refusal_reason(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When settlements keep landing during every read, reserve gives up with
    ``CardBusyError`` (retry), not ``insufficient_balance`` (final)."""
    monkeypatch.setattr(checkout, "RESERVE_READS", 1)
    card = shop.card(amount="100.00")
    first = shop.payments.reserve(card, amount="70.00", currency="EUR", order_ref="A")
    shop.payments.capture(first.id)
    shop.sandbox.run_until_idle()
    with pytest.raises(CardBusyError) as busy:
        shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="B")
    assert not isinstance(busy.value, PaymentRefused)
    shop.clock.advance(1)  # the caller retries a moment later
    assert shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="B").amount == 30


def test_capture_while_another_is_in_flight_is_queued_and_posts_nothing(shop: Shop) -> None:
    """The second capture is written ``queued`` (its hold pinned) and posts nothing until
    the first settles; the first's callback gives it its turn."""
    card = shop.card(amount="100.00")
    first = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="A")
    second = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="B")
    first_op = shop.payments.capture(first.id)
    posts = len(shop.sandbox.requests_to("update_giftcard"))
    queued = shop.payments.capture(second.id)
    assert queued.state is OperationState.QUEUED
    assert queued.balance_before is None
    assert queued.callback_token_hash == ""
    assert len(shop.sandbox.requests_to("update_giftcard")) == posts
    (event,) = [e for e in shop.recorder.events if e.kind.value == "queued"]
    assert event.details["blocking_operation_id"] == first_op.id
    assert shop.payments.capture(second.id) == queued  # a retry finds it, writes nothing
    shop.sandbox.process_queue()
    assert shop.payments.get_operation(queued.id).state is OperationState.ENQUEUED
    shop.settle()
    assert shop.payments.get_operation(queued.id).state is OperationState.SUCCEEDED
    shop.audit()


def test_a_failed_evidence_read_abandons_the_claim(shop: Shop) -> None:
    """The card read after the claim fails: the claim is failed (never sent), the card is
    free again, and the hold can be captured later."""
    card = shop.card(amount="100.00")
    hold = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="A")
    for _ in range(shop.payments.settings.retry.max_attempts):
        shop.sandbox.faults.add("get_giftcard", Fault.server_error(503))
    with pytest.raises(Exception) as caught:
        shop.payments.capture(hold.id)
    assert not isinstance(caught.value, AmbiguousOutcomeError)
    (claim,) = shop.store.list_operations()
    assert claim.state is OperationState.FAILED
    assert shop.sandbox.requests_to("update_giftcard") == []
    assert shop.payments.capture(hold.id).state is OperationState.ENQUEUED


def test_refunds_have_their_own_crash_points(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(checkout, "crash_point", seen.append)
    card = shop.card(amount="100.00")
    hold = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="A")
    capture = shop.payments.capture(hold.id)
    shop.settle()
    seen.clear()
    shop.payments.refund(capture.id)
    assert seen == ["refund.after_prepare", "refund.after_sending", "refund.after_post"]
    assert set(seen) <= set(crash.CRASH_POINTS)


# -------------------------------------------------------------- the loop keeps ticking


def _loop_keeps_ticking(tmp_path: Path, factory: StoreFactory | None) -> int:
    """Another holder keeps the card's lock until the event loop has ticked 20 times
    while an async reserve waits for that lock; returns how many ticks it saw (the
    holder gives up after 3 s, so a blocked loop ends the test too)."""
    shop = Shop(tmp_path)
    store = factory() if factory is not None else shop.store
    card = shop.card(amount="100.00")
    payments = AsyncGiftCardPayments(
        settings=shop.settings(),
        client=shop.sandbox.async_client(),
        store=store,
        clock=shop.clock,
        plugin_manager=make_plugin_manager(load_entrypoints=False),
    )
    locked, enough = threading.Event(), threading.Event()
    ticks = 0

    def holder() -> None:
        with store.card_transaction(card):
            locked.set()
            enough.wait(3)  # bounded: a blocked loop never sets it

    async def main() -> int:
        nonlocal ticks
        thread = threading.Thread(target=holder)
        thread.start()
        await asyncio.to_thread(locked.wait, 5)
        task = asyncio.ensure_future(
            payments.reserve(card, amount="10.00", currency="EUR", order_ref="A")
        )
        seen_while_waiting = 0
        while not task.done():
            await asyncio.sleep(0.001)
            ticks += 1
            if not task.done():
                seen_while_waiting += 1
            if seen_while_waiting >= 20:
                enough.set()
        enough.set()
        reservation = await task
        assert reservation.amount == Decimal("10.00")
        await asyncio.to_thread(thread.join, 5)
        await payments.aclose()
        return seen_while_waiting

    try:
        return asyncio.run(main())
    finally:
        shop.payments.client.close()
        shop.store.close()


def test_async_provider_keeps_the_loop_ticking_while_a_card_is_locked(
    tmp_path: Path, store_factory: StoreFactory
) -> None:
    assert _loop_keeps_ticking(tmp_path, store_factory) >= 20


def test_loop_test_fails_when_ledger_work_runs_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def inline(self: Any, function: Any, *args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    monkeypatch.setattr(service.AsyncGiftCardPayments, "_off_loop", inline)
    assert _loop_keeps_ticking(tmp_path, None) < 20


def test_concurrent_checkouts_on_one_card_are_never_falsely_refused(shop: Shop) -> None:
    """Threads reserve and capture on one card while another thread keeps 4WS settling
    (callbacks landing at the very instants of the reads: the clock does not move). No
    capture of a granted hold is refused, none is retried (a busy card queues it), the
    books balance."""
    card = shop.card(amount="120.00")  # exactly 12 x 10.00: any double count refuses
    refusals: list[Exception] = []
    captured: list[str] = []
    done = threading.Event()
    pause = threading.Event()

    def settler() -> None:
        while not done.is_set():
            shop.sandbox.run_until_idle()
            pause.wait(0.0005)

    def checkout(n: int) -> None:
        try:
            hold = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref=f"T{n}")
            captured.append(shop.payments.capture(hold.id).id)  # queued if busy: no retry
        except PaymentRefused as exc:
            refusals.append(exc)

    background = threading.Thread(target=settler)
    background.start()
    workers = [threading.Thread(target=checkout, args=(n,)) for n in range(12)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    for _ in range(200):  # the queue drains as callbacks land; bounded
        if all(op.state is OperationState.SUCCEEDED for op in shop.store.list_operations()):
            break
        pause.wait(0.01)
    done.set()
    background.join(30)
    shop.sandbox.run_until_idle()
    assert refusals == []
    assert len(captured) == 12
    assert shop.sandbox.balance(card) == Decimal("0.00")
    shop.audit()
