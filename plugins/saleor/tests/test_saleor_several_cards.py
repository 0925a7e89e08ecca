"""Several gift cards on one Saleor checkout (issue 20, item 3).

Saleor pays a checkout with any number of transactions: each gift card the shopper adds is
its own ``transactionInitialize`` and so its own ``TransactionItem``, next to whatever else
pays the rest (here a staff ``transactionCreate`` with ``amountCharged``). The fake sums
them as Saleor does (``FakeCheckout``); every test compares what Saleor would show per
transaction with each sandbox card's books: a card is debited (and credited) exactly what
its own transaction says, nothing crosses cards.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from fake_saleor import action_payload, session_payload
from fourws_pay_saleor.payloads import WebhookEvent
from saleor_world import World

CHARGE = WebhookEvent.TRANSACTION_CHARGE_REQUESTED
REFUND = WebhookEvent.TRANSACTION_REFUND_REQUESTED

CHECKOUT = "Q2hlY2tvdXQ6MjA="
TOTAL = Decimal("100.00")
CARD_A = "2000000020001"
CARD_B = "2000000020002"


def cards(world: World, a: str = "30.00", b: str = "45.00") -> None:
    world.sandbox.add_giftcard(CARD_A, Decimal(a))
    world.sandbox.add_giftcard(CARD_B, Decimal(b))


def books(world: World, barcode: str) -> tuple[Decimal, Decimal]:
    """(balance, Σ consumed) of a card in the sandbox's books."""
    return world.sandbox.balance(barcode), world.sandbox.total_consumed(barcode)


async def usable(world: World, card: str, amount: Decimal | None = None) -> Decimal:
    """paymentGatewayInitialize with the card; Saleor's amount is what is still to pay."""
    world.saleor.checkout(CHECKOUT, TOTAL)
    answer = await world.saleor.gateway_initialize(world.client, CHECKOUT, card, amount)
    data = answer.json()["data"]
    assert data["ok"] is True, data
    return Decimal(str(data["usableAmount"]))


