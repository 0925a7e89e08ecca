"""Several gift cards on one Oscar order: "Apply" holds them (``reserve_order``), the
rest goes to the shop's invoice, "Place order" captures each, staff refund part of it.

The 30.00 EUR test order (one book) is paid with cards of 10.00 and 15.00 and 5.00 on
invoice unless a test says otherwise.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from fourws_pay_oscar import conf, mixins, provider, recording
from oscar.apps.order.models import Order
from oscar.core.loading import get_model
from oscar_checkout import to_payment_details
from oscar_testshop.checkout import views as shop_views

from fourws_pay.errors import PaymentRefused
from fourws_pay.ledger import open_store
from fourws_pay.payments import GiftCardPayments, ReservationState
from fourws_pay.payments.rules import UNIFORM_PUBLIC_MESSAGE

TEN = "2000000001814"  # 10.00
FIFTEEN = "2000000002828"  # 15.00
TWENTY = "2000000003836"  # 20.00 (a third card)
UNKNOWN = "2000000009999"
PAYMENT_DETAILS = "fourws_pay_oscar/checkout/payment_details.html"


def mask(code: str) -> str:
    return "*" * (len(code) - 4) + code[-4:]


@pytest.fixture
def cards(sandbox):
    sandbox.add_giftcard(TEN, amount=Decimal("10.00"))
    sandbox.add_giftcard(FIFTEEN, amount=Decimal("15.00"))
    sandbox.add_giftcard(TWENTY, amount=Decimal("20.00"))


def apply(client: Client, code: str):
    return client.post(
        reverse("checkout:preview"), {"giftcard_code": code, "giftcard_action": "apply"}
    )


def remove(client: Client, index: int):
    return client.post(reverse("checkout:preview"), {"giftcard_code": "", "giftcard_remove": index})


def to_preview(client: Client):
    return client.post(reverse("checkout:preview"), {"giftcard_code": ""})


def place(client: Client):
    return client.post(reverse("checkout:preview"), {"action": "place_order"})


def active_holds(payments) -> dict[str, Decimal]:
    return {
        h.barcode: h.applied_amount for h in payments.list_reservations([ReservationState.ACTIVE])
    }


def applied_rows(page: str) -> list[tuple[str, str]]:
    """(masked card, amount) of each applied card the page lists."""
    return re.findall(
        r'<td class="giftcard-masked">([^<]+)</td>\s*<td class="giftcard-amount">([^<]+)</td>', page
    )


def _two_cards_applied(client: Client, product_id: int) -> None:
    to_payment_details(client, product_id)
    assert apply(client, TEN).status_code == 200
    page = apply(client, FIFTEEN).content.decode()
    assert applied_rows(page) == [(mask(TEN), "€10.00"), (mask(FIFTEEN), "€15.00")]


def test_two_cards_and_the_invoice_pay_one_order(payments, sandbox, cards, oscar_product_id):
    client = Client()
    to_payment_details(client, oscar_product_id)

    first = apply(client, TEN)
    assert PAYMENT_DETAILS in [t.name for t in first.templates]
    page = first.content.decode()
    assert applied_rows(page) == [(mask(TEN), "€10.00")]
    assert "€20.00" in page  # still to pay
    assert active_holds(payments) == {TEN: Decimal("10.00")}

    page = apply(client, FIFTEEN).content.decode()
    assert applied_rows(page) == [(mask(TEN), "€10.00"), (mask(FIFTEEN), "€15.00")]
    assert TEN not in page
    assert FIFTEEN not in page
    assert active_holds(payments) == {TEN: Decimal("10.00"), FIFTEEN: Decimal("15.00")}

    preview = to_preview(client).content.decode()
    assert "place_order" in preview
    assert mask(TEN) in preview
    assert mask(FIFTEEN) in preview
    assert "€5.00" in preview  # left for the invoice

    response = place(client)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert response["Location"] == reverse("checkout:thank-you")

    order = Order.objects.get()
    gift = list(recording.gift_card_sources(order))
    assert [(s.label, s.amount_allocated) for s in gift] == [
        (mask(TEN), Decimal("10.00")),
        (mask(FIFTEEN), Decimal("15.00")),
    ]
    invoice = order.sources.get(source_type__name=shop_views.INVOICE)
    assert invoice.amount_allocated == Decimal("5.00")
    holds = [payments.get_reservation(recording.reservation_id(s)) for s in gift]
    assert {h.order_ref for h in holds} == {f"oscar-{order.number}"}
    requested = order.payment_events.filter(event_type__name="Capture requested")
    assert sorted(e.amount for e in requested) == [Decimal("10.00"), Decimal("15.00")]

    sandbox.process_queue()
    assert [s.amount_debited for s in recording.gift_card_sources(order)] == [
        Decimal("10.00"),
        Decimal("15.00"),
    ]
    assert (sandbox.balance(TEN), sandbox.balance(FIFTEEN)) == (Decimal("0.00"), Decimal("0.00"))
    assert sandbox.balance(TWENTY) == Decimal("20.00")
    assert payments.list_reservations([ReservationState.ACTIVE]) == []
    # the next basket starts with no card applied
    assert mixins.SESSION_KEY not in client.session


def test_removing_a_card_releases_its_hold_and_replans_the_rest(
    payments, sandbox, cards, oscar_product_id
):
    client = Client()
    _two_cards_applied(client, oscar_product_id)
    (ten_hold,) = [h for h in payments.list_reservations() if h.barcode == TEN]

    page = remove(client, 0).content.decode()

    assert applied_rows(page) == [(mask(FIFTEEN), "€15.00")]
    assert "nothing is held on it" in page
    assert payments.get_reservation(ten_hold.id).state is ReservationState.RELEASED
    assert active_holds(payments) == {FIFTEEN: Decimal("15.00")}

    assert place(client).status_code == 302
    order = Order.objects.get()
    assert [(s.label, s.amount_allocated) for s in recording.gift_card_sources(order)] == [
        (mask(FIFTEEN), Decimal("15.00"))
    ]
    assert order.sources.get(source_type__name=shop_views.INVOICE).amount_allocated == Decimal(
        "15.00"
    )
    sandbox.process_queue()
    assert (sandbox.balance(TEN), sandbox.balance(FIFTEEN)) == (Decimal("10.00"), Decimal("0.00"))


def test_a_changed_order_total_replans_the_cards(payments, sandbox, cards, oscar_product_id):
    """The shopper goes back and adds a second book: "Continue" holds the cards again
    for 60.00 under a new key, after letting the holds made for 30.00 go."""
    sandbox.add_giftcard(FIFTEEN, amount=Decimal("40.00"))
    client = Client()
    to_payment_details(client, oscar_product_id)
    apply(client, TEN)
    apply(client, FIFTEEN)
    old = {h.id for h in payments.list_reservations([ReservationState.ACTIVE])}
    assert active_holds(payments) == {TEN: Decimal("10.00"), FIFTEEN: Decimal("20.00")}
    client.post(reverse("basket:add", kwargs={"pk": oscar_product_id}), {"quantity": 1})

    preview = to_preview(client).content.decode()

    assert "place_order" in preview
    assert active_holds(payments) == {TEN: Decimal("10.00"), FIFTEEN: Decimal("40.00")}
    assert not old & {h.id for h in payments.list_reservations([ReservationState.ACTIVE])}
    assert "€10.00" in preview  # left for the invoice
    assert place(client).status_code == 302
    order = Order.objects.get()
    assert order.total_incl_tax == Decimal("60.00")
    assert order.sources.get(source_type__name=shop_views.INVOICE).amount_allocated == Decimal(
        "10.00"
    )


@pytest.mark.parametrize("refused", ["unknown", "expired", "wrong_currency"])
def test_a_refused_second_card_keeps_the_first(refused, payments, sandbox, cards, oscar_product_id):
    code = UNKNOWN
    if refused == "expired":
        sandbox.add_giftcard(code, amount="50.00", expiration_date="2025-01-01 00:00:00")
    elif refused == "wrong_currency":
        sandbox.add_giftcard(code, amount="50.00", currency="USD")
    client = Client()
    to_payment_details(client, oscar_product_id)
    apply(client, TEN)
    (before,) = payments.list_reservations([ReservationState.ACTIVE])

    response = apply(client, code)

    page = response.content.decode()
    assert response.status_code == 200
    assert PAYMENT_DETAILS in [t.name for t in response.templates]
    assert "The cards already applied are unchanged." in page
    assert mask(code) in page  # which card
    if refused != "wrong_currency":
        assert UNIFORM_PUBLIC_MESSAGE in page  # no hint for guessing codes
    assert f'value="{code}"' in page  # the typed code stays in the field
    assert applied_rows(page) == [(mask(TEN), "€10.00")]
    (after,) = payments.list_reservations([ReservationState.ACTIVE])
    assert (after.id, after.applied_amount) == (before.id, Decimal("10.00"))  # as it was
    assert "Traceback" not in page


def test_the_same_card_twice_and_a_card_not_needed(payments, sandbox, cards, oscar_product_id):
    sandbox.add_giftcard("2000000004842", amount=Decimal("40.00"))
    client = Client()
    to_payment_details(client, oscar_product_id)
    apply(client, "2000000004842")
    assert mixins.already_applied_message() in apply(client, "2000000004842").content.decode()
    page = apply(client, TEN).content.decode()
    assert mixins.not_needed_message() in page
    assert applied_rows(page) == [(mask("2000000004842"), "€30.00")]
    assert active_holds(payments) == {"2000000004842": Decimal("30.00")}


@pytest.mark.parametrize("limit", [2, 3])
def test_up_to_max_cards(limit, payments, sandbox, oscar_product_id, monkeypatch):
    codes = [f"20000000{i:04d}00" for i in range(1, limit + 2)]
    for code in codes:
        sandbox.add_giftcard(code, amount=Decimal("5.00"))
    monkeypatch.setitem(conf.DEFAULTS, "MAX_CARDS", limit)  # FOURWS_PAY["MAX_CARDS"]
    client = Client()
    to_payment_details(client, oscar_product_id)
    for code in codes[:limit]:
        apply(client, code)
    response = apply(client, codes[limit])
    page = response.content.decode()
    assert mixins.too_many_cards_message(limit) in page
    assert len(applied_rows(page)) == limit
    assert set(active_holds(payments)) == set(codes[:limit])
    assert 'id="apply_giftcard"' not in page  # no more "Apply" once the limit is reached


def test_a_gift_card_only_checkout_needs_the_cards_to_cover_the_order(
    payments, sandbox, cards, oscar_product_id, monkeypatch
):
    monkeypatch.setattr(shop_views.PaymentDetailsView, "giftcard_partial_allowed", False)
    client = Client()
    _two_cards_applied(client, oscar_product_id)
    page = to_preview(client).content.decode()
    assert "place_order" not in page
    assert "This shop takes gift cards only for the whole amount." in page
    apply(client, TWENTY)  # 10 + 15 + 5 of the 20.00 card
    assert active_holds(payments) == {
        TEN: Decimal("10.00"),
        FIFTEEN: Decimal("15.00"),
        TWENTY: Decimal("5.00"),
    }
    assert place(client).status_code == 302
    order = Order.objects.get()
    assert not order.sources.filter(source_type__name=shop_views.INVOICE).exists()
    assert sum(s.amount_allocated for s in order.sources.all()) == Decimal("30.00")


# ------------------------------------------------------------------ a second worker


@pytest.fixture
def second_worker(payments, sandbox, clock):
    """Another process of the shop: its own GiftCardPayments on the same ledger and 4WS."""
    other = GiftCardPayments(
        settings=payments.settings,
        client=sandbox.client(),
        store=open_store(payments.settings.ledger_url),
        clock=clock,
        plugin_manager=provider.make_plugin_manager(),
    )
    yield other
    other.close()


def test_a_second_worker_spending_on_an_applied_card_queues_behind_it(
    payments, sandbox, cards, oscar_product_id, second_worker
):
    """Between "Apply" and "Place order" another worker spends on the 15.00 card: the
    ledger's hold leaves it only what is not held, its capture is still in flight when the
    order is placed, so the order's capture of that card queues behind it and is posted
    when it settles. Every cent is spent once."""
    sandbox.add_giftcard(FIFTEEN, amount=Decimal("25.00"))
    client = Client()
    to_payment_details(client, oscar_product_id)
    apply(client, TEN)
    apply(client, FIFTEEN)
    assert active_holds(payments) == {TEN: Decimal("10.00"), FIFTEEN: Decimal("20.00")}

    with pytest.raises(PaymentRefused):  # 25 - 20 held = 5 left for anyone else
        second_worker.reserve(FIFTEEN, amount="5.01", currency="EUR", order_ref="pos-1")
    other = second_worker.reserve(FIFTEEN, amount="5.00", currency="EUR", order_ref="pos-1")
    other_capture = second_worker.capture(other.id)  # posted; 4WS has not applied it yet

    assert place(client).status_code == 302
    order = Order.objects.get()
    assert "queued" in " ".join(n.message for n in order.notes.all())
    sandbox.process_queue()  # the other capture settles; its callback posts ours
    sandbox.process_queue()
    assert [s.amount_debited for s in recording.gift_card_sources(order)] == [
        Decimal("10.00"),
        Decimal("20.00"),
    ]
    assert not order.sources.filter(source_type__name=shop_views.INVOICE).exists()
    assert (sandbox.balance(TEN), sandbox.balance(FIFTEEN)) == (Decimal("0.00"), Decimal("0.00"))
    assert payments.get_operation(other_capture.id).state.value == "succeeded"
    assert not order.payment_events.filter(event_type__name="Capture failed").exists()


def test_a_till_spending_an_applied_card_makes_its_capture_fail_cleanly(
    payments, sandbox, cards, oscar_product_id
):
    """Spent behind the ledger's back (a till, no hold to see): the order exists, the 10.00
    card is captured, the 15.00 one is refused at its fresh re-check; staff see it."""
    client = Client()
    _two_cards_applied(client, oscar_product_id)
    sandbox.spend_in_shop(FIFTEEN, "10.00")

    response = place(client)

    assert response.status_code == 302  # the customer is not shown an error
    order = Order.objects.get()
    (failed,) = order.payment_events.filter(event_type__name="Capture failed")
    assert failed.amount == Decimal("15.00")
    assert "not paid by this card" in order.notes.get(note_type="Error").message
    sandbox.process_queue()
    ten, fifteen = recording.gift_card_sources(order)
    assert (ten.amount_debited, fifteen.amount_debited) == (Decimal("10.00"), Decimal("0.00"))
    assert (sandbox.balance(TEN), sandbox.balance(FIFTEEN)) == (Decimal("0.00"), Decimal("5.00"))
    assert payments.list_reservations([ReservationState.ACTIVE]) == []


# ------------------------------------------------------------------ staff refunds


@pytest.fixture
def staff_client() -> Client:
    user = get_model("auth", "User").objects.create_user(
        "staff", "staff@example.com", "pw-of-staff", is_staff=True, is_superuser=True
    )
    client = Client()
    client.force_login(user)
    return client


REFUND_KEY_RE = re.compile(r'name="refund_key" value="([^"]+)"')


def test_staff_partial_refund_spans_two_cards_once_even_when_resubmitted(
    payments, sandbox, clock, cards, oscar_product_id, staff_client
):
    client = Client()
    _two_cards_applied(client, oscar_product_id)
    assert place(client).status_code == 302
    sandbox.process_queue()
    order = Order.objects.get()
    dashboard = reverse("dashboard:order-detail", kwargs={"number": order.number})
    (key,) = REFUND_KEY_RE.findall(staff_client.get(dashboard).content.decode())
    url = reverse("fourws_pay_oscar:giftcards-refund", kwargs={"number": order.number})

    first = staff_client.post(url, {"amount": "20.00", "refund_key": key}, follow=True)
    again = staff_client.post(url, {"amount": "20.00", "refund_key": key}, follow=True)

    assert first.status_code == again.status_code == 200
    (outcome,) = payments.order_refunds(f"oscar-{order.number}")
    assert outcome.refund.amount == Decimal("20.00")
    parts = {op.masked_barcode: op.amount for op in outcome.operations}
    assert sum(parts.values()) == Decimal("20.00")
    # newest capture first: it is taken in full, the older one gives the rest
    captures = sorted(
        (op for op in payments.list_operations() if op.kind.value == "capture"),
        key=lambda op: (op.created_at, op.id),
        reverse=True,
    )
    newest, older = captures
    assert parts == {
        newest.masked_barcode: newest.amount,
        older.masked_barcode: Decimal("20.00") - newest.amount,
    }
    assert order.payment_events.filter(event_type__name="Refund requested").count() == 2
    for response in (first, again):
        page = response.content.decode()
        assert "Refund of 20.00 EUR to the gift cards requested" in page
        for masked, amount in parts.items():
            assert f"{amount} EUR to {masked}" in page

    sandbox.process_queue()
    refunded = {s.label: s.amount_refunded for s in recording.gift_card_sources(order)}
    assert refunded == parts
    assert sandbox.balance(TEN) + sandbox.balance(FIFTEEN) == Decimal("20.00")
    page = staff_client.get(dashboard).content.decode()
    assert page.count('class="giftcard-refund-part"') == 2
    assert TEN not in page
    assert FIFTEEN not in page

    # the same form for another amount is refused; a new form refunds the rest
    other = staff_client.post(url, {"amount": "1.00", "refund_key": key}, follow=True)
    assert "Nothing was refunded" in other.content.decode()
    (fresh,) = REFUND_KEY_RE.findall(page)
    assert fresh != key
    rest = staff_client.post(url, {"amount": "", "refund_key": fresh}, follow=True)
    assert "Refund of 5.00 EUR" in rest.content.decode()
    sandbox.process_queue()
    assert (sandbox.balance(TEN), sandbox.balance(FIFTEEN)) == (Decimal("10.00"), Decimal("15.00"))


def test_only_staff_may_refund(payments, sandbox, cards, oscar_product_id):
    client = Client()
    _two_cards_applied(client, oscar_product_id)
    place(client)
    sandbox.process_queue()
    order = Order.objects.get()
    url = reverse("fourws_pay_oscar:giftcards-refund", kwargs={"number": order.number})
    assert Client().post(url, {"amount": "5.00", "refund_key": "k1"}).status_code in (302, 403)
    assert payments.order_refunds(f"oscar-{order.number}") == []
