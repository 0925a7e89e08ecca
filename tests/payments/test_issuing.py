"""Selling cards: each sold card is generated once, loaded once, delivered, and a cancelled
sale takes back only what is unspent (fourws_pay/payments/issuing.py, invariant 18).

The sandbox's books are the truth: ``loads`` counts the positive updates 4WS applied to a
barcode, so "loaded twice" cannot hide behind our own ledger agreeing with itself. Crashes
are simulated by raising at the named crash points (a crash point is always between two
commits, so an exception there leaves the ledger exactly as ``kill -9`` would); the real
``kill -9`` of a served shop is in test_crash_safety.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fourws_pay import (
    InvalidAmountError,
    InvalidInputError,
    IssuedCard,
    IssuedCardState,
    SaleAlreadySpentError,
    hookimpl,
)
from fourws_pay.payments import issuing
from fourws_pay.payments.effects import PostUpdate, ReadCard
from fourws_pay.payments.models import EventKind, OperationKind, OperationState
from fourws_pay.sandbox.faults import Fault
from tests.payments.harness import Shop, run_stepped
from tests.services import StoreFactory

ITEM = "GIFTCARD_IVA_TAGLIO_100"
S = IssuedCardState


class Mailbox:
    """A delivery plugin: what a shop's mailer would have been asked to send."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, list[IssuedCard], str | None]] = []
        self.fail = False

    @hookimpl
    def fourws_pay_deliver_giftcards(
        self, order_ref: str, cards: list[IssuedCard], pdf_url: str | None
    ) -> None:
        if self.fail:
            raise RuntimeError("the mail server is down")
        self.deliveries.append((order_ref, cards, pdf_url))


class Crash(BaseException):
    """The process dies here (BaseException: no ``except Exception`` catches it)."""


@pytest.fixture
def seller(tmp_path: Path) -> Any:
    s = Shop(tmp_path, settings_overrides={"issuing_item_code": ITEM})
    s.sandbox.add_product(ITEM, item_type="FINANCIAL")
    s.mailbox = Mailbox()  # type: ignore[attr-defined]
    s.payments.plugin_manager.register(s.mailbox)  # type: ignore[attr-defined]
    yield s
    s.payments.client.close()
    s.store.close()


def loads(shop: Shop, barcode: str) -> int:
    """Positive updates 4WS applied to ``barcode`` (activations and re-credits)."""
    return sum(1 for r in shop.sandbox.applied_operations(barcode) if r.amount > 0)


def sold(shop: Shop, order_ref: str = "ORD-1") -> list[IssuedCard]:
    return shop.payments.issued_cards(order_ref)


def assert_each_loaded_once(shop: Shop, order_ref: str, amount: str) -> None:
    cards = sold(shop, order_ref)
    for card in cards:
        assert card.barcode is not None
        assert loads(shop, card.barcode) == 1, (
            f"{card.masked_barcode} loaded {loads(shop, card.barcode)}x"
        )
        assert shop.sandbox.balance(card.barcode) == Decimal(amount)
    barcodes = [c.barcode for c in cards]
    assert len(set(barcodes)) == len(barcodes)
    shop.audit()


# ------------------------------------------------------------------ the happy path


def test_a_line_of_three_cards_is_one_generate_request_three_loads_one_delivery(
    seller: Shop,
) -> None:
    cards = seller.payments.issue_cards("ORD-1", "line-7", amount="25.00", currency="EUR", count=3)
    assert [c.state for c in cards] == [S.GENERATING] * 3
    assert len(seller.sandbox.requests_to("generate_giftcards")) == 1
    seller.settle()
    cards = sold(seller)
    assert [c.state for c in cards] == [S.DELIVERED] * 3
    assert [c.line_index for c in cards] == [0, 1, 2]
    assert_each_loaded_once(seller, "ORD-1", "25.00")
    ((order_ref, delivered, pdf_url),) = seller.mailbox.deliveries  # type: ignore[attr-defined]
    assert order_ref == "ORD-1"
    assert sorted(c.barcode for c in delivered) == sorted(c.barcode for c in cards)
    assert pdf_url is not None
    kinds = seller.recorder.kinds()
    assert kinds.count("card_issued") == 3
    assert kinds.count("card_delivered") == 3
    for event in seller.recorder.events:  # events never carry a whole code (invariant 12)
        if event.issued_card is not None and event.issued_card.barcode:
            assert event.issued_card.barcode.startswith("*")
    # A generated card is inactive with its validity window until activated (sandbox).
    card = seller.sandbox.card(cards[0].barcode or "")
    assert card.active
    assert cards[0].end_validity is not None


