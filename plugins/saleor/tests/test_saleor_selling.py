"""Selling 4WS gift cards from Saleor orders (issue 18 item 6), on the fake Saleor.

Each guarantee is checked against the sandbox's books (how many cards 4WS generated, how
many times each was loaded) and against what Saleor was told (the order's private
metadata), not against the App's own records only.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from fake_saleor import order_line, paid_order
from fourws_pay_saleor import build_manifest
from fourws_pay_saleor.jsonutil import loads
from fourws_pay_saleor.sales import ISSUED, RECEIVED, REFUSED, Sale
from fourws_pay_saleor.selling import ORDER_METADATA_KEY, SaleorSelling
from saleor_world import World, make_config

from fourws_pay.errors import FourWSError
from fourws_pay.payments.models import IssuedCard, IssuedCardState

ITEM = "GIFTCARD_IVA_TAGLIO_100"
ORDER = "T3JkZXI6MQ=="
# Saleor's line ids are base64 global ids, padding included (as the real Saleor sends them).
GIFT_LINE = "T3JkZXJMaW5lOjE="
MUG_LINE = "T3JkZXJMaW5lOjI="


class Mailer:
    """The shop's ``deliver_giftcards``: what it was asked to send, and a switch to fail."""

    def __init__(self) -> None:
        self.sent: list[tuple[Sale, list[IssuedCard], str | None]] = []
        self.failures = 0

    def __call__(self, sale: Sale, cards: list[IssuedCard], pdf_url: str | None) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the mail server is down")
        self.sent.append((sale, cards, pdf_url))


MAILER = Mailer()


@pytest.fixture
def mailer() -> Mailer:
    MAILER.sent.clear()
    MAILER.failures = 0
    return MAILER


@pytest.fixture
def app_options(mailer: Mailer) -> dict[str, Any]:
    return {"config": {"sell_giftcards": True}, "app": {"deliver_giftcards": mailer}}


@pytest.fixture(autouse=True)
def giftcard_item(world: World) -> None:
    world.sandbox.add_product(ITEM, item_type="FINANCIAL")


async def settle(world: World, rounds: int = 4) -> None:
    """4WS answers generate, then activation; each callback lets the App carry on."""
    for _ in range(rounds):
        await world.settle()
        await world.state.flush_reports()


def selling(world: World) -> SaleorSelling:
    assert world.state.selling is not None
    return world.state.selling


def loads_of(world: World, barcode: str) -> int:
    return sum(1 for r in world.sandbox.applied_operations(barcode) if r.amount > 0)


def order_metadata(world: World, order_id: str = ORDER) -> list[dict[str, Any]]:
    value = world.saleor.private_metadata.get(order_id, {}).get(ORDER_METADATA_KEY)
    assert value is not None, f"no {ORDER_METADATA_KEY} on {order_id}"
    cards: list[dict[str, Any]] = loads(value)
    return cards


async def test_a_paid_order_gets_one_active_card_per_unit_delivered_once(
    world: World, mailer: Mailer
) -> None:
    order = paid_order(
        order_line(GIFT_LINE, Decimal("25.00"), quantity=2),
        order_line(MUG_LINE, Decimal("9.90"), giftcard=False),
    )
    response = await world.saleor.order_fully_paid(world.client, order)
    assert response.status_code == 200, response.text
    await settle(world)

    cards = await world.payments.issued_cards(ORDER)
    assert [(c.line_id, c.line_index, c.state) for c in cards] == [
        (GIFT_LINE, 0, IssuedCardState.DELIVERED),
        (GIFT_LINE, 1, IssuedCardState.DELIVERED),
    ]
    assert len(world.sandbox.requests_to("generate_giftcards")) == 1  # one request per line
    for card in cards:
        assert card.barcode is not None
        assert world.sandbox.balance(card.barcode) == Decimal("25.00")
        assert loads_of(world, card.barcode) == 1
    ((sale, delivered, _pdf),) = mailer.sent
    assert sale.email == "buyer@example.com"
    assert sale.number == "1001"
    assert sorted(c.barcode or "" for c in delivered) == sorted(c.barcode or "" for c in cards)
    shown = order_metadata(world)
    assert [(c["line"], c["state"], c["amount"]) for c in shown] == [
        (GIFT_LINE, "delivered", "25.00"),
        (GIFT_LINE, "delivered", "25.00"),
    ]
    for entry, card in zip(shown, cards, strict=True):
        assert card.barcode is not None
        assert entry["code"] == card.masked_barcode
        assert card.barcode not in str(world.saleor.private_metadata)  # never the whole code


