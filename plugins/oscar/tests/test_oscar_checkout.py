"""A real Oscar checkout paid by a 4WS gift card, through Django's test client."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from fourws_pay_oscar import mixins, recording
from oscar.apps.basket.models import Basket
from oscar.apps.order.models import Order
from oscar_checkout import checkout, place_order, submit_code, to_payment_details
from oscar_testshop.checkout import views as shop_views

from fourws_pay.payments import ReservationState
from fourws_pay.payments.models import RefusalReason
from fourws_pay.payments.rules import PUBLIC_MESSAGES, UNIFORM_PUBLIC_MESSAGE

CARD = "2000000001814"
PAYMENT_DETAILS = "fourws_pay_oscar/checkout/payment_details.html"


def _templates(response) -> list[str]:
    return [t.name for t in response.templates]


def _assert_nothing_taken(payments, sandbox, balance: Decimal | None = None) -> None:
    assert not Order.objects.exists()
    assert payments.list_reservations([ReservationState.ACTIVE]) == []
    assert sandbox.pending() == []
    assert [op for op in sandbox.operations() if op.kind == "consumption"] == []
    if balance is not None:
        assert sandbox.balance(CARD) == balance
    (basket,) = Basket.objects.all()
    assert basket.status == Basket.OPEN  # thawed: the customer can go on shopping


def test_full_payment_reserves_captures_and_settles(payments, sandbox, oscar_product_id):
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    client = Client()

    to_payment_details(client, oscar_product_id)
    preview = submit_code(client, CARD)
    page = preview.content.decode()
    assert preview.status_code == 200
    assert "place_order" in page
    assert CARD not in page  # the code travels sealed, never in clear
    assert "*********1814" in page
    assert "30.00" in page

    response = place_order(client, preview)
    assert response.status_code == 302
    assert response["Location"] == reverse("checkout:thank-you")

    order = Order.objects.get()
    assert order.total_incl_tax == Decimal("30.00")
    (source,) = order.sources.all()
    assert source.source_type.name == "4WS gift card"
    assert source.amount_allocated == Decimal("30.00")
    assert source.amount_debited == Decimal("0.00")  # not settled yet
    assert source.label == "*********1814"
    # what the thank-you page shows: the masked card, not an internal id
    assert source.reference == "*********1814"
    reservation = payments.get_reservation(recording.reservation_id(source))
    assert reservation.order_ref == f"oscar-{order.number}"
    assert reservation.amount == Decimal("30.00")
    (authorise,) = source.transactions.all()
    assert (authorise.txn_type, authorise.amount, authorise.reference) == (
        "Authorise",
        Decimal("30.00"),
        reservation.id,
    )
    (requested,) = order.payment_events.all()
    assert requested.event_type.name == "Capture requested"
    operation = payments.get_operation(requested.reference)
    assert operation.reservation_id == reservation.id
    assert operation.state.value == "enqueued"
    assert operation.amount == Decimal("30.00")

    sandbox.process_queue()  # 4WS applies the update and calls back through the Django view

    source.refresh_from_db()
    assert source.amount_debited == Decimal("30.00")
    debit = source.transactions.get(txn_type="Debit")
    assert debit.reference == operation.id
    assert payments.get_operation(operation.id).state.value == "succeeded"
    assert payments.get_reservation(reservation.id).state.value == "captured"
    settled = order.payment_events.get(event_type__name="Settled")
    assert settled.amount == Decimal("30.00")
    assert sandbox.balance(CARD) == Decimal("20.00")

    thanks = client.get(reverse("checkout:thank-you"))
    assert thanks.status_code == 200
    assert order.number in thanks.content.decode()


def test_partial_payment_leaves_the_rest_to_the_shops_other_method(
    payments, sandbox, oscar_product_id
):
    sandbox.add_giftcard(CARD, amount=Decimal("10.00"))
    client = Client()
    to_payment_details(client, oscar_product_id)
    preview = submit_code(client, CARD)
    page = preview.content.decode()
    assert "10.00" in page  # what the card pays
    assert "20.00" in page  # what is left for the invoice

    response = place_order(client, preview)
    assert response.status_code == 302

    order = Order.objects.get()
    gift = order.sources.get(source_type__name="4WS gift card")
    invoice = order.sources.get(source_type__name=shop_views.INVOICE)
    assert gift.amount_allocated == Decimal("10.00")
    assert invoice.amount_allocated == Decimal("20.00")
    assert gift.amount_allocated + invoice.amount_allocated == order.total_incl_tax
    assert order.payment_events.get(event_type__name="Invoiced").amount == Decimal("20.00")

    sandbox.process_queue()
    gift.refresh_from_db()
    assert gift.amount_debited == Decimal("10.00")
    assert sandbox.balance(CARD) == Decimal("0.00")


def test_no_code_pays_everything_with_the_other_method(payments, sandbox, oscar_product_id):
    client = Client()
    response = checkout(client, oscar_product_id, "")
    assert response.status_code == 302
    (source,) = Order.objects.get().sources.all()
    assert source.source_type.name == shop_views.INVOICE
    assert source.amount_allocated == Decimal("30.00")


def _replace_card(sandbox, **changes):
    """The card as 4WS now sees it (``Sandbox.card`` is a snapshot; re-adding replaces)."""
    sandbox.add_giftcard(CARD, **{"amount": sandbox.balance(CARD), **changes})


def _expire(sandbox, clock):
    _replace_card(sandbox, expiration_date=clock.now() - timedelta(days=1))


def _deactivate(sandbox, clock):
    _replace_card(sandbox, active=False)


def _spend_down(sandbox, clock):
    sandbox.spend_in_shop(CARD, "40.00")


def _single_use(sandbox, clock):
    _replace_card(sandbox, partial_usage=False)


def _dollars(sandbox, clock):
    _replace_card(sandbox, currency="USD")


REFUSALS = {
    # name: (card kwargs at check time, change before "Place order", message, balance kept)
    "insufficient": ({"amount": "10.00"}, _spend_down, "insufficient_balance"),
    "expired": ({"expiration_date": "2025-12-31 00:00:00"}, _expire, "expired"),
    "inactive": ({"active": False}, _deactivate, "inactive"),
    "partial_usage_N": ({"partial_usage": False}, _single_use, "partial_usage_not_allowed"),
    "wrong_currency": ({"currency": "USD"}, _dollars, "currency_mismatch"),
    "unknown_card": (None, None, "not_found"),
}


def _message(reason: str) -> str:
    reason_enum = RefusalReason(reason)
    return PUBLIC_MESSAGES.get(reason_enum, UNIFORM_PUBLIC_MESSAGE)


@pytest.fixture
def gift_card_only(monkeypatch):
    """The shop as the ready app serves it: the card must pay the whole order."""
    monkeypatch.setattr(shop_views.PaymentDetailsView, "giftcard_partial_allowed", False)


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusal_when_the_code_is_entered(
    name, payments, sandbox, oscar_product_id, gift_card_only
):
    card_kwargs, _, reason = REFUSALS[name]
    if card_kwargs is not None:
        sandbox.add_giftcard(CARD, **{"amount": "50.00", **card_kwargs})
    balance = sandbox.balance(CARD) if card_kwargs is not None else None
    client = Client()
    to_payment_details(client, oscar_product_id)

    response = submit_code(client, CARD)

    assert response.status_code == 200
    assert PAYMENT_DETAILS in _templates(response)
    page = response.content.decode()
    assert _message(reason) in page
    assert "Traceback" not in page
    # what the customer typed stays in the field (to correct one digit), and only there
    assert page.count(CARD) == 1
    assert re.search(rf'<input type="text" name="giftcard_code"[^>]*value="{CARD}"', page)
    assert "Amount due" in page
    _assert_nothing_taken(payments, sandbox, balance)


def test_the_payment_step_shows_the_amount_due_and_an_empty_field(
    payments, sandbox, oscar_product_id
):
    page = to_payment_details(Client(), oscar_product_id).content.decode()
    due = re.search(r'id="giftcard-amount-due">\s*Amount due: <strong>([^<]+)</strong>', page)
    assert due, page[:3000]
    assert "30.00" in due.group(1)  # the order's total, shipping included
    assert re.search(r'<input type="text" name="giftcard_code"[^>]*value=""', page)


def test_a_typed_code_with_spaces_is_kept_as_typed(payments, sandbox, oscar_product_id):
    client = Client()
    to_payment_details(client, oscar_product_id)
    page = submit_code(client, "2000 0000 9999").content.decode()  # no such card
    assert 'value="2000 0000 9999"' in page


@pytest.mark.parametrize("name", [n for n in REFUSALS if REFUSALS[n][1] is not None])
def test_refusal_when_the_card_changed_before_place_order(
    name, payments, sandbox, clock, oscar_product_id, gift_card_only
):
    """The card is re-read on "Place order": a refusal there re-renders the payment page."""
    _, change, reason = REFUSALS[name]
    sandbox.add_giftcard(CARD, amount="50.00")
    client = Client()
    to_payment_details(client, oscar_product_id)
    preview = submit_code(client, CARD)
    assert "place_order" in preview.content.decode()

    change(sandbox, clock)
    balance = sandbox.balance(CARD)
    response = place_order(client, preview)

    assert response.status_code == 200
    assert PAYMENT_DETAILS in _templates(response)
    assert _message(reason) in response.content.decode()
    _assert_nothing_taken(payments, sandbox, balance)


def test_gift_card_only_checkout_wants_a_code(payments, sandbox, oscar_product_id, gift_card_only):
    client = Client()
    to_payment_details(client, oscar_product_id)
    response = submit_code(client, "")
    assert PAYMENT_DETAILS in _templates(response)
    assert mixins.code_required_message() in response.content.decode()
    _assert_nothing_taken(payments, sandbox)


def test_placement_failure_after_payment_releases_the_hold(
    payments, sandbox, event_log, oscar_product_id, monkeypatch
):
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))

    def broken_place_order(self, *args, **kwargs):
        raise RuntimeError("the order table is on fire")

    monkeypatch.setattr(shop_views.PaymentDetailsView, "place_order", broken_place_order)
    response = checkout(Client(), oscar_product_id, CARD)

    assert response.status_code == 200
    assert "A problem occurred while placing this order" in response.content.decode()
    (reservation,) = event_log.reservations()
    assert payments.get_reservation(reservation.id).state is ReservationState.RELEASED
    assert event_log.kinds() == ["reserved", "released"]
    _assert_nothing_taken(payments, sandbox, Decimal("50.00"))


def test_other_method_refusal_releases_the_gift_card_hold(
    payments, sandbox, event_log, oscar_product_id, monkeypatch
):
    sandbox.add_giftcard(CARD, amount=Decimal("10.00"))
    monkeypatch.setattr(shop_views.InvoicePaymentDetailsView, "refuse_invoice", True)
    response = checkout(Client(), oscar_product_id, CARD)

    assert response.status_code == 200
    assert PAYMENT_DETAILS in _templates(response)
    assert "Invoices are not available" in response.content.decode()
    assert event_log.kinds() == ["reserved", "released"]
    _assert_nothing_taken(payments, sandbox, Decimal("10.00"))


def test_gift_card_service_down_is_a_message_not_a_traceback(payments, sandbox, oscar_product_id):
    from fourws_pay.sandbox.faults import Fault

    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    sandbox.faults.add("get_giftcard", Fault.server_error(503), times=None)
    client = Client()
    to_payment_details(client, oscar_product_id)
    response = submit_code(client, CARD)

    assert response.status_code == 200
    assert PAYMENT_DETAILS in _templates(response)
    assert mixins.unavailable_message() in response.content.decode()
    _assert_nothing_taken(payments, sandbox, Decimal("50.00"))


def test_capture_refused_after_placement_is_recorded_for_staff(
    payments, sandbox, oscar_product_id, monkeypatch
):
    """The card is spent at a till between "Place order" and the capture's fresh re-check."""
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    real_capture = payments.capture

    def capture_after_till_spend(reservation_id, **kwargs):
        sandbox.spend_in_shop(CARD, "45.00")
        return real_capture(reservation_id, **kwargs)

    monkeypatch.setattr(payments, "capture", capture_after_till_spend)
    response = checkout(Client(), oscar_product_id, CARD)

    assert response.status_code == 302  # the order exists; the customer is not shown an error
    order = Order.objects.get()
    (source,) = order.sources.all()
    assert source.amount_debited == Decimal("0.00")
    assert order.payment_events.filter(event_type__name="Capture failed").count() == 1
    note = order.notes.get()
    assert note.note_type == "Error"
    assert "not paid by this card" in note.message
    assert sandbox.pending() == []  # nothing was posted to 4WS