def test_asking_again_finds_the_same_cards_and_refuses_a_different_amount(seller: Shop) -> None:
    first = seller.payments.issue_cards("ORD-1", "L", amount="10.00", currency="EUR", count=2)
    seller.settle()
    again = seller.payments.issue_cards("ORD-1", "L", amount="10.00", currency="EUR", count=2)
    assert [c.id for c in again] == [c.id for c in first]
    assert len(seller.sandbox.requests_to("generate_giftcards")) == 1
    with pytest.raises(InvalidInputError, match=r"was issued for 10\.00 EUR"):
        seller.payments.issue_cards("ORD-1", "L", amount="12.00", currency="EUR", count=3)
    assert len(sold(seller)) == 2  # the refused call wrote nothing (no third card)
    more = seller.payments.issue_cards("ORD-1", "L", amount="10.00", currency="EUR", count=3)
    seller.settle()
    assert [c.line_index for c in more] == [0, 1, 2]
    assert len(seller.sandbox.requests_to("generate_giftcards")) == 2  # only the new one
    assert_each_loaded_once(seller, "ORD-1", "10.00")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"amount": "0"}, InvalidAmountError),
        ({"amount": "NaN"}, InvalidAmountError),
        ({"amount": 10.5}, InvalidAmountError),
        ({"amount": "1.005"}, InvalidAmountError),
        ({"currency": "EURO"}, InvalidInputError),
        ({"count": 0}, InvalidInputError),
        ({"count": True}, InvalidInputError),
        ({"line_id": "a b"}, InvalidInputError),
        ({"line_id": "a\x00b"}, InvalidInputError),
        ({"line_id": "x" * 101}, InvalidInputError),
        ({"order_ref": ""}, InvalidInputError),
        ({"item_code": ""}, InvalidInputError),
    ],
)
def test_bad_input_is_a_typed_error_and_writes_nothing(
    seller: Shop, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    args: dict[str, Any] = {
        "order_ref": "ORD-1",
        "line_id": "L",
        "amount": "10.00",
        "currency": "EUR",
    }
    args.update(kwargs)
    order_ref, line_id = args.pop("order_ref"), args.pop("line_id")
    with pytest.raises(error):
        seller.payments.issue_cards(order_ref, line_id, **args)
    assert seller.store.list_issued_cards() == []
    assert seller.sandbox.requests_to("generate_giftcards") == []


# --------------------------------------------------------------- duplicates, faults


def test_duplicate_callbacks_load_nothing_twice(seller: Shop) -> None:
    seller.sandbox.faults.add("generate_giftcards", Fault.duplicate_callback(3))
    seller.sandbox.faults.add("update_giftcard", Fault.duplicate_callback(3), times=None)
    seller.payments.issue_cards("ORD-1", "L", amount="30.00", currency="EUR", count=2)
    seller.settle()
    seller.settle()
    assert [c.state for c in sold(seller)] == [S.DELIVERED] * 2
    assert_each_loaded_once(seller, "ORD-1", "30.00")
    assert len(seller.mailbox.deliveries) == 1  # type: ignore[attr-defined]
    assert "alert" not in seller.recorder.kinds()  # a repeat of what we used is no alarm


def test_a_lost_generation_callback_is_asked_again_and_its_late_barcodes_never_load(
    seller: Shop,
) -> None:
    seller.sandbox.faults.add("generate_giftcards", Fault.drop_callback())
    seller.payments.issue_cards("ORD-1", "L", amount="20.00", currency="EUR", count=2)
    seller.settle()
    assert [c.state for c in sold(seller)] == [S.GENERATING] * 2
    (lost,) = seller.store.list_operations(kind=OperationKind.GENERATE)
    seller.payments.reconcile()  # before the deadline: left to its callback
    assert len(seller.sandbox.requests_to("generate_giftcards")) == 1
    seller.clock.advance(seller.payments.settings.callback_timeout + 1)
    report = seller.payments.reconcile()
    assert seller.payments.get_operation(lost.id).state is OperationState.FAILED
    assert len(seller.sandbox.requests_to("generate_giftcards")) == 2
    assert report.issuing
    seller.settle()
    assert [c.state for c in sold(seller)] == [S.DELIVERED] * 2
    # The lost answer arrives after all: its barcodes are reported and never loaded.
    (dropped,) = seller.sandbox.lost_callbacks
    status = seller.deliver(dropped.url, dropped.body)
    assert status == 200
    alerts = [e for e in seller.recorder.events if e.kind is EventKind.ALERT]
    (unused,) = [a for a in alerts if "barcodes" in a.details]
    assert len(unused.details["barcodes"]) == 2
    for code in unused.details["barcodes"]:
        assert code.startswith("*")
    late = [c.barcode for c in seller.sandbox.books.cards.values() if not c.ever_activated]
    assert len(late) == 2
    assert all(seller.sandbox.balance(code) == 0 for code in late)
    assert_each_loaded_once(seller, "ORD-1", "20.00")


def test_a_refused_generation_fails_its_cards_and_loads_nothing(seller: Shop) -> None:
    seller.payments.issue_cards(
        "ORD-1", "L", amount="20.00", currency="EUR", count=1, item_code="NOT_FINANCIAL"
    )
    seller.settle()
    (card,) = sold(seller)
    assert card.state is S.FAILED
    assert card.message
    assert "issue_failed" in seller.recorder.kinds()
    seller.payments.reconcile()
    assert len(seller.sandbox.requests_to("generate_giftcards")) == 1  # not asked again


def test_an_activation_timeout_then_a_rerun_loads_once(seller: Shop) -> None:
    """The activation POST times out after 4WS queued it and its callback is lost: the
    re-run posts nothing, reconcile judges it by the balance, the card is delivered."""
    seller.sandbox.faults.add("update_giftcard", Fault.hang(after_enqueue=True))
    seller.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    seller.payments.issue_cards("ORD-1", "L", amount="40.00", currency="EUR")
    seller.settle()
    (card,) = sold(seller)
    assert card.state is S.ACTIVATING
    assert seller.payments.get_operation(card.activate_op_id or "").state is OperationState.UNKNOWN
    posts = len(seller.sandbox.requests_to("update_giftcard"))
    seller.payments.issue_cards("ORD-1", "L", amount="40.00", currency="EUR")  # the re-run
    seller.payments.reconcile()
    assert len(seller.sandbox.requests_to("update_giftcard")) == posts  # nothing re-posted
    assert sold(seller)[0].state is S.DELIVERED
    assert_each_loaded_once(seller, "ORD-1", "40.00")


def test_an_unprovable_activation_waits_for_an_operator_then_loads_once(seller: Shop) -> None:
    """4WS never applied the ambiguous activation: after the window it is in review (the
    card is not re-loaded on a guess); the operator's "not applied" activates it again."""
    seller.sandbox.faults.add("update_giftcard", Fault.reset_after_enqueue())
    seller.payments.issue_cards("ORD-1", "L", amount="40.00", currency="EUR")
    seller.sandbox.process_queue()  # generated; the activation's answer is lost
    assert sold(seller)[0].state is S.ACTIVATING
    seller.clock.advance(1)
    assert seller.sandbox.queue.take_due(seller.clock.now())  # 4WS lost it: never applied
    seller.clock.advance(seller.payments.settings.reconcile_window + 1)
    report = seller.payments.reconcile()
    (review,) = report.manual_review
    assert review.kind is OperationKind.ACTIVATE
    assert sold(seller)[0].state is S.ACTIVATING
    seller.payments.resolve(review.id, applied=False, note="4WS support: never applied")
    seller.settle()
    assert sold(seller)[0].state is S.DELIVERED
    assert_each_loaded_once(seller, "ORD-1", "40.00")


def test_a_card_loaded_by_someone_else_is_never_loaded_again(seller: Shop) -> None:
    seller.sandbox.faults.add("generate_giftcards", Fault.drop_callback())
    seller.payments.issue_cards("ORD-1", "L", amount="15.00", currency="EUR")
    seller.sandbox.run_until_idle()
    (dropped,) = seller.sandbox.lost_callbacks
    barcode = json.loads(dropped.body)["giftcards"][0]["barcode"]
    seller.sandbox.add_giftcard(barcode, amount=Decimal("15.00"))  # a till sold it meanwhile
    seller.deliver(dropped.url, dropped.body)
    (card,) = sold(seller)
    assert card.state is S.FAILED
    assert loads(seller, barcode) == 0  # we posted nothing to it
    assert "alert" in seller.recorder.kinds()


# ------------------------------------------------------------------- crashes


@pytest.mark.parametrize(
    "point",
    [
        "generate.after_sending",
        "generate.after_post",
        "activate.after_prepare",
        "activate.after_sending",
        "activate.after_post",
    ],
)
def test_a_crash_at_any_issuing_step_ends_with_each_card_loaded_once(
    seller: Shop, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(name: str) -> None:
        if name == point:
            raise Crash(name)

    monkeypatch.setattr(issuing, "crash_point", crash)
    with pytest.raises(Crash):
        seller.payments.issue_cards("ORD-1", "L", amount="35.00", currency="EUR", count=2)
        seller.sandbox.run_until_idle()  # the crash may come inside a callback's pump
    monkeypatch.setattr(issuing, "crash_point", lambda name: None)
    seller.payments = seller.new_provider()  # the restarted shop, same ledger
    seller.payments.plugin_manager.register(seller.mailbox)  # type: ignore[attr-defined]
    for _ in range(4):  # callbacks arrive, time passes, the operator's cron runs
        seller.sandbox.run_until_idle()
        seller.clock.advance(seller.payments.settings.reconcile_window + 1)
        report = seller.payments.reconcile()
        for op in report.manual_review:  # a POST that never left: the operator says so
            seller.payments.resolve(op.id, applied=False, note="checked with 4WS")
    assert [c.state for c in sold(seller)] == [S.DELIVERED] * 2
    assert_each_loaded_once(seller, "ORD-1", "35.00")


def test_a_failed_delivery_is_offered_again_with_the_same_codes(seller: Shop) -> None:
    seller.mailbox.fail = True  # type: ignore[attr-defined]
    seller.payments.issue_cards("ORD-1", "L", amount="10.00", currency="EUR")
    seller.settle()
    assert sold(seller)[0].state is S.ACTIVE
    seller.mailbox.fail = False  # type: ignore[attr-defined]
    seller.payments.reconcile()
    (card,) = sold(seller)
    assert card.state is S.DELIVERED
    assert card.deliveries == 1
    resent = seller.payments.resend_giftcards("ORD-1")
    assert [c.deliveries for c in resent] == [2]
    codes = [c.barcode for _, cards, _ in seller.mailbox.deliveries for c in cards]  # type: ignore[attr-defined]
    assert codes == [card.barcode, card.barcode]
    assert_each_loaded_once(seller, "ORD-1", "10.00")


# ------------------------------------------------------------- second worker


def test_a_second_worker_pumping_between_every_step_doubles_nothing(seller: Shop) -> None:
    """Worker B reconciles (which pumps every order) and 4WS works through its queue
    between each of worker A's 4WS calls, before and after each: every card is still
    generated and loaded once. Callbacks only record 4WS's answer here (no pump of their
    own, as when the ASGI app's after-step is elsewhere), so A's flow, working from the
    list of cards it read before, meets cards B already took. Relies on: births of a
    generation or activation happen under a lock after a fresh read of the sold card's
    state (order lock, card lock), and every change of a sold card is a compare-and-set
    of its state; a card that reads loaded is never posted to again."""
    other = seller.new_provider()
    other.plugin_manager.register(seller.mailbox)  # type: ignore[attr-defined]

    def record_only(url: str, body: bytes) -> int:
        return seller.payments.core.handle_callback(urlsplit(url).path, body).status_code

    seller.sandbox.set_callback_handler(record_only)

    def between(moment: str, effect: Any) -> None:
        other.reconcile()
        seller.sandbox.run_until_idle()
        seller.clock.advance(1)

    flow = seller.payments.core.issue_cards("ORD-1", "L", Decimal("12.00"), "EUR", 3, None, 2)
    run_stepped(seller.payments, flow, between)
    for _ in range(3):
        seller.sandbox.run_until_idle()
        other.reconcile()
    assert [c.state for c in sold(seller)] == [S.DELIVERED] * 3
    assert len(seller.sandbox.requests_to("generate_giftcards")) == 1
    assert_each_loaded_once(seller, "ORD-1", "12.00")
    other.client.close()


# ------------------------------------------------------------------- cancel


def issued_and_delivered(seller: Shop, amount: str = "50.00") -> IssuedCard:
    seller.payments.issue_cards("ORD-1", "L", amount=amount, currency="EUR")
    seller.settle()
    (card,) = sold(seller)
    assert card.state is S.DELIVERED
    return card


def spend(seller: Shop, barcode: str, amount: str) -> None:
    hold = seller.payments.reserve(barcode, amount=amount, currency="EUR", order_ref="SPEND")
    seller.payments.capture(hold.id)
    seller.settle()


def test_cancel_before_loading_loads_nothing(seller: Shop) -> None:
    seller.sandbox.faults.add("generate_giftcards", Fault.drop_callback())
    (card,) = seller.payments.issue_cards("ORD-1", "L", amount="50.00", currency="EUR")
    cancelled = seller.payments.cancel_issued_card(card.id)
    assert cancelled.state is S.CANCELLED
    seller.sandbox.run_until_idle()
    (dropped,) = seller.sandbox.lost_callbacks
    seller.deliver(dropped.url, dropped.body)  # the barcode comes after the cancel
    seller.clock.advance(seller.payments.settings.callback_timeout + 1)
    seller.payments.reconcile()
    assert sold(seller)[0].state is S.CANCELLED
    assert seller.sandbox.requests_to("update_giftcard") == []


def test_a_sale_refunded_after_partial_use_takes_back_only_the_rest(seller: Shop) -> None:
    card = issued_and_delivered(seller)
    assert card.barcode is not None
    spend(seller, card.barcode, "20.00")
    cancelled = seller.payments.cancel_issued_card(card.id)
    seller.settle()
    assert cancelled.state is S.CANCELLED
    assert seller.payments.reclaimed_amount(card.id) == Decimal("30.00")
    assert seller.sandbox.balance(card.barcode) == Decimal("0.00")
    events = [e for e in seller.recorder.events if e.kind is EventKind.SALE_CANCELLED]
    assert events[-1].details["reclaimed"] == "30.00"
    # A re-run moves no money again.
    posts = len(seller.sandbox.requests_to("update_giftcard"))
    assert seller.payments.cancel_issued_card(card.id).state is S.CANCELLED
    seller.settle()
    assert len(seller.sandbox.requests_to("update_giftcard")) == posts
    assert seller.payments.reclaimed_amount(card.id) == Decimal("30.00")
    seller.audit()


def test_a_spent_sale_is_refused_clearly_and_left_as_it_is(seller: Shop) -> None:
    card = issued_and_delivered(seller)
    assert card.barcode is not None
    spend(seller, card.barcode, "50.00")
    with pytest.raises(SaleAlreadySpentError) as caught:
        seller.payments.cancel_issued_card(card.id)
    assert card.barcode not in str(caught.value)
    assert seller.payments.get_issued_card(card.id).state is S.DELIVERED
    with pytest.raises(SaleAlreadySpentError):  # a re-run never turns it into a success
        seller.payments.cancel_issued_card(card.id)
    seller.audit()


def test_a_recipient_paying_at_the_cancel_keeps_what_they_hold(seller: Shop) -> None:
    card = issued_and_delivered(seller)
    assert card.barcode is not None
    theirs = seller.payments.reserve(card.barcode, amount="20.00", currency="EUR", order_ref="R")
    seller.payments.cancel_issued_card(card.id)
    seller.payments.capture(theirs.id)  # their checkout completes after the cancel
    seller.settle()
    seller.settle()
    assert seller.payments.reclaimed_amount(card.id) == Decimal("30.00")
    assert seller.sandbox.balance(card.barcode) == Decimal("0.00")
    seller.audit()


def test_a_cancel_during_the_activation_is_finished_when_it_settles(seller: Shop) -> None:
    seller.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    seller.payments.issue_cards("ORD-1", "L", amount="50.00", currency="EUR")
    seller.sandbox.run_until_idle()  # generated, activation posted, its callback lost
    (card,) = sold(seller)
    assert card.state is S.ACTIVATING
    assert seller.payments.cancel_issued_card(card.id).state is S.CANCELLING
    seller.clock.advance(seller.payments.settings.callback_timeout + 1)
    seller.payments.reconcile()  # the activation is judged applied, then the rest taken
    seller.settle()
    seller.payments.reconcile()
    assert sold(seller)[0].state is S.CANCELLED
    assert seller.payments.reclaimed_amount(card.id) == Decimal("50.00")
    assert seller.sandbox.balance(card.barcode or "") == Decimal("0.00")
    assert seller.mailbox.deliveries == []  # type: ignore[attr-defined]
    seller.audit()


def test_a_recipient_spending_between_every_cancel_step_is_never_overdrawn(seller: Shop) -> None:
    """Worker B spends 5.00 of the card and 4WS settles between each of the cancel's 4WS
    calls: the reclaim holds and captures only what is left under the card lock (its
    re-check reads fresh), so the card never goes below zero and the recipient's
    captures all settle. Relies on reserve/capture's own reads and locks (invariants 2, 10,
    15); the cancel adds none of its own."""
    card = issued_and_delivered(seller)
    assert card.barcode is not None
    barcode = card.barcode
    worker_b = seller.new_provider()
    spent: list[str] = []

    def between(moment: str, effect: Any) -> None:
        if moment == "before" and isinstance(effect, ReadCard | PostUpdate):
            try:
                hold = worker_b.reserve(barcode, amount="5.00", currency="EUR", order_ref="B")
                worker_b.capture(hold.id)
                spent.append(hold.id)
            except Exception:  # the reclaim holds the rest: nothing left to spend
                pass
        seller.sandbox.run_until_idle()
        seller.clock.advance(1)

    run_stepped(seller.payments, seller.payments.core.cancel_issued_card(card.id), between)
    seller.settle()
    seller.payments.reconcile()
    seller.settle()
    assert spent
    assert seller.sandbox.balance(barcode) == Decimal("0.00")
    reclaimed = seller.payments.reclaimed_amount(card.id)
    assert reclaimed + Decimal("5.00") * len(spent) == Decimal("50.00")
    seller.audit()
    worker_b.client.close()


# ----------------------------------------------------------- store credit


def captured(seller: Shop, amount: str = "40.00") -> Any:
    barcode = seller.card("7000000000009", amount="100.00")
    hold = seller.payments.reserve(barcode, amount=amount, currency="EUR", order_ref="PAID")
    op = seller.payments.capture(hold.id)
    seller.settle()
    return op


def test_refund_to_a_new_card_issues_store_credit_counted_against_the_capture(seller: Shop) -> None:
    op = captured(seller)
    seller.payments.refund(op.id, amount="10.00")
    seller.settle()
    credit = seller.payments.refund_to_new_card(op.id)
    seller.settle()
    credit = seller.payments.get_issued_card(credit.id)
    assert credit.amount == Decimal("30.00")
    assert credit.refund_of == op.id
    assert credit.state is S.DELIVERED
    assert seller.sandbox.balance(credit.barcode or "") == Decimal("30.00")
    with pytest.raises(InvalidAmountError, match="nothing left"):
        seller.payments.refund(op.id)
    with pytest.raises(InvalidAmountError, match="nothing left"):
        seller.payments.refund_to_new_card(op.id)
    seller.audit()


def test_without_counting_store_credit_a_capture_is_refunded_twice(
    seller: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The twin of the test above: with store credit not counted, the same calls refund
    more than the capture took (so the counting is what stops it)."""
    monkeypatch.setattr(
        issuing.Issuing, "_store_credits", staticmethod(lambda tx, p, o: Decimal(0))
    )
    op = captured(seller)
    seller.payments.refund_to_new_card(op.id)
    seller.settle()
    seller.payments.refund(op.id)  # accepted: 40 more on top of the 40 of store credit
    seller.settle()
    given_back = sum(
        (r.amount for r in seller.sandbox.applied_operations() if r.amount > 0), Decimal(0)
    )
    assert given_back == Decimal("80.00")  # twice the capture


def test_async_twin_sells_the_same_way(seller: Shop) -> None:
    """The asyncio provider runs the same flows (one sans-I/O core): the callbacks it
    receives generate, load and deliver the cards exactly as the blocking one does."""
    from fourws_pay import AsyncGiftCardPayments, make_plugin_manager

    async def main() -> list[IssuedCard]:
        payments = AsyncGiftCardPayments(
            settings=seller.payments.settings,
            client=seller.sandbox.async_client(seller.payments.settings),
            store=seller.store,
            clock=seller.clock,
            plugin_manager=make_plugin_manager(
                load_entrypoints=False,
                plugins=[seller.mailbox],  # type: ignore[attr-defined]
            ),
        )

        async def deliver(url: str, body: bytes) -> int:
            result = await payments.handle_callback(urlsplit(url).path, body)
            return result.status_code

        seller.sandbox.set_callback_handler(deliver)
        cards = await payments.issue_cards("ORD-A", "L", amount="9.50", currency="EUR", count=2)
        assert [c.state for c in cards] == [S.GENERATING] * 2
        for _ in range(3):  # 4WS answers each step on its callback, handled by the twin
            await seller.sandbox.aprocess_queue()
            seller.clock.advance(1)
        done = await payments.issued_cards("ORD-A")
        # checked before aclose: it closes the store too, which then refuses calls
        assert_each_loaded_once(seller, "ORD-A", "9.50")
        await payments.aclose()
        return done

    cards = asyncio.run(main())
    assert [c.state for c in cards] == [S.DELIVERED] * 2


# ------------------------------------------------------------------ every store


def test_workers_racing_to_sell_one_line_on_every_store(
    store_factory: StoreFactory, tmp_path: Path
) -> None:
    """Four workers (threads, each its own provider on the same ledger) ask for the same
    line at once and reconcile, while 4WS works its queue and calls back underneath: on
    every store, one generate request, each card loaded once, one delivery. The locks
    (the order's issuing lock, each card's lock) are the stores' own here."""
    shop = Shop(tmp_path, ledger=store_factory(), settings_overrides={"issuing_item_code": ITEM})
    shop.sandbox.add_product(ITEM, item_type="FINANCIAL")
    mailbox = Mailbox()
    workers = [shop.new_provider() for _ in range(4)]
    for worker in workers:
        worker.plugin_manager.register(mailbox)
    shop.payments.plugin_manager.register(mailbox)
    start = threading.Barrier(len(workers) + 1)
    errors: list[BaseException] = []

    def sell(worker: Any) -> None:
        try:
            start.wait(10)
            for _ in range(3):
                worker.issue_cards("ORD-R", "gift", amount="20.00", currency="EUR", count=3)
                worker.reconcile()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=sell, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    start.wait(10)
    for _ in range(20):  # 4WS, underneath
        shop.sandbox.process_queue()
    for thread in threads:
        thread.join(60)
    shop.sandbox.run_until_idle()
    shop.payments.reconcile()
    try:
        assert errors == []
        assert [c.state for c in sold(shop, "ORD-R")] == [S.DELIVERED] * 3
        assert len(shop.sandbox.requests_to("generate_giftcards")) == 1
        assert_each_loaded_once(shop, "ORD-R", "20.00")
        delivered = [c.id for _, cards, _ in mailbox.deliveries for c in cards]
        assert sorted(delivered) == sorted(c.id for c in sold(shop, "ORD-R"))
    finally:
        for worker in workers:
            worker.client.close()
        shop.payments.client.close()
