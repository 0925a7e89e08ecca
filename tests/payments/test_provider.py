"""The provider's life cycle on the in-process sandbox: what a shop sees."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fourws_pay import (
    CallbackRejected,
    InvalidAmountError,
    InvalidInputError,
    InvalidStateError,
    NotFoundInLedgerError,
    PaymentRefused,
    ThrottledError,
)
from fourws_pay.payments.models import OperationState, RefusalReason, ReservationState
from fourws_pay.sandbox.faults import Fault
from tests.payments.harness import Shop


def test_full_life_cycle(shop: Shop) -> None:
    card = shop.card(amount="100.00")
    reservation = shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="O-1")
    operation = shop.payments.capture(reservation.id)
    assert operation.state is OperationState.ENQUEUED
    assert shop.sandbox.balance(card) == Decimal("100.00")  # nothing applied yet
    shop.settle()
    assert shop.payments.get_operation(operation.id).state is OperationState.SUCCEEDED
    assert shop.payments.get_reservation(reservation.id).state is ReservationState.CAPTURED
    assert shop.sandbox.balance(card) == Decimal("70.00")
    refund = shop.payments.refund(operation.id, amount="10.00")
    shop.settle()
    assert shop.payments.get_operation(refund.id).state is OperationState.SUCCEEDED
    assert shop.sandbox.balance(card) == Decimal("80.00")
    assert shop.recorder.kinds() == ["reserved", "captured", "settled", "refunded"]
    shop.audit()


def test_check_uses_balance_minus_holds(shop: Shop) -> None:
    card = shop.card(amount="100.00")
    shop.payments.reserve(card, amount="60.00", currency="EUR", order_ref="O-1")
    shop.clock.advance(10)  # past the check cache
    decision = shop.payments.check(card, Decimal("50.00"), "EUR")
    assert decision.ok
    assert decision.usable_amount == Decimal("40.00")
    assert not decision.covers_full_amount
    strict = shop.payments.check(card, Decimal("50.00"), "EUR", allow_partial=False)
    assert strict.reason is RefusalReason.INSUFFICIENT_BALANCE


def test_partial_reservation_and_partial_capture(shop: Shop) -> None:
    card = shop.card(amount="40.00")
    reservation = shop.payments.reserve(
        card, amount="100.00", currency="EUR", order_ref="O-1", allow_partial=True
    )
    assert reservation.amount == Decimal("40.00")
    operation = shop.payments.capture(reservation.id, amount="25.00")
    shop.settle()
    assert shop.payments.get_operation(operation.id).state is OperationState.SUCCEEDED
    assert shop.sandbox.balance(card) == Decimal("15.00")
    # The uncaptured 15.00 is free again once the capture settled. (A read that starts at
    # the very instant of a settlement counts it as possibly not yet reflected.)
    shop.clock.advance(1)
    assert shop.payments.check(card, Decimal("15.00"), "EUR").covers_full_amount
    shop.audit()


def test_capture_is_idempotent_per_reservation(shop: Shop) -> None:
    card = shop.card()
    reservation = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    first = shop.payments.capture(reservation.id)
    second = shop.payments.capture(reservation.id)
    assert first.id == second.id
    assert len(shop.sandbox.requests_to("update_giftcard")) == 1


def test_release_is_idempotent_and_frees_the_balance(shop: Shop) -> None:
    card = shop.card(amount="50.00")
    reservation = shop.payments.reserve(card, amount="50.00", currency="EUR", order_ref="O")
    with pytest.raises(PaymentRefused):
        shop.payments.reserve(card, amount="1.00", currency="EUR", order_ref="O2")
    assert shop.payments.release(reservation.id).state is ReservationState.RELEASED
    assert shop.payments.release(reservation.id).state is ReservationState.RELEASED
    assert shop.recorder.kinds().count("released") == 1
    assert shop.payments.reserve(card, amount="50.00", currency="EUR", order_ref="O3")


def test_release_after_capture_is_refused(shop: Shop) -> None:
    card = shop.card()
    reservation = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    shop.payments.capture(reservation.id)
    with pytest.raises(InvalidStateError):
        shop.payments.release(reservation.id)


def test_refund_never_exceeds_capture(shop: Shop) -> None:
    card = shop.card()
    reservation = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    operation = shop.payments.capture(reservation.id)
    with pytest.raises(InvalidStateError):  # not settled yet
        shop.payments.refund(operation.id)
    shop.settle()
    shop.payments.refund(operation.id, amount="6.00")
    shop.settle()
    with pytest.raises(InvalidAmountError):
        shop.payments.refund(operation.id, amount="4.01")
    rest = shop.payments.refund(operation.id)
    assert rest.amount == Decimal("4.00")
    shop.settle()
    with pytest.raises(InvalidAmountError):
        shop.payments.refund(operation.id)
    assert shop.sandbox.balance(card) == Decimal("100.00")
    shop.audit()


def test_capture_failure_by_callback_keeps_hold_for_the_host(shop: Shop) -> None:
    card = shop.card(amount="20.00")
    reservation = shop.payments.reserve(card, amount="20.00", currency="EUR", order_ref="O")
    operation = shop.payments.capture(reservation.id)
    shop.sandbox.spend_in_shop(card, "15.00")  # the till got there first
    shop.settle()
    failed = shop.payments.get_operation(operation.id)
    assert failed.state is OperationState.FAILED
    assert failed.message
    assert "capture_failed" in shop.recorder.kinds()
    assert shop.payments.release(reservation.id).state is ReservationState.RELEASED
    shop.audit()


def test_unknown_ids_and_bad_input_are_typed(shop: Shop) -> None:
    card = shop.card()
    with pytest.raises(NotFoundInLedgerError):
        shop.payments.capture("res_nope")
    with pytest.raises(NotFoundInLedgerError):
        shop.payments.refund("op_nope")
    for bad in ("NaN", "Infinity", "-1", "0", 1.5, "abc", True):
        with pytest.raises(InvalidAmountError):
            shop.payments.reserve(card, amount=bad, currency="EUR", order_ref="O")
    with pytest.raises(InvalidInputError):
        shop.payments.reserve(card, amount="1", currency="EURO", order_ref="O")
    with pytest.raises(InvalidInputError):
        shop.payments.reserve("", amount="1", currency="EUR", order_ref="O")
    with pytest.raises(InvalidInputError):
        shop.payments.reserve(card, amount="1", currency="EUR", order_ref="")
    assert shop.sandbox.requests_to("get_giftcard") == []  # nothing reached 4WS
    assert shop.store.list_reservations() == []


def test_cart_hook_supplies_amount_and_currency(shop: Shop) -> None:
    from fourws_pay import CartSnapshot, hookimpl

    class Cart:
        @hookimpl
        def fourws_pay_cart_snapshot(self, order_ref: str) -> CartSnapshot | None:
            return CartSnapshot(order_ref, Decimal("12.50"), "EUR", client_code="C-1")

    cart = Cart()
    shop.payments.plugin_manager.register(cart)
    card = shop.card()
    reservation = shop.payments.reserve(card, order_ref="O-9")
    assert reservation.amount == Decimal("12.50")
    shop.payments.capture(reservation.id)
    body = shop.sandbox.pending()[-1].body
    assert body["clientCode"] == "C-1"
    shop.payments.plugin_manager.unregister(cart)
    with pytest.raises(InvalidInputError):
        shop.payments.reserve(card, order_ref="O-10")


def test_throttle_stops_guessing_before_4ws(shop: Shop) -> None:
    limit = shop.payments.settings.throttle_limit
    for n in range(limit):
        assert not shop.payments.check(f"99900000{n:05d}", Decimal(1), "EUR", client_key="ip-1").ok
    calls = len(shop.sandbox.requests_to("get_giftcard"))
    with pytest.raises(ThrottledError) as caught:
        shop.payments.check("9990000099999", Decimal(1), "EUR", client_key="ip-1")
    assert caught.value.retry_after > 0
    with pytest.raises(ThrottledError):
        shop.payments.reserve(
            "9990000099999", amount="1", currency="EUR", order_ref="O", client_key="ip-1"
        )
    assert len(shop.sandbox.requests_to("get_giftcard")) == calls
    assert shop.payments.check(shop.card(), Decimal(1), "EUR", client_key="ip-2").ok
    shop.clock.advance(shop.payments.settings.throttle_window + 1)
    assert not shop.payments.check("9990000099999", Decimal(1), "EUR", client_key="ip-1").ok


def test_check_cache_serves_repeat_lookups(shop: Shop) -> None:
    card = shop.card()
    for _ in range(5):
        shop.payments.check(card, Decimal(1), "EUR")
    assert len(shop.sandbox.requests_to("get_giftcard")) == 1
    shop.clock.advance(shop.payments.settings.check_cache_ttl + 0.1)
    shop.payments.check(card, Decimal(1), "EUR")
    assert len(shop.sandbox.requests_to("get_giftcard")) == 2
    shop.payments.reserve(card, amount="1", currency="EUR", order_ref="O")
    assert len(shop.sandbox.requests_to("get_giftcard")) == 3  # reserve reads fresh


def test_callback_rejections_write_nothing(shop: Shop) -> None:
    card = shop.card()
    reservation = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    operation = shop.payments.capture(reservation.id)
    before = shop.payments.get_operation(operation.id)
    for path, body, status in [
        ("/cb/nothing", b'{"success": true}', 404),
        (f"/cb/{operation.id}/wrong-token", b'{"success": true}', 403),
        ("/cb/op_unknown/x", b'{"success": true}', 404),
    ]:
        with pytest.raises(CallbackRejected) as caught:
            shop.payments.handle_callback(path, body)
        assert caught.value.status_code == status
    assert shop.payments.get_operation(operation.id) == before


def test_rate_limited_capture_is_a_definite_failure(shop: Shop) -> None:
    card = shop.card()
    reservation = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    shop.sandbox.faults.add("update_giftcard", Fault.rate_limited(7))
    from fourws_pay import RateLimitedError

    with pytest.raises(RateLimitedError) as caught:
        shop.payments.capture(reservation.id)
    assert caught.value.retry_after == 7
    # Not applied, so the hold stays and a later capture is allowed.
    retry = shop.payments.capture(reservation.id)
    shop.settle()
    assert shop.payments.get_operation(retry.id).state is OperationState.SUCCEEDED
    assert shop.sandbox.balance(card) == Decimal("90.00")
    shop.audit()


def test_one_go_card(shop: Shop) -> None:
    card = shop.card(amount="80.00", partial_usage=False)
    with pytest.raises(PaymentRefused) as caught:
        shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="O")
    assert caught.value.reason is RefusalReason.PARTIAL_USAGE_NOT_ALLOWED
    whole = shop.payments.reserve(
        card, amount="100.00", currency="EUR", order_ref="O", allow_partial=True
    )
    assert whole.amount == Decimal("80.00")
    shop.payments.capture(whole.id)
    shop.settle()
    assert shop.sandbox.balance(card) == 0
    shop.audit()


def test_one_go_card_forfeit_opt_in(tmp_path) -> None:  # type: ignore[no-untyped-def]
    shop = Shop(tmp_path, settings_overrides={"forfeit_partial_remainder": True})
    card = shop.card(amount="80.00", partial_usage=False)
    reservation = shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="O")
    assert (reservation.amount, reservation.forfeited) == (Decimal("80.00"), Decimal("50.00"))
    assert reservation.applied_amount == Decimal("30.00")
    with pytest.raises(InvalidAmountError):
        shop.payments.capture(reservation.id, amount="30.00")
    shop.payments.capture(reservation.id)
    shop.settle()
    assert shop.sandbox.balance(card) == 0
    shop.audit()


async def test_async_twin_runs_the_same_life_cycle(shop: Shop) -> None:
    from urllib.parse import urlsplit

    from fourws_pay import AsyncGiftCardPayments, make_plugin_manager

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
    card = shop.card(amount="100.00")
    decision = await payments.check(card, Decimal("30.00"), "EUR")
    assert decision.ok
    reservation = await payments.reserve(card, amount="30.00", currency="EUR", order_ref="A")
    operation = await payments.capture(reservation.id)
    await shop.sandbox.aprocess_queue()
    assert (await payments.get_operation(operation.id)).state is OperationState.SUCCEEDED
    refund = await payments.refund(operation.id)
    await shop.sandbox.aprocess_queue()
    assert (await payments.get_operation(refund.id)).state is OperationState.SUCCEEDED
    other = await payments.reserve(card, amount="5.00", currency="EUR", order_ref="B")
    assert (await payments.release(other.id)).state is ReservationState.RELEASED
    assert (await payments.reconcile()).manual_review == []
    assert await payments.sweep() == 0
    assert shop.sandbox.balance(card) == Decimal("100.00")
    shop.audit()  # before aclose: it closes the store too, which then refuses calls
    await payments.aclose()


def test_partial_capture_can_keep_the_remainder_reserved(shop: Shop) -> None:
    """Several captures of one authorization (Saleor's partial charges): the hold is split,
    the rest stays held under the same order_ref until captured or released."""
    card = shop.card(amount="100.00")
    hold = shop.payments.reserve(card, amount="50.00", currency="EUR", order_ref="T-1")
    first = shop.payments.capture(hold.id, amount="20.00", keep_remainder=True)
    assert first.reservation_id == hold.id
    assert first.amount == Decimal("20.00")
    active = shop.payments.list_reservations([ReservationState.ACTIVE], order_ref="T-1")
    assert [r.amount for r in active if r.id == hold.id] == [Decimal("20.00")]  # being captured
    (rest,) = [r for r in active if r.id != hold.id]
    assert rest.amount == Decimal("30.00")
    assert rest.expires_at == hold.expires_at
    assert shop.held(card) == Decimal("50.00")  # nothing freed, nothing added
    # The first part is still in flight: the second waits for it (queued), posted when
    # the first settles.
    second = shop.payments.capture(rest.id, amount="10.00", keep_remainder=True)
    assert second.state is OperationState.QUEUED
    assert shop.payments.capture(hold.id, amount="20.00", keep_remainder=True) == first
    shop.settle()
    shop.settle()
    (last,) = shop.payments.list_reservations([ReservationState.ACTIVE], order_ref="T-1")
    assert last.amount == Decimal("20.00")
    shop.payments.release(last.id)  # cancel the rest of the authorization
    assert shop.payments.get_operation(second.id).state is OperationState.SUCCEEDED
    assert shop.sandbox.balance(card) == Decimal("70.00")
    assert shop.held(card) == Decimal("0")
    shop.audit()


def test_a_retried_capture_returns_the_first_even_after_settlement(shop: Shop) -> None:
    """The claim looks for an earlier capture before judging state or amount: a host that
    retries a capture request (even with another amount) gets the first one, one POST."""
    card = shop.card(amount="100.00")
    hold = shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="R-1")
    first = shop.payments.capture(hold.id)
    shop.settle()
    again = shop.payments.capture(hold.id, amount="999.00")
    assert again.id == first.id
    assert again.state is OperationState.SUCCEEDED
    assert len(shop.sandbox.requests_to("update_giftcard")) == 1
    shop.audit()
