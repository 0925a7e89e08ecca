"""4WS callbacks and refunds as an Oscar order sees them."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client
from fourws_pay_oscar.refunds import refund_gift_card
from oscar.apps.order.models import Order
from oscar_checkout import checkout

from fourws_pay.errors import InvalidAmountError, InvalidStateError

CARD = "2000000001814"


@pytest.fixture
def placed(payments, sandbox, oscar_product_id) -> Order:
    """A 30.00 order paid by a 50.00 card, capture posted but not yet applied by 4WS."""
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    assert checkout(Client(), oscar_product_id, CARD).status_code == 302
    return Order.objects.get()


def _source(order):
    return order.sources.get(source_type__name="4WS gift card")


def _events(order, name):
    return list(order.payment_events.filter(event_type__name=name))


def test_failed_capture_callback_is_recorded_for_staff(placed, sandbox, payments):
    sandbox.spend_in_shop(CARD, "45.00")  # a till empties the card before 4WS applies ours
    sandbox.process_queue()

    source = _source(placed)
    assert source.amount_debited == Decimal("0.00")
    assert not source.transactions.filter(txn_type="Debit").exists()
    (failed,) = _events(placed, "Capture failed")
    assert failed.amount == Decimal("30.00")
    assert payments.get_operation(failed.reference).state.value == "failed"
    note = placed.notes.get()
    assert note.note_type == "Error"
    assert "not paid by this card" in note.message
    assert CARD not in note.message
    assert sandbox.balance(CARD) == Decimal("5.00")


def test_duplicate_callback_is_a_no_op(placed, sandbox):
    sandbox.process_queue()
    (delivery,) = sandbox.callbacks
    assert delivery.status == 200

    again = Client().post(delivery.url, data=delivery.body, content_type="application/json")

    assert again.status_code == 200
    assert again.json()["applied"] is False
    source = _source(placed)
    assert source.amount_debited == Decimal("30.00")
    assert source.transactions.filter(txn_type="Debit").count() == 1
    assert len(_events(placed, "Settled")) == 1


def _forge(url: str, body: bytes, *, token: str | None = None, op: str | None = None):
    base, op_id, real_token = url.rsplit("/", 2)
    return Client().post(
        f"{base}/{op or op_id}/{token or real_token[::-1]}",
        data=body,
        content_type="application/json",
    )


def test_forged_callbacks_change_nothing(placed, sandbox, payments):
    (requested,) = _events(placed, "Capture requested")
    operation_id = requested.reference
    # Capture the real callback without delivering it, to learn its URL and body shape.
    captured: list[tuple[str, bytes]] = []
    sandbox.set_callback_handler(lambda url, body: captured.append((url, body)) or 200)
    sandbox.process_queue()
    ((url, body),) = captured
    assert payments.get_operation(operation_id).state.value == "enqueued"

    wrong_token = _forge(url, body)
    unknown_op = _forge(url, body, op="op_" + "0" * 32)
    failure = json.dumps({"success": False, "message": "barcode not found"}).encode()
    wrong_token_failure = _forge(url, failure)
    get = Client().get(url)

    for response in (wrong_token, unknown_op, wrong_token_failure):
        assert 400 <= response.status_code < 500
        assert CARD not in response.content.decode()
    assert get.status_code == 405
    assert payments.get_operation(operation_id).state.value == "enqueued"
    assert _source(placed).amount_debited == Decimal("0.00")
    assert _events(placed, "Settled") == []
    assert _events(placed, "Capture failed") == []

    genuine = Client().post(url, data=body, content_type="application/json")
    assert genuine.status_code == 200
    assert _source(placed).amount_debited == Decimal("30.00")


def test_refund_part_then_the_rest(placed, sandbox, payments):
    sandbox.process_queue()
    with pytest.raises(InvalidAmountError):
        refund_gift_card(placed, Decimal("30.01"))

    (first,) = refund_gift_card(placed, Decimal("5.00"))
    assert first.amount == Decimal("5.00")
    assert len(_events(placed, "Refund requested")) == 1
    assert _source(placed).amount_refunded == Decimal("0.00")  # only once 4WS confirms

    sandbox.process_queue()
    source = _source(placed)
    assert source.amount_refunded == Decimal("5.00")
    refund_txn = source.transactions.get(txn_type="Refund")
    assert (refund_txn.amount, refund_txn.reference) == (Decimal("5.00"), first.id)
    assert _events(placed, "Refunded")[0].amount == Decimal("5.00")
    assert sandbox.balance(CARD) == Decimal("25.00")

    out = io.StringIO()
    call_command("fourws_pay_refund", placed.number, stdout=out)
    assert "25.00 EUR" in out.getvalue()
    sandbox.process_queue()
    source.refresh_from_db()
    assert source.amount_refunded == Decimal("30.00")
    assert sandbox.balance(CARD) == Decimal("50.00")
    with pytest.raises(InvalidStateError):
        refund_gift_card(placed)


def test_refund_before_settlement_is_refused(placed):
    with pytest.raises(InvalidStateError):
        refund_gift_card(placed)


def test_callback_view_is_csrf_exempt_and_settles(placed, sandbox):
    """The fixture delivers through ``Client(enforce_csrf_checks=True)``: it must still land."""
    sandbox.process_queue()
    (delivery,) = sandbox.callbacks
    assert delivery.status == 200
    assert _source(placed).amount_debited == Decimal("30.00")


def test_capture_on_a_busy_card_is_queued_and_posted_when_the_first_settles(
    payments, sandbox, oscar_product_id
):
    """Two orders on one card: the second order's capture meets the first one still in
    flight. fourws-pay queues it (a note tells staff it waits); the first one's callback
    posts it; nothing for the shop to re-run, and the reconcile command finds nothing to
    post twice."""
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    assert checkout(Client(), oscar_product_id, CARD).status_code == 302
    assert checkout(Client(), oscar_product_id, CARD).status_code == 302
    first, second = Order.objects.order_by("id")
    assert _events(first, "Capture requested")
    (requested,) = _events(second, "Capture requested")
    assert "queued" in second.notes.get().message
    assert _source(second).amount_debited == Decimal("0.00")
    sandbox.process_queue()  # 4WS applies the first capture; its callback posts the second
    sandbox.process_queue()  # and then applies the second
    assert _source(first).amount_debited == requested.amount
    assert _source(second).amount_debited == requested.amount
    out = io.StringIO()
    call_command("fourws_pay_reconcile", stdout=out)
    assert "queued_posted=0" in out.getvalue()
    assert sandbox.balance(CARD) == Decimal("100.00") - 2 * requested.amount