async def test_a_redelivered_webhook_issues_nothing_more(world: World, mailer: Mailer) -> None:
    order = paid_order(order_line(GIFT_LINE, Decimal("50.00")))
    assert (await world.saleor.order_fully_paid(world.client, order)).status_code == 200
    await settle(world)
    for _ in range(2):  # Saleor's retry, then staff's "redeliver"
        assert (await world.saleor.order_fully_paid(world.client, order)).status_code == 200
        await settle(world)
    cards = await world.payments.issued_cards(ORDER)
    assert len(cards) == 1
    assert len(world.sandbox.requests_to("generate_giftcards")) == 1
    assert cards[0].barcode is not None
    assert loads_of(world, cards[0].barcode) == 1
    assert len(mailer.sent) == 1


async def test_two_deliveries_racing_each_other_make_one_card(world: World) -> None:
    order = paid_order(order_line(GIFT_LINE, Decimal("50.00"), quantity=3))
    first, second = await asyncio.gather(
        world.saleor.order_fully_paid(world.client, order),
        world.saleor.order_fully_paid(world.client, order),
    )
    assert (first.status_code, second.status_code) == (200, 200)
    await settle(world)
    cards = await world.payments.issued_cards(ORDER)
    assert [c.line_index for c in cards] == [0, 1, 2]
    assert all(c.state is IssuedCardState.DELIVERED for c in cards)
    assert len(world.sandbox.requests_to("generate_giftcards")) == 1
    for card in cards:
        assert card.barcode is not None
        assert loads_of(world, card.barcode) == 1


@pytest.mark.parametrize("status", ["PARTIAL", "NONE", ""])
async def test_an_order_not_fully_charged_sells_nothing(world: World, status: str) -> None:
    order = paid_order(order_line(GIFT_LINE, Decimal("50.00")), charge_status=status)
    assert (await world.saleor.order_fully_paid(world.client, order)).status_code == 200
    await settle(world)
    assert await world.payments.issued_cards(ORDER) == []
    assert selling(world).sales.get(ORDER) is None
    assert world.sandbox.requests_to("generate_giftcards") == []


async def test_an_order_without_giftcard_lines_is_not_a_sale(world: World) -> None:
    order = paid_order(order_line(MUG_LINE, Decimal("9.90"), giftcard=False))
    assert (await world.saleor.order_fully_paid(world.client, order)).status_code == 200
    assert selling(world).sales.get(ORDER) is None
    assert world.sandbox.requests_to("generate_giftcards") == []


