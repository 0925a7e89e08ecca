"""A real Oscar checkout paid by a 4WS gift card, through Django's test client."""

from __future__ import annotations

from decimal import Decimal

from django.test import Client
from django.urls import reverse
from oscar.apps.order.models import Order
from oscar_checkout import checkout, place_order, submit_code, to_payment_details, token_of

CARD = "2000000001814"


def _order() -> Order:
    return Order.objects.get()


def test_full_payment_reserves_captures_and_settles(payments, sandbox, oscar_product_id):
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    client = Client()

    to_payment_details(client, oscar_product_id)
    preview = submit_code(client, CARD)
    page = preview.content.decode()
    assert preview.status_code == 200
    assert "Preview order" in page or "place_order" in page
    assert CARD not in page  # the code travels sealed, never in clear
    assert "*********1814" in page
    assert "30.00" in page

    response = place_order(client, preview)
    assert response.status_code == 302
    assert response["Location"] == reverse("checkout:thank-you")

    order = _order()
    assert order.total_incl_tax == Decimal("30.00")
    (source,) = order.sources.all()
    assert source.source_type.name == "4WS gift card"
    assert source.amount_allocated == Decimal("30.00")
    assert source.amount_debited == Decimal("0.00")  # not settled yet
    assert source.label == "*********1814"
    reservation = payments.get_reservation(source.reference)
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
