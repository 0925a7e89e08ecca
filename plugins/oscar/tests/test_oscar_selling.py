"""Oscar sells gift cards: issued only once the order is paid, once, mailed per recipient,
resent and cancelled by staff (fourws_pay_oscar.selling)."""

from __future__ import annotations

import io
import re
from decimal import Decimal

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client, TestCase
from django.urls import reverse
from fourws_pay_oscar import selling
from oscar.apps.order.models import Order
from oscar.core.loading import get_model
from oscar_checkout import place_order, submit_code

from fourws_pay.errors import SaleAlreadySpentError

CARD = "2000000001814"
CODE_RE = re.compile(r"Gift card (\d{6,}): ")


@pytest.fixture(autouse=True)
def _empty_outbox():
    mail.outbox.clear()


@pytest.fixture
def giftcard_product(oscar_product_id) -> int:
    """A 25.00 EUR gift-card product (inside the test's rolled-back transaction)."""
    product_class = selling.setup_product_class()
    product = get_model("catalogue", "Product").objects.create(
        title="Gift card 25", upc="TEST-GIFTCARD-25", product_class=product_class
    )
    get_model("partner", "StockRecord").objects.create(
        product=product,
        partner=get_model("partner", "Partner").objects.get(name="Test partner"),
        partner_sku="TEST-GIFTCARD-25",
        price_currency="EUR",
        price=Decimal("25.00"),
        num_in_stock=None,
    )
    return int(product.pk)


def settle(sandbox, clock) -> None:
    """4WS works its queue and calls back, the shop's committed work runs, until nothing
    is left (each round's callbacks may issue cards, whose generation is the next round)."""
    for _ in range(20):
        with TestCase.captureOnCommitCallbacks(execute=True) as ran:
            sandbox.run_until_idle()
        clock.advance(1)
        if not ran and not sandbox.pending():
            return
    raise AssertionError("the queue never emptied")