async def test_a_sale_whose_issuing_failed_is_finished_by_maintenance(
    world: World, mailer: Mailer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer went to Saleor but issuing did not happen (4WS down, or the process died
    right after answering): the recorded sale is issued by the maintenance pass."""
    gateway = world.state.gateway
    real = gateway.issue_cards
    calls = 0

    async def down(*args: Any, **kwargs: Any) -> list[IssuedCard]:
        nonlocal calls
        calls += 1
        raise FourWSError("4WS is down")

    monkeypatch.setattr(gateway, "issue_cards", down)
    order = paid_order(order_line(GIFT_LINE, Decimal("30.00")))
    assert (await world.saleor.order_fully_paid(world.client, order)).status_code == 200
    assert calls == 1
    sale = selling(world).sales.get(ORDER)
    assert sale is not None
    assert sale.state == RECEIVED
    assert await world.payments.issued_cards(ORDER) == []

    monkeypatch.setattr(gateway, "issue_cards", real)
    await world.state.maintain()
    await settle(world)
    sale = selling(world).sales.get(ORDER)
    assert sale is not None
    assert sale.state == ISSUED
    [card] = await world.payments.issued_cards(ORDER)
    assert card.state is IssuedCardState.DELIVERED
    assert card.barcode is not None
    assert world.sandbox.balance(card.barcode) == Decimal("30.00")
    assert len(mailer.sent) == 1


async def test_a_failed_delivery_is_offered_again_with_the_same_codes(
    world: World, mailer: Mailer
) -> None:
    mailer.failures = 1
    order = paid_order(order_line(GIFT_LINE, Decimal("20.00")))
    assert (await world.saleor.order_fully_paid(world.client, order)).status_code == 200
    await settle(world)
    [card] = await world.payments.issued_cards(ORDER)
    assert card.state is not IssuedCardState.DELIVERED
    assert mailer.sent == []
    world.clock.advance(3600)  # past the delivery retry
    await world.state.maintain()
    await settle(world)
    [card] = await world.payments.issued_cards(ORDER)
    assert card.state is IssuedCardState.DELIVERED
    ((_sale, delivered, _pdf),) = mailer.sent
    assert [c.barcode for c in delivered] == [card.barcode]
    assert card.barcode is not None
    assert loads_of(world, card.barcode) == 1
    assert order_metadata(world)[0]["state"] == "delivered"


async def test_metadata_refused_by_saleor_is_written_on_a_later_flush(world: World) -> None:
    world.saleor.metadata_failures = 100
    order = paid_order(order_line(GIFT_LINE, Decimal("20.00")))
    assert (await world.saleor.order_fully_paid(world.client, order)).status_code == 200
    await settle(world)
    assert ORDER not in world.saleor.private_metadata
    sale = selling(world).sales.get(ORDER)
    assert sale is not None
    assert sale.metadata_due
    world.saleor.metadata_failures = 0
    await world.state.flush_reports()
    assert order_metadata(world)[0]["state"] == "delivered"
    sale = selling(world).sales.get(ORDER)
    assert sale is not None
    assert not sale.metadata_due


async def test_a_line_the_ledger_refuses_is_not_asked_again(world: World) -> None:
    """An amount the card cannot hold (more decimals than the currency has) is refused by
    the ledger: the sale is marked refused for staff, and maintenance does not retry it."""
    order = paid_order(order_line(GIFT_LINE, Decimal("20.005")))
    assert (await world.saleor.order_fully_paid(world.client, order)).status_code == 200
    sale = selling(world).sales.get(ORDER)
    assert sale is not None
    assert sale.state == REFUSED
    await world.state.maintain()
    assert world.sandbox.requests_to("generate_giftcards") == []
    assert await world.payments.issued_cards(ORDER) == []


async def test_a_malformed_or_unsigned_webhook_records_nothing(world: World) -> None:
    bad = paid_order(order_line(GIFT_LINE, Decimal("20.00")))
    bad["lines"][0]["quantity"] = "two"
    response = await world.saleor.order_fully_paid(world.client, bad)
    assert response.status_code == 400
    good = paid_order(order_line(GIFT_LINE, Decimal("20.00")))
    forged = await world.saleor.order_fully_paid(world.client, good, signature="x.y.z")
    assert forged.status_code == 401
    assert selling(world).sales.get(ORDER) is None
    assert world.sandbox.requests_to("generate_giftcards") == []


async def test_a_discounted_line_sells_a_card_of_its_face_value(world: World) -> None:
    """``undiscountedUnitPrice`` is what the card is worth; the voucher was the shop's gift."""
    order = paid_order(order_line(GIFT_LINE, Decimal("40.00")))
    assert (await world.saleor.order_fully_paid(world.client, order)).status_code == 200
    await settle(world)
    [card] = await world.payments.issued_cards(ORDER)
    assert card.amount == Decimal("40.00")


def test_selling_is_opt_in_in_the_manifest(tmp_path: Any) -> None:
    plain = build_manifest(make_config(tmp_path))
    assert plain["permissions"] == ["HANDLE_PAYMENTS"]
    assert all("ORDER_FULLY_PAID" not in w["asyncEvents"] for w in plain["webhooks"])
    selling_manifest = build_manifest(make_config(tmp_path, sell_giftcards=True))
    assert selling_manifest["permissions"] == ["HANDLE_PAYMENTS", "MANAGE_ORDERS"]
    [hook] = [w for w in selling_manifest["webhooks"] if "ORDER_FULLY_PAID" in w["asyncEvents"]]
    assert hook["targetUrl"] == "http://app.test/api/webhooks/order-fully-paid"
    assert "undiscountedUnitPrice" in hook["query"]
