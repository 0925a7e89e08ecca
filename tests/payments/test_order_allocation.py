"""One order paid with several gift cards (``reserve_order``, ``capture_order``,
``release_order``): who pays how much, all or nothing, idempotent per allocation key.

The second-worker tests drive the allocation effect by effect (``run_stepped``) and let
another provider on the same ledger act between its steps: reserving, capturing and
settling on one of the cards, or running the same allocation. Each checks that no card is
held beyond its balance and no card gets two holds of one allocation; the twins switch the
protection off and show it going wrong.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fourws_pay import (
    AsyncGiftCardPayments,
    CurrencyMismatchError,
    InvalidAmountError,
    InvalidInputError,
    OrderAllocation,
    OrderAllocationError,
    RefusalReason,
    ServerError,
    make_plugin_manager,
)
from fourws_pay.payments import order_allocation
from fourws_pay.payments.core import PaymentsCore
from fourws_pay.payments.effects import ReadCard
from fourws_pay.payments.models import OperationState, ReservationState
from tests.payments.harness import Shop, run_stepped
from tests.services import StoreFactory

A, B, C = "7000000000001", "7000000000002", "7000000000003"


class _Crash(Exception):
    """The process dies here (no ``finally`` of the flow releases anything)."""


def _cards(shop: Shop, **balances_and_days: tuple[str, int]) -> None:
    """Cards by name (``A=("30.00", 300)``): balance and days until the card expires."""
    now = shop.clock.now()
    barcodes = {"A": A, "B": B, "C": C}
    for name, (amount, days) in balances_and_days.items():
        shop.card(barcodes[name], amount=amount, expiration_date=now + timedelta(days=days))


def _shares(allocation: OrderAllocation) -> dict[str, Decimal]:
    return {r.barcode: r.applied_amount for r in allocation.reservations}


def _active(shop: Shop, order_ref: str = "O-1") -> list[Any]:
    return shop.payments.list_reservations([ReservationState.ACTIVE], order_ref=order_ref)


def _check_no_card_over_held(shop: Shop) -> None:
    """Invariant 2 per card, against the balance 4WS has now."""
    for barcode in shop.sandbox.books.cards:
        balance = shop.sandbox.balance(barcode)
        assert shop.held(barcode) <= balance, f"card {barcode[-4:]} held beyond its balance"


# ------------------------------------------------------------------------- the rule


def test_the_card_expiring_first_pays_first(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    allocation = shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    assert _shares(allocation) == {A: Decimal("10.00"), B: Decimal("50.00")}
    assert allocation.applied_amount == Decimal("60.00")
    assert allocation.remaining == 0
    assert [r.barcode for r in allocation.reservations] == [A, B]  # the order given
    assert {r.order_ref for r in allocation.reservations} == {"O-1"}


def test_same_expiry_the_smallest_balance_pays_first(shop: Shop) -> None:
    _cards(shop, A=("50.00", 90), B=("20.00", 90), C=("40.00", 90))
    allocation = shop.payments.reserve_order("O-1", cards=[A, B, C], amount="55", currency="EUR")
    assert _shares(allocation) == {B: Decimal("20.00"), C: Decimal("35.00")}
    assert shop.held(A) == 0  # a card that pays nothing gets no hold


def test_a_card_without_expiry_pays_last(shop: Shop) -> None:
    _cards(shop, A=("10.00", 90), B=("10.00", 3000))
    shop.sandbox.books.cards[B].expiration_date = None  # valid for ever
    allocation = shop.payments.reserve_order("O-1", cards=[B, A], amount="15", currency="EUR")
    assert _shares(allocation) == {A: Decimal("10.00"), B: Decimal("5.00")}


def test_explicit_split(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    allocation = shop.payments.reserve_order(
        "O-1", cards=[A, B], amount="60", currency="EUR", split={A: "25", B: "35.00"}
    )
    assert _shares(allocation) == {A: Decimal("25.00"), B: Decimal("35.00")}


def test_a_split_that_does_not_add_up_is_refused_before_any_read(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    with pytest.raises(InvalidAmountError):
        shop.payments.reserve_order(
            "O-1", cards=[A, B], amount="60", currency="EUR", split={A: "25", B: "30"}
        )
    with pytest.raises(InvalidInputError):
        shop.payments.reserve_order("O-1", cards=[A], amount="60", currency="EUR", split={B: 60})
    assert shop.sandbox.requests_to("get_giftcard") == []


def test_a_share_beyond_its_card_is_refused_with_nothing_held(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    with pytest.raises(OrderAllocationError) as caught:
        shop.payments.reserve_order(
            "O-1", cards=[A, B], amount="60", currency="EUR", split={A: "40", B: "20"}
        )
    assert caught.value.masked_barcode == "*********0001"
    assert caught.value.reason is RefusalReason.INSUFFICIENT_BALANCE
    assert shop.payments.list_reservations() == []


def test_shares_are_rounded_to_each_cards_digits(shop: Shop) -> None:
    now = shop.clock.now()
    shop.card(A, amount="7", decimals=0, expiration_date=now + timedelta(days=10))
    shop.card(B, amount="50.00", expiration_date=now + timedelta(days=20))
    allocation = shop.payments.reserve_order("O-1", cards=[A, B], amount="9.99", currency="EUR")
    assert _shares(allocation) == {A: Decimal("7"), B: Decimal("2.99")}
    with pytest.raises(InvalidAmountError):  # more digits than any card has
        shop.payments.reserve_order(
            "O-2", cards=[A, B], amount="9.999", currency="EUR", allocation_key="k"
        )


def test_a_one_go_card_pays_its_whole_balance_or_nothing(shop: Shop) -> None:
    now = shop.clock.now()
    shop.card(A, amount="30.00", partial_usage=False, expiration_date=now + timedelta(days=5))
    _cards(shop, B=("100.00", 50))
    allocation = shop.payments.reserve_order("O-1", cards=[A, B], amount="40", currency="EUR")
    assert _shares(allocation) == {A: Decimal("30.00"), B: Decimal("10.00")}
    smaller = shop.payments.reserve_order("O-2", cards=[A, B], amount="20", currency="EUR")
    assert _shares(smaller) == {B: Decimal("20.00")}  # A already held by O-1, and too big


def test_cards_short_of_the_order_are_refused_unless_partial(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300), B=("20.00", 30))
    with pytest.raises(OrderAllocationError) as caught:
        shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    assert caught.value.masked_barcode is None
    assert caught.value.reason is RefusalReason.INSUFFICIENT_BALANCE
    assert shop.payments.list_reservations() == []
    allocation = shop.payments.reserve_order(
        "O-1", cards=[A, B], amount="60", currency="EUR", allow_partial=True
    )
    assert allocation.applied_amount == Decimal("50.00")
    assert allocation.remaining == Decimal("10.00")  # for the credit card


def test_a_card_in_another_currency_is_refused_before_any_write(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300))
    shop.card(B, amount="50.00", currency="USD")
    with pytest.raises(CurrencyMismatchError) as caught:
        shop.payments.reserve_order("O-1", cards=[A, B], amount="40", currency="EUR")
    assert "*********0002" in str(caught.value)
    assert B not in str(caught.value)
    assert shop.payments.list_reservations() == []


def test_a_refused_card_is_named_masked_and_nothing_is_held(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300))
    shop.card(B, amount="50.00", active=False)
    with pytest.raises(OrderAllocationError) as caught:
        shop.payments.reserve_order("O-1", cards=[A, B], amount="40", currency="EUR")
    assert caught.value.masked_barcode == "*********0002"
    assert caught.value.reason is RefusalReason.INACTIVE
    assert not caught.value.retryable
    assert shop.payments.list_reservations() == []


def test_bad_input_is_a_typed_error(shop: Shop) -> None:
    for cards in ([], [A, A], A, [A] * 11, [""]):
        with pytest.raises(InvalidInputError):
            shop.payments.reserve_order("O-1", cards=cards, amount="10", currency="EUR")
    with pytest.raises(InvalidAmountError):
        shop.payments.reserve_order("O-1", cards=[A], amount="-1", currency="EUR")


# ------------------------------------------------------------------ all or nothing


def _refuse_the_second_hold(shop: Shop) -> Any:
    """Run an allocation of 60 over A (30, expiring last) and B (50, expiring first): B
    holds 50, then A 10. After the planning reads, before any hold, a second worker holds
    25 of A: A's hold, decided under A's lock, is refused after B's was placed."""
    other = shop.new_provider()

    def between(moment: str, effect: Any) -> None:
        if moment == "after" and isinstance(effect, ReadCard) and effect.barcode == B:
            other.reserve(A, amount="25.00", currency="EUR", order_ref="OTHER")

    flow = shop.payments.core.reserve_order(
        "O-1", [A, B], "60", "EUR", "checkout", None, None, False, None
    )
    return run_stepped(shop.payments, flow, between)