def buy(
    client: Client,
    lines: list[tuple[int, int, dict[str, str]]],
    code: str | None,
    *,
    signed_in: bool = False,
) -> Order:
    """A guest checkout of ``lines`` (product id, quantity, options); the card pays what
    it can, the shop's "Invoice" method (allocated, not debited) the rest."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        for product_id, quantity, options in lines:
            response = client.post(
                reverse("basket:add", kwargs={"pk": product_id}),
                {"quantity": quantity, **options},
            )
            assert response.status_code == 302
        if not signed_in:
            response = client.post(
                reverse("checkout:index"),
                {"username": "buyer@example.com", "options": "anonymous"},
            )
            assert response.status_code == 302
        response = client.get(reverse("checkout:payment-details"), follow=True)
        assert response.status_code == 200
        preview = submit_code(client, code or "")
        assert preview.status_code == 200, preview.content[:3000]
        assert place_order(client, preview).status_code == 302
    return Order.objects.latest("pk")


def giftcard_mails() -> list:
    """The gift-card messages sent (Oscar also mails its order confirmation)."""
    return [m for m in mail.outbox if "gift card" in m.subject.lower()]


def codes_in(message) -> list[str]:
    return CODE_RE.findall(message.body)


def to(email: str) -> dict[str, str]:
    return {selling.RECIPIENT_EMAIL: email, selling.RECIPIENT_NAME: "Bob"}


def test_cards_are_issued_only_once_the_gift_card_payment_settled(
    payments, sandbox, clock, giftcard_product
):
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    order = buy(Client(), [(giftcard_product, 1, to("bob@example.com"))], CARD)

    # placed, capture posted, 4WS has not settled it: not paid, nothing issued
    assert selling.paid_amount(order) == Decimal("0.00")
    assert payments.issued_cards(f"oscar-{order.number}") == []
    assert not sandbox.requests_to("generate_giftcards")
    assert giftcard_mails() == []

    settle(sandbox, clock)

    (card,) = payments.issued_cards(f"oscar-{order.number}")
    assert card.state.value == "delivered"
    assert card.amount == Decimal("25.00")
    assert sandbox.balance(card.barcode) == Decimal("25.00")
    (message,) = giftcard_mails()
    assert message.to == ["bob@example.com"]
    assert codes_in(message) == [card.barcode]
    assert "Dear Bob" in message.body
    assert card.barcode not in "".join(n.message for n in order.notes.all())


def test_an_order_only_authorised_is_never_issued_until_it_is_debited(
    payments, sandbox, clock, giftcard_product
):
    sandbox.add_giftcard(CARD, amount=Decimal("10.00"))
    order = buy(Client(), [(giftcard_product, 1, {})], CARD)  # 10 by card, 15 invoiced
    settle(sandbox, clock)

    assert selling.paid_amount(order) == Decimal("10.00")  # the invoice is only allocated
    assert payments.issued_cards(f"oscar-{order.number}") == []
    assert not sandbox.requests_to("generate_giftcards")

    invoice = order.sources.get(source_type__name="Invoice")
    with TestCase.captureOnCommitCallbacks(execute=True):
        invoice.debit(Decimal("15.00"), reference="bank transfer")  # the buyer paid it
    settle(sandbox, clock)

    (card,) = payments.issued_cards(f"oscar-{order.number}")
    assert card.state.value == "delivered"
    (message,) = giftcard_mails()
    assert message.to == ["buyer@example.com"]  # no recipient: the buyer


def test_issuing_twice_finds_the_same_cards(payments, sandbox, clock, giftcard_product):
    sandbox.add_giftcard(CARD, amount=Decimal("60.00"))
    order = buy(Client(), [(giftcard_product, 2, {})], CARD)
    settle(sandbox, clock)
    first = payments.issued_cards(f"oscar-{order.number}")

    with TestCase.captureOnCommitCallbacks(execute=True):
        again = selling.issue_paid_order(order)
        order.sources.get().save()  # the signal path runs again too
    settle(sandbox, clock)

    assert sorted(c.id for c in again) == sorted(c.id for c in first)
    assert len(payments.issued_cards(f"oscar-{order.number}")) == 2
    assert len(sandbox.requests_to("generate_giftcards")) == 1
    assert len(giftcard_mails()) == 1


def test_one_mail_per_recipient_with_all_their_codes(payments, sandbox, clock, giftcard_product):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    order = buy(
        Client(),
        [
            (giftcard_product, 2, to("bob@example.com")),
            (giftcard_product, 1, to("carol@example.com")),
            (giftcard_product, 1, to("BOB@example.com")),
        ],
        CARD,
    )
    settle(sandbox, clock)

    cards = payments.issued_cards(f"oscar-{order.number}")
    assert len(cards) == 4
    assert sorted(m.to[0].lower() for m in giftcard_mails()) == [
        "bob@example.com",
        "carol@example.com",
    ]
    bob = next(m for m in giftcard_mails() if m.to[0].lower() == "bob@example.com")
    assert len(codes_in(bob)) == 3
    delivered = sorted(code for m in giftcard_mails() for code in codes_in(m))
    assert delivered == sorted(c.barcode for c in cards)


def test_resend_mails_the_same_codes_again(payments, sandbox, clock, giftcard_product):
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    order = buy(Client(), [(giftcard_product, 1, to("bob@example.com"))], CARD)
    settle(sandbox, clock)
    (first,) = giftcard_mails()

    selling.resend(order)

    assert len(giftcard_mails()) == 2
    assert codes_in(giftcard_mails()[1]) == codes_in(first)
    assert len(sandbox.requests_to("generate_giftcards")) == 1


def test_cancel_takes_back_only_what_is_unspent(payments, sandbox, clock, giftcard_product):
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    order = buy(Client(), [(giftcard_product, 2, {})], CARD)
    settle(sandbox, clock)
    partly, spent = payments.issued_cards(f"oscar-{order.number}")
    sandbox.spend_in_shop(partly.barcode, "10.00")
    sandbox.spend_in_shop(spent.barcode, "25.00")

    result = selling.cancel_card(order, partly.id)
    settle(sandbox, clock)

    assert result.card.state.value == "cancelled"
    assert "15.00" in (result.card.message or "")
    assert payments.reclaimed_amount(partly.id) == Decimal("15.00")
    assert sandbox.balance(partly.barcode) == Decimal("0.00")
    with pytest.raises(SaleAlreadySpentError):
        selling.cancel_card(order, spent.id)
    assert payments.get_issued_card(spent.id).state.value == "delivered"


# ------------------------------------------------------------------ order pages, staff


@pytest.fixture
def buyer_client() -> Client:
    user = get_model("auth", "User").objects.create_user(
        "member", "member@example.com", "pw-of-the-member"
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_client() -> Client:
    user = get_model("auth", "User").objects.create_user(
        "staff", "staff@example.com", "pw-of-staff", is_staff=True, is_superuser=True
    )
    client = Client()
    client.force_login(user)
    return client


def test_the_buyer_sees_the_code_staff_see_it_masked(
    payments, sandbox, clock, giftcard_product, buyer_client, staff_client
):
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    order = buy(buyer_client, [(giftcard_product, 1, {})], CARD, signed_in=True)
    settle(sandbox, clock)
    (card,) = payments.issued_cards(f"oscar-{order.number}")

    mine = buyer_client.get(reverse("customer:order", kwargs={"order_number": order.number}))
    assert mine.status_code == 200
    assert card.barcode in mine.content.decode()

    dashboard = staff_client.get(reverse("dashboard:order-detail", kwargs={"number": order.number}))
    assert dashboard.status_code == 200
    page = dashboard.content.decode()
    assert card.barcode not in page
    assert card.masked_barcode in page
    assert "resend-giftcards" in page


def test_staff_resend_from_the_dashboard(
    payments, sandbox, clock, giftcard_product, buyer_client, staff_client
):
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    order = buy(Client(), [(giftcard_product, 1, to("bob@example.com"))], CARD)
    settle(sandbox, clock)
    url = reverse("fourws_pay_oscar:giftcards-resend", kwargs={"number": order.number})

    assert buyer_client.post(url).status_code == 403
    assert len(giftcard_mails()) == 1
    response = staff_client.post(url, follow=True)

    assert response.status_code == 200
    assert "e-mailed again" in response.content.decode()
    first, again = giftcard_mails()
    assert again.to == ["bob@example.com"]
    assert codes_in(again) == codes_in(first)


def test_staff_cancel_shows_what_is_taken_back_and_refuses_a_spent_card(
    payments, sandbox, clock, giftcard_product, staff_client
):
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    order = buy(Client(), [(giftcard_product, 2, {})], CARD)
    settle(sandbox, clock)
    partly, spent = payments.issued_cards(f"oscar-{order.number}")
    sandbox.spend_in_shop(partly.barcode, "10.00")
    sandbox.spend_in_shop(spent.barcode, "25.00")

    def cancel(card):
        url = reverse(
            "fourws_pay_oscar:giftcard-cancel", kwargs={"number": order.number, "card_id": card.id}
        )
        return staff_client.post(url, follow=True).content.decode()

    page = cancel(partly)
    assert "15.00 EUR taken back" in page
    refused = cancel(spent)
    assert "already been spent in full" in refused
    assert "Traceback" not in refused
    settle(sandbox, clock)
    assert payments.reclaimed_amount(partly.id) == Decimal("15.00")
    assert payments.get_issued_card(spent.id).state.value == "delivered"


def test_a_staff_buyer_sees_the_whole_code_only_on_their_account_page(
    payments, sandbox, clock, giftcard_product, staff_client
):
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    order = buy(staff_client, [(giftcard_product, 1, {})], CARD, signed_in=True)
    settle(sandbox, clock)
    (card,) = payments.issued_cards(f"oscar-{order.number}")

    mine = staff_client.get(reverse("customer:order", kwargs={"order_number": order.number}))
    dashboard = staff_client.get(reverse("dashboard:order-detail", kwargs={"number": order.number}))

    assert card.barcode in mine.content.decode()
    assert card.barcode not in dashboard.content.decode()
    assert card.masked_barcode in dashboard.content.decode()


def test_reconcile_issues_a_paid_order_whose_check_never_ran(
    payments, sandbox, clock, giftcard_product
):
    sandbox.add_giftcard(CARD, amount=Decimal("10.00"))
    order = buy(Client(), [(giftcard_product, 1, {})], CARD)  # 10 by card, 15 invoiced
    settle(sandbox, clock)
    # paid, but the after-commit check is lost (as if the process died right after it)
    order.sources.get(source_type__name="Invoice").debit(Decimal("15.00"), reference="bank")
    assert payments.issued_cards(f"oscar-{order.number}") == []

    out = io.StringIO()
    with TestCase.captureOnCommitCallbacks(execute=True):
        call_command("fourws_pay_reconcile", stdout=out)
    settle(sandbox, clock)

    assert "giftcard_orders_issued=1" in out.getvalue()
    (card,) = payments.issued_cards(f"oscar-{order.number}")
    assert card.state.value == "delivered"
    out = io.StringIO()
    call_command("fourws_pay_reconcile", stdout=out)
    assert "giftcard_orders_issued=0" in out.getvalue()


# ------------------------------------------------------------------ a typed amount


@pytest.fixture
def free_amount_product(giftcard_product) -> int:
    product = get_model("catalogue", "Product").objects.get(pk=giftcard_product)
    selling.allow_free_amount(product)
    return giftcard_product


def test_a_typed_amount_within_the_limits_is_the_cards_value(
    payments, sandbox, clock, free_amount_product
):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    order = buy(Client(), [(free_amount_product, 2, {selling.AMOUNT: "40"})], CARD)
    settle(sandbox, clock)

    assert order.total_incl_tax == Decimal("80.00")
    cards = payments.issued_cards(f"oscar-{order.number}")
    assert [c.amount for c in cards] == [Decimal("40.00")] * 2
    assert all(sandbox.balance(c.barcode) == Decimal("40.00") for c in cards)


def test_the_basket_shows_the_typed_amount_without_a_price_change_warning(
    payments, free_amount_product
):
    client = Client()
    client.post(
        reverse("basket:add", kwargs={"pk": free_amount_product}),
        {"quantity": 1, selling.AMOUNT: "40.00"},
    )
    page = client.get(reverse("basket:summary")).content.decode()

    assert "40.00" in page
    assert "has increased" not in page


def test_a_blank_amount_is_the_products_price(payments, sandbox, clock, free_amount_product):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    order = buy(Client(), [(free_amount_product, 1, {selling.AMOUNT: ""})], CARD)
    settle(sandbox, clock)

    (card,) = payments.issued_cards(f"oscar-{order.number}")
    assert card.amount == Decimal("25.00")


@pytest.mark.parametrize("typed", ["5.00", "501", "12.345", "lots"])
def test_an_amount_outside_the_limits_is_never_ordered(payments, free_amount_product, typed):
    client = Client()
    response = client.post(
        reverse("basket:add", kwargs={"pk": free_amount_product}),
        {"quantity": 1, selling.AMOUNT: typed},
    )
    assert response.status_code == 302
    client.post(
        reverse("checkout:index"), {"username": "buyer@example.com", "options": "anonymous"}
    )
    response = client.get(reverse("checkout:payment-details"), follow=True)

    assert response.request["PATH_INFO"] == reverse("basket:summary")
    assert "goes from 10.00 to 500.00 EUR" in response.content.decode()
    assert not Order.objects.exists()