async def start(
    world: World, tx: str, card: str, amount: Decimal, kind: str = "CHARGE"
) -> dict[str, object]:
    """transactionInitialize of one card for part of the checkout (its own idempotency key)."""
    response = await world.saleor.initialize(
        world.client,
        session_payload(
            tx,
            amount,
            kind,
            card,
            idempotency_key=f"idem-{tx}",
            checkout_total=TOTAL,
            checkout_id=CHECKOUT,
        ),
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def request(world: World, event: WebhookEvent, tx: str, amount: str, at: str) -> None:
    kind = "CHARGE" if event is CHARGE else "REFUND"
    [response] = await world.saleor.request_action(
        world.client, event, action_payload(tx, Decimal(amount), kind, issued_at=at)
    )
    assert response.status_code == 200, response.text


async def settle(world: World, passes: int = 3) -> None:
    for _ in range(passes):
        await world.settle()
        await world.state.maintain()
        await world.settle()
        await world.flush()


def booked(world: World, tx: str) -> tuple[Decimal, Decimal, Decimal]:
    """(authorized, charged, refunded) of one transaction, as Saleor derives them."""
    values = world.saleor.transaction(tx).amounts()
    return values["authorized"], values["charged"], values["refunded"]


async def two_cards_and_the_rest(world: World) -> str:
    """Card A pays 30, card B 45, another method the last 25; returns the staff tx."""
    cards(world)
    assert await usable(world, CARD_A) == Decimal("30.00")
    assert (await start(world, "tx-a", CARD_A, Decimal("30.00")))["result"] == "CHARGE_REQUEST"
    await settle(world)
    assert world.saleor.checkout(CHECKOUT).amount_to_pay(world.saleor.transactions) == 70
    assert await usable(world, CARD_B) == Decimal("45.00")
    assert (await start(world, "tx-b", CARD_B, Decimal("45.00")))["result"] == "CHARGE_REQUEST"
    await settle(world)
    assert world.saleor.checkout_statuses(CHECKOUT) == ("PARTIAL", "PARTIAL")
    return world.saleor.transaction_create(CHECKOUT, Decimal("25.00"), psp="cash-1")


async def test_two_cards_and_another_method_complete_the_order(world: World) -> None:
    staff = await two_cards_and_the_rest(world)
    assert world.saleor.checkout_statuses(CHECKOUT) == ("FULL", "FULL")
    order = world.saleor.complete(CHECKOUT)
    assert order.statuses(world.saleor.transactions) == ("FULL", "FULL")
    assert booked(world, "tx-a") == (Decimal(0), Decimal("30.00"), Decimal(0))
    assert booked(world, "tx-b") == (Decimal(0), Decimal("45.00"), Decimal(0))
    assert booked(world, staff) == (Decimal(0), Decimal("25.00"), Decimal(0))
    assert books(world, CARD_A) == (Decimal(0), Decimal("30.00"))
    assert books(world, CARD_B) == (Decimal(0), Decimal("45.00"))
    # Each card was debited once, by its own transaction.
    assert [r.amount for r in world.sandbox.applied_operations(CARD_A)] == [Decimal("-30.00")]
    assert [r.amount for r in world.sandbox.applied_operations(CARD_B)] == [Decimal("-45.00")]


async def test_two_authorized_cards_are_charged_after_the_order_is_placed(world: World) -> None:
    cards(world)
    assert (await start(world, "tx-a", CARD_A, Decimal("30.00"), "AUTHORIZATION"))[
        "result"
    ] == "AUTHORIZATION_SUCCESS"
    assert (await start(world, "tx-b", CARD_B, Decimal("45.00"), "AUTHORIZATION"))[
        "result"
    ] == "AUTHORIZATION_SUCCESS"
    world.saleor.transaction_create(CHECKOUT, Decimal("25.00"))
    assert world.saleor.checkout_statuses(CHECKOUT) == ("FULL", "PARTIAL")
    order = world.saleor.complete(CHECKOUT)
    # Both cards charged at once, as staff charging the order's transactions would.
    await asyncio.gather(
        request(world, CHARGE, "tx-a", "30.00", "2026-01-01T12:01:00Z"),
        request(world, CHARGE, "tx-b", "45.00", "2026-01-01T12:01:00Z"),
    )
    await settle(world)
    assert order.statuses(world.saleor.transactions) == ("FULL", "FULL")
    assert booked(world, "tx-a") == (Decimal(0), Decimal("30.00"), Decimal(0))
    assert booked(world, "tx-b") == (Decimal(0), Decimal("45.00"), Decimal(0))
    assert books(world, CARD_A) == (Decimal(0), Decimal("30.00"))
    assert books(world, CARD_B) == (Decimal(0), Decimal("45.00"))


async def test_each_refund_lands_on_its_own_card(world: World) -> None:
    await two_cards_and_the_rest(world)
    order = world.saleor.complete(CHECKOUT)
    await request(world, REFUND, "tx-a", "10.00", "2026-01-01T12:10:00Z")
    await request(world, REFUND, "tx-b", "45.00", "2026-01-01T12:10:01Z")
    await settle(world)
    assert booked(world, "tx-a") == (Decimal(0), Decimal("20.00"), Decimal("10.00"))
    assert booked(world, "tx-b") == (Decimal(0), Decimal(0), Decimal("45.00"))
    assert books(world, CARD_A) == (Decimal("10.00"), Decimal("30.00"))
    assert books(world, CARD_B) == (Decimal("45.00"), Decimal("45.00"))
    assert order.statuses(world.saleor.transactions)[1] == "PARTIAL"
    # A refund larger than what its own transaction charged is refused, never taken
    # from the other card's charge.
    await request(world, REFUND, "tx-a", "25.00", "2026-01-01T12:11:00Z")
    await settle(world)
    assert booked(world, "tx-a") == (Decimal(0), Decimal("20.00"), Decimal("10.00"))
    assert books(world, CARD_A) == (Decimal("10.00"), Decimal("30.00"))
    assert books(world, CARD_B) == (Decimal("45.00"), Decimal("45.00"))


async def test_one_card_in_two_transactions_takes_its_turn(world: World) -> None:
    """The same barcode added twice: the second capture waits for the first (card queue)."""
    world.sandbox.add_giftcard(CARD_A, Decimal("80.00"))
    first = await start(world, "tx-1", CARD_A, Decimal("40.00"))
    # No settlement in between: the first capture is still in flight at 4WS, and the card
    # offers only what that capture leaves.
    assert await usable(world, CARD_A) == Decimal("40.00")
    second = await start(world, "tx-2", CARD_A, Decimal("35.00"))
    assert first["result"] == "CHARGE_REQUEST"
    assert second["result"] == "CHARGE_REQUEST", second  # waits its turn, not refused
    world.saleor.transaction_create(CHECKOUT, Decimal("25.00"))
    # Pending charges count as covering the checkout: the order is placed before they
    # settle, and the App's reports then complete the order's payment.
    assert world.saleor.checkout_statuses(CHECKOUT) == ("FULL", "FULL")
    order = world.saleor.complete(CHECKOUT)
    assert order.statuses(world.saleor.transactions) == ("PARTIAL", "PARTIAL")
    await settle(world)
    assert order.statuses(world.saleor.transactions) == ("FULL", "FULL")
    assert booked(world, "tx-1") == (Decimal(0), Decimal("40.00"), Decimal(0))
    assert booked(world, "tx-2") == (Decimal(0), Decimal("35.00"), Decimal(0))
    assert books(world, CARD_A) == (Decimal("5.00"), Decimal("75.00"))

    await request(world, REFUND, "tx-1", "15.00", "2026-01-01T12:10:00Z")
    await request(world, REFUND, "tx-2", "35.00", "2026-01-01T12:10:01Z")
    await settle(world)
    assert booked(world, "tx-1") == (Decimal(0), Decimal("25.00"), Decimal("15.00"))
    assert booked(world, "tx-2") == (Decimal(0), Decimal(0), Decimal("35.00"))
    assert books(world, CARD_A) == (Decimal("55.00"), Decimal("75.00"))


async def test_two_cards_charged_and_refunded_at_once(world: World) -> None:
    cards(world)
    answers = await asyncio.gather(
        start(world, "tx-a", CARD_A, Decimal("30.00")),
        start(world, "tx-b", CARD_B, Decimal("45.00")),
    )
    assert [a["result"] for a in answers] == ["CHARGE_REQUEST", "CHARGE_REQUEST"]
    await settle(world)
    world.saleor.transaction_create(CHECKOUT, Decimal("25.00"))
    order = world.saleor.complete(CHECKOUT)
    assert order.statuses(world.saleor.transactions) == ("FULL", "FULL")
    assert books(world, CARD_A) == (Decimal(0), Decimal("30.00"))
    assert books(world, CARD_B) == (Decimal(0), Decimal("45.00"))

    await asyncio.gather(
        request(world, REFUND, "tx-a", "12.00", "2026-01-01T12:10:00Z"),
        request(world, REFUND, "tx-b", "45.00", "2026-01-01T12:10:00Z"),
    )
    await settle(world)
    assert booked(world, "tx-a") == (Decimal(0), Decimal("18.00"), Decimal("12.00"))
    assert booked(world, "tx-b") == (Decimal(0), Decimal(0), Decimal("45.00"))
    assert books(world, CARD_A) == (Decimal("12.00"), Decimal("30.00"))
    assert books(world, CARD_B) == (Decimal("45.00"), Decimal("45.00"))


async def test_the_same_card_charged_twice_at_once(world: World) -> None:
    world.sandbox.add_giftcard(CARD_A, Decimal("75.00"))
    answers = await asyncio.gather(
        start(world, "tx-1", CARD_A, Decimal("40.00")),
        start(world, "tx-2", CARD_A, Decimal("35.00")),
    )
    assert [a["result"] for a in answers] == ["CHARGE_REQUEST", "CHARGE_REQUEST"], answers
    await settle(world)
    assert booked(world, "tx-1") == (Decimal(0), Decimal("40.00"), Decimal(0))
    assert booked(world, "tx-2") == (Decimal(0), Decimal("35.00"), Decimal(0))
    assert books(world, CARD_A) == (Decimal(0), Decimal("75.00"))


async def test_a_lost_refund_answer_is_not_filed_under_the_other_cards_refund(
    world: World,
) -> None:
    """Saleor's empty-body retry says neither transaction nor request. Staff refund card A,
    the answer is lost on the way back, and before Saleor retries (~10 s) they refund card
    B. Answering the retry with the newest refund answer (B's) would make Saleor file A's
    refund request under B's reference on A's transaction, where nothing ever closes it:
    A's refund would stay pending and its charged amount be taken twice."""
    await two_cards_and_the_rest(world)
    world.saleor.complete(CHECKOUT)

    async def refund_b() -> None:
        await request(world, REFUND, "tx-b", "45.00", "2026-01-01T12:10:05Z")

    responses = await world.saleor.request_action(
        world.client,
        REFUND,
        action_payload("tx-a", Decimal("10.00"), "REFUND", issued_at="2026-01-01T12:10:00Z"),
        lose_answers=1,
        before_retry=refund_b,
    )
    assert [r.status_code for r in responses] == [502, 200]
    await settle(world)
    values = world.saleor.transaction("tx-a").amounts()
    assert (values["charged"], values["refunded"], values["refund_pending"]) == (
        Decimal("20.00"),
        Decimal("10.00"),
        Decimal(0),
    ), values
    assert booked(world, "tx-b") == (Decimal(0), Decimal(0), Decimal("45.00"))
    psp_b = {e.psp for e in world.saleor.transaction("tx-b").events if e.type == "REFUND_REQUEST"}
    assert not [e for e in world.saleor.transaction("tx-a").events if e.psp in psp_b]
    # And staff see no failed refund on A.
    assert "REFUND_FAILURE" not in [e.type for e in world.saleor.transaction("tx-a").events]
    assert books(world, CARD_A) == (Decimal("10.00"), Decimal("30.00"))
    assert books(world, CARD_B) == (Decimal("45.00"), Decimal("45.00"))


async def test_when_saleor_cannot_say_which_refund_was_lost_the_retry_gets_an_error(
    world: World,
) -> None:
    """Saleor's events cannot be read during the retry: an error answer (a REFUND_FAILURE
    that Saleor does not count) is better than filing A's request under B's reference."""
    await two_cards_and_the_rest(world)

    async def refund_b_then_saleor_fails() -> None:
        await request(world, REFUND, "tx-b", "45.00", "2026-01-01T12:10:05Z")
        world.saleor.graphql_failures.append(503)  # the App's look at the events

    await world.saleor.request_action(
        world.client,
        REFUND,
        action_payload("tx-a", Decimal("10.00"), "REFUND", issued_at="2026-01-01T12:10:00Z"),
        lose_answers=1,
        before_retry=refund_b_then_saleor_fails,
    )
    await settle(world)
    values = world.saleor.transaction("tx-a").amounts()
    assert (values["charged"], values["refunded"], values["refund_pending"]) == (
        Decimal("20.00"),
        Decimal("10.00"),
        Decimal(0),
    ), values
    failures = [e for e in world.saleor.transaction("tx-a").events if e.type == "REFUND_FAILURE"]
    assert [e.include for e in failures] == [False]  # shown, not counted
    assert booked(world, "tx-b") == (Decimal(0), Decimal(0), Decimal("45.00"))
    assert books(world, CARD_A) == (Decimal("10.00"), Decimal("30.00"))