def test_second_card_refused_releases_the_first_hold_and_nothing_is_captured(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    with pytest.raises(OrderAllocationError) as caught:
        _refuse_the_second_hold(shop)
    error = caught.value
    assert error.masked_barcode == "*********0001"
    assert error.reason is RefusalReason.INSUFFICIENT_BALANCE
    (released,) = error.released
    assert shop.payments.get_reservation(released).barcode == B
    assert shop.payments.get_reservation(released).state is ReservationState.RELEASED
    assert [r.order_ref for r in _active(shop, "OTHER")] == ["OTHER"]
    assert _active(shop) == []
    assert shop.payments.capture_order("O-1") == []
    shop.settle()
    assert shop.sandbox.requests_to("update_giftcard") == []
    assert shop.held(B) == 0


def test_twin_without_the_release_the_first_hold_stays(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twin: with the all-or-nothing release switched off, the failed allocation leaves
    B's hold counting, and capture_order takes 50 for an order that was refused."""
    monkeypatch.setattr(PaymentsCore, "_undo", lambda self, holds: ())
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    with pytest.raises(OrderAllocationError):
        _refuse_the_second_hold(shop)
    assert [r.barcode for r in _active(shop)] == [B]  # what the protection prevents
    shop.payments.capture_order("O-1")
    shop.settle()
    assert shop.sandbox.balance(B) == 0


def test_a_4ws_error_on_a_later_hold_is_retryable_and_rolls_back(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    original = PaymentsCore._reserve_on_card

    def failing(self: Any, barcode: str, *args: Any, **kwargs: Any) -> Any:
        if barcode == A:
            raise ServerError("4WS is down", status_code=503, endpoint="getGiftcard")
        return (yield from original(self, barcode, *args, **kwargs))

    monkeypatch.setattr(PaymentsCore, "_reserve_on_card", failing)
    with pytest.raises(OrderAllocationError) as caught:
        shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    assert caught.value.retryable
    assert caught.value.reason is None
    assert isinstance(caught.value.cause, ServerError)
    assert _active(shop) == []
    monkeypatch.undo()
    again = shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    assert _shares(again) == {A: Decimal("10.00"), B: Decimal("50.00")}
    assert len(_active(shop)) == 2  # a new attempt: the rolled-back holds stay released


# ---------------------------------------------------------------------- idempotence


def test_a_retry_returns_the_same_holds(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    first = shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    again = shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    assert again == first
    assert len(shop.payments.list_reservations()) == 2
    other_key = shop.payments.reserve_order(
        "O-1", cards=[A, B], amount="10", currency="EUR", allocation_key="tip"
    )
    assert {r.id for r in other_key.reservations}.isdisjoint({r.id for r in first.reservations})


def test_a_retry_with_the_key_for_other_cards_is_refused(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30), C=("50.00", 30))
    shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    with pytest.raises(InvalidInputError):
        shop.payments.reserve_order("O-1", cards=[A, C], amount="60", currency="EUR")
    with pytest.raises(InvalidInputError):
        shop.payments.reserve_order(
            "O-1", cards=[A, B], amount="60", currency="EUR", split={A: 30, B: 30}
        )
    with pytest.raises(InvalidInputError):
        shop.payments.reserve_order("O-1", cards=[A, B], amount="50", currency="EUR")
    assert len(shop.payments.list_reservations()) == 2


def test_a_crash_between_holds_is_finished_by_the_retry(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30))

    def crash(name: str) -> None:
        if name == "reserve_order.between_holds":
            raise _Crash

    with monkeypatch.context() as patch:
        patch.setattr(order_allocation, "crash_point", crash)
        with pytest.raises(_Crash):
            shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    (left,) = _active(shop)
    assert left.barcode == B  # the first hold of the plan; it expires if nobody retries
    shop.payments = shop.new_provider()  # a restart
    done = shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    assert _shares(done) == {A: Decimal("10.00"), B: Decimal("50.00")}
    assert left.id in {r.id for r in done.reservations}
    assert len(shop.payments.list_reservations()) == 2


def test_holds_left_by_a_crash_count_only_until_they_expire(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    monkeypatch.setattr(order_allocation, "crash_point", lambda name: (_ for _ in ()).throw(_Crash))
    with pytest.raises(_Crash):
        shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR", ttl=60)
    assert shop.held(B) == Decimal("50.00")
    shop.clock.advance(61)
    assert shop.held(B) == 0
    monkeypatch.undo()
    # The retry starts over (a new generation): the expired attempt is not resurrected.
    done = shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    assert done.applied_amount == Decimal("60.00")
    assert len(_active(shop)) == 2


def test_an_allocation_once_captured_is_returned_as_it_is(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    first = shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    shop.payments.capture_order("O-1")
    shop.settle()
    again = shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    assert [r.id for r in again.reservations] == [r.id for r in first.reservations]
    assert {r.state for r in again.reservations} == {ReservationState.CAPTURED}
    assert len(shop.payments.list_reservations()) == 2


# -------------------------------------------------------------- capture and release


def test_capture_order_and_release_order_are_safe_to_rerun(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    captures = shop.payments.capture_order("O-1")
    assert sorted(op.amount for op in captures) == [Decimal("10.00"), Decimal("50.00")]
    assert [op.id for op in shop.payments.capture_order("O-1")] == [op.id for op in captures]
    shop.settle()
    assert shop.sandbox.balance(A) == Decimal("20.00")
    assert shop.sandbox.balance(B) == 0
    assert shop.payments.release_order("O-1") == []  # captured holds are not released
    shop.payments.reserve_order("O-2", cards=[A], amount="5", currency="EUR")
    (released,) = shop.payments.release_order("O-2")
    assert released.state is ReservationState.RELEASED
    assert shop.payments.release_order("O-2") == []
    shop.audit()


def test_capture_order_queues_behind_a_busy_card(shop: Shop) -> None:
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    earlier = shop.payments.reserve(A, amount="5.00", currency="EUR", order_ref="EARLIER")
    shop.payments.capture(earlier.id)  # in flight until 4WS calls back
    shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    captures = {op.barcode: op for op in shop.payments.capture_order("O-1")}
    assert captures[A].state is OperationState.QUEUED
    assert captures[B].state is OperationState.ENQUEUED
    shop.settle()
    shop.settle()
    assert shop.sandbox.balance(A) == Decimal("15.00")
    assert shop.sandbox.balance(B) == 0
    shop.audit()


# -------------------------------------------------------------- a second worker


def test_a_second_worker_spending_a_card_between_steps_never_over_spends_it(
    shop: Shop,
) -> None:
    """Between the allocation's planning read of B and its hold, a second worker holds,
    captures and settles 45 of B (4WS applies it): B's hold is decided under B's lock
    with that capture counted (and B read again), so it is refused; nothing is held."""
    _cards(shop, A=("30.00", 300), B=("50.00", 30))
    other = shop.new_provider()
    spent = False

    def between(moment: str, effect: Any) -> None:
        nonlocal spent
        if spent or moment != "after" or not isinstance(effect, ReadCard):
            return
        if effect.barcode == B:  # its planning read (its hold reads it again)
            spent = True
            hold = other.reserve(B, amount="45.00", currency="EUR", order_ref="SHOP-TILL")
            other.capture(hold.id)
            shop.settle()

    flow = shop.payments.core.reserve_order(
        "O-1", [A, B], "60", "EUR", "checkout", None, None, False, None
    )
    with pytest.raises(OrderAllocationError) as caught:
        run_stepped(shop.payments, flow, between)
    assert caught.value.masked_barcode == "*********0002"
    assert caught.value.reason is RefusalReason.INSUFFICIENT_BALANCE
    assert _active(shop) == []
    _check_no_card_over_held(shop)
    assert shop.sandbox.balance(B) == Decimal("5.00")
    shop.audit()


def _same_allocation_run_by_a_second_worker(shop: Shop) -> OrderAllocation:
    """A (100, expiring last) and B (100, expiring first) pay an order of 60: B pays it
    all. The host retries the allocation on another node once the first run has read
    both cards and placed nothing yet; the first run then goes on."""
    _cards(shop, A=("100.00", 300), B=("100.00", 30))
    other = shop.new_provider()
    reads = 0
    retried: list[OrderAllocation] = []

    def between(moment: str, effect: Any) -> None:
        nonlocal reads
        if moment == "after" and isinstance(effect, ReadCard):
            reads += 1
            if reads == 2:
                retried.append(
                    other.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
                )

    flow = shop.payments.core.reserve_order(
        "O-1", [A, B], "60", "EUR", "checkout", None, None, False, None
    )
    first: OrderAllocation = run_stepped(shop.payments, flow, between)
    assert retried == [first]
    return first


def test_a_second_worker_running_the_same_allocation_places_no_second_hold(
    shop: Shop,
) -> None:
    first = _same_allocation_run_by_a_second_worker(shop)
    assert _shares(first) == {B: Decimal("60.00")}
    assert len(shop.payments.list_reservations()) == 1
    assert shop.held(B) == Decimal("60.00")
    assert shop.held(A) == 0


def test_twin_without_the_hold_id_a_concurrent_retry_holds_twice(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twin: hold ids no longer derived from the allocation (each run its own), the
    concurrent retry above holds the order a second time."""
    counter = iter(range(1_000_000))
    monkeypatch.setattr(order_allocation, "_hold_id", lambda *_: f"res_{next(counter):032d}")
    with pytest.raises(AssertionError):
        _same_allocation_run_by_a_second_worker(shop)
    held = sum((r.applied_amount for r in _active(shop)), Decimal(0))
    assert held == Decimal("120.00")  # what the protection prevents: 60 held twice


# ------------------------------------------------------------------ every store


def test_allocation_rollback_and_retry_on_every_store(
    store_factory: StoreFactory, tmp_path: Path
) -> None:
    shop = Shop(tmp_path, ledger=store_factory())
    try:
        _cards(shop, A=("30.00", 300), B=("50.00", 30))
        with pytest.raises(OrderAllocationError):
            _refuse_the_second_hold(shop)
        assert _active(shop) == []
        shop.payments.release_order("OTHER")
        first = shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
        assert shop.payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR") == (
            first
        )
        assert _shares(first) == {A: Decimal("10.00"), B: Decimal("50.00")}
        shop.payments.capture_order("O-1")
        shop.settle()
        assert shop.sandbox.balance(A) == Decimal("20.00")
        assert shop.sandbox.balance(B) == 0
        shop.audit()
    finally:
        shop.payments.client.close()


# ------------------------------------------------------------------- async twin


async def test_async_twin_allocates_captures_and_releases_alike(shop: Shop) -> None:
    payments = AsyncGiftCardPayments(
        settings=shop.settings(),
        client=shop.sandbox.async_client(),
        store=shop.store,
        clock=shop.clock,
        plugin_manager=make_plugin_manager(load_entrypoints=False),
    )

    async def deliver(url: str, body: bytes) -> int:
        return (await payments.handle_callback(urlsplit(url).path, body)).status_code

    shop.sandbox.set_callback_handler(deliver)
    _cards(shop, A=("30.00", 300), B=("50.00", 30), C=("5.00", 30))
    allocation = await payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    assert _shares(allocation) == {A: Decimal("10.00"), B: Decimal("50.00")}
    again = await payments.reserve_order("O-1", cards=[A, B], amount="60", currency="EUR")
    assert again == allocation
    with pytest.raises(OrderAllocationError):
        await payments.reserve_order("O-2", cards=[C, A], amount="30", currency="EUR")
    assert await payments.list_reservations([ReservationState.ACTIVE], order_ref="O-2") == []
    captures = await payments.capture_order("O-1")
    await shop.sandbox.aprocess_queue()
    assert {(await payments.get_operation(op.id)).state for op in captures} == {
        OperationState.SUCCEEDED
    }
    assert await payments.release_order("O-1") == []
    assert shop.sandbox.balance(A) == Decimal("20.00")
    assert shop.sandbox.balance(B) == 0
    shop.audit()
    await payments.aclose()
