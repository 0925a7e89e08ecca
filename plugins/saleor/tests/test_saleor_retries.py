"""Saleor's retries come without a body; the App never needs them (issue 13, items 1 and 5).

The fake Saleor retries exactly as ``handle_transaction_request_task`` does -- an answer
>= 500 is re-sent with an empty body -- and books answers into its own transaction ledger
(``SaleorTransaction.amounts``), so these tests check what a merchant would see in Saleor.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from fake_saleor import action_payload, gateway_payload, session_payload
from fourws_pay_saleor.payloads import WebhookEvent
from saleor_world import CARD, CARD_BALANCE, World

INIT = WebhookEvent.TRANSACTION_INITIALIZE_SESSION
CHARGE = WebhookEvent.TRANSACTION_CHARGE_REQUESTED
REFUND = WebhookEvent.TRANSACTION_REFUND_REQUESTED
CANCEL = WebhookEvent.TRANSACTION_CANCELATION_REQUESTED


async def charged_order(world: World, tx: str, amount: str) -> None:
    response = await world.saleor.initialize(
        world.client, session_payload(tx, Decimal(amount), "CHARGE", CARD)
    )
    assert response.json()["result"] == "CHARGE_REQUEST"
    await world.settle()
    await world.flush()


async def test_second_refund_while_the_first_is_in_flight_is_pending_not_failed(
    world: World,
) -> None:
    """The reported defect: 503 -> empty retry -> 400 -> Saleor booked REFUND_FAILURE."""
    await charged_order(world, "tx-r1", "50.00")
    first = await world.saleor.request_action(
        world.client, REFUND, action_payload("tx-r1", Decimal("20.00"), "REFUND")
    )
    # The first refund is posted and waits for 4WS: the card is busy now.
    second = await world.saleor.request_action(
        world.client,
        REFUND,
        action_payload("tx-r1", Decimal("30.00"), "REFUND", issued_at="2026-01-01T12:06:00Z"),
    )
    for responses in (first, second):
        assert [r.status_code for r in responses] == [200]  # no retry was ever needed
        assert set(responses[0].json()) == {"pspReference"}
    assert all(body != b"" for _, body, _ in world.saleor.deliveries)
    amounts = world.saleor.transaction("tx-r1").amounts()
    assert amounts["refund_pending"] == Decimal("50.00")

    await world.settle()  # the first refund settles; the card is free again
    await world.state.maintain()  # the runner posts the second one
    await world.settle()
    await world.flush()
    amounts = world.saleor.transaction("tx-r1").amounts()
    assert (amounts["refunded"], amounts["refund_pending"], amounts["charged"]) == (
        Decimal("50.00"),
        Decimal("0"),
        Decimal("0"),
    )
    assert world.sandbox.balance(CARD) == CARD_BALANCE
    events = world.saleor.transaction("tx-r1").events
    assert not [e for e in events if e.type.endswith("_FAILURE")]


async def test_an_answer_lost_on_the_way_back_still_reaches_saleor(world: World) -> None:
    """A proxy 502 after the App canceled: Saleor retries with an empty body; the App
    answers it with the lost answer's bare reference and re-sends the outcome as a report."""
    auth = await world.saleor.initialize(
        world.client, session_payload("tx-r2", Decimal("40.00"), "AUTHORIZATION", CARD)
    )
    assert auth.json()["result"] == "AUTHORIZATION_SUCCESS"
    responses = await world.saleor.request_action(
        world.client, CANCEL, action_payload("tx-r2", Decimal("40.00"), "CANCEL"), lose_answers=1
    )
    assert [r.status_code for r in responses] == [502, 200]
    assert [body for _, body, _ in world.saleor.deliveries] == [b"<payload>", b""]
    retry = responses[1].json()
    assert set(retry) == {"pspReference"}
    await world.flush()
    amounts = world.saleor.transaction("tx-r2").amounts()
    assert (amounts["authorized"], amounts["canceled"]) == (Decimal("0"), Decimal("40.00"))
    events = world.saleor.transaction("tx-r2").events
    assert not [e for e in events if e.type.endswith("_FAILURE")], events
    [reservation] = world.payments.store.list_reservations(order_ref="tx-r2")
    assert reservation.state.value == "released"


async def test_a_lost_refund_answer_leaves_no_refund_failure_in_saleor(world: World) -> None:
    """Issue 17 item 5: the empty-body retry of a refund whose answer was lost is answered
    with that answer's bare ``pspReference``, which Saleor books as no event at all (an
    error answer would be booked as a REFUND_FAILURE beside the App's REFUND_SUCCESS)."""
    await charged_order(world, "tx-r5", "50.00")
    responses = await world.saleor.request_action(
        world.client, REFUND, action_payload("tx-r5", Decimal("20.00"), "REFUND"), lose_answers=1
    )
    assert [r.status_code for r in responses] == [502, 200]
    assert [body for _, body, _ in world.saleor.deliveries][-2:] == [b"<payload>", b""]
    retry = responses[1].json()
    assert set(retry) == {"pspReference"}
    await world.settle()
    await world.state.maintain()
    await world.settle()
    await world.flush()
    tx = world.saleor.transaction("tx-r5")
    amounts = tx.amounts()
    assert (amounts["refunded"], amounts["refund_pending"], amounts["charged"]) == (
        Decimal("20.00"),
        Decimal("0"),
        Decimal("30.00"),
    )
    assert not [e for e in tx.events if e.type.endswith("_FAILURE")], tx.events
    assert [e.psp for e in tx.events if e.type == "REFUND_SUCCESS"] == [retry["pspReference"]]


async def test_empty_bodies_are_checked_like_any_other_request(world: World) -> None:
    signed = await world.saleor.send(world.client, CHARGE, {}, body=b"")
    assert signed.status_code == 200
    assert signed.json()["error"]["message"].startswith("Empty webhook body")
    garbage = await world.saleor.send(world.client, REFUND, {}, body=b"\x00not json")
    assert garbage.status_code == 200
    unsigned = await world.saleor.send(world.client, CHARGE, {}, body=b"", signature="x.y.z")
    assert unsigned.status_code == 401
    session = await world.saleor.send(world.client, INIT, {}, body=b"")
    assert session.status_code == 400  # sessions are never retried by Saleor
    assert world.payments.store.list_reservations() == []


class Gate:
    """Holds one gateway method until the test opens it (deterministic, no sleeps)."""

    def __init__(self, world: World, name: str) -> None:
        self.opened = asyncio.Event()
        self.entered = asyncio.Event()
        gateway = world.state.handlers.gateway
        real = getattr(gateway, name)

        async def held(*args: Any, **kwargs: Any) -> Any:
            self.entered.set()
            await self.opened.wait()
            return await real(*args, **kwargs)

        setattr(gateway, name, held)


def tight_budget(world: World) -> None:
    handlers = world.state.handlers
    handlers.config = handlers.config.model_copy(update={"sync_budget": 0.05})


async def test_slow_authorization_is_answered_pending_and_reported_when_done(
    world: World,
) -> None:
    tight_budget(world)
    gate = Gate(world, "reserve")
    response = await world.saleor.initialize(
        world.client, session_payload("tx-r3", Decimal("25.00"), "AUTHORIZATION", CARD)
    )
    body = response.json()
    assert body["result"] == "AUTHORIZATION_REQUEST"
    assert gate.entered.is_set()
    assert world.saleor.transaction("tx-r3").amounts()["authorize_pending"] == Decimal("25.00")
    gate.opened.set()
    await world.state.handlers.drain()
    await world.flush()
    [report] = world.saleor.reports_of("tx-r3")
    assert (report["type"], report["pspReference"]) == (
        "AUTHORIZATION_SUCCESS",
        body["pspReference"],
    )
    amounts = world.saleor.transaction("tx-r3").amounts()
    assert (amounts["authorized"], amounts["authorize_pending"]) == (Decimal("25.00"), Decimal("0"))


async def test_slow_charge_request_is_answered_pending_and_reported_when_settled(
    world: World,
) -> None:
    await world.saleor.initialize(
        world.client, session_payload("tx-r4", Decimal("30.00"), "AUTHORIZATION", CARD)
    )
    tight_budget(world)
    gate = Gate(world, "capture")
    [response] = await world.saleor.request_action(
        world.client, CHARGE, action_payload("tx-r4", Decimal("30.00"), "CHARGE")
    )
    assert set(response.json()) == {"pspReference"}
    gate.opened.set()
    await world.state.handlers.drain()
    await world.settle()
    await world.flush()
    amounts = world.saleor.transaction("tx-r4").amounts()
    assert (amounts["charged"], amounts["charge_pending"], amounts["authorized"]) == (
        Decimal("30.00"),
        Decimal("0"),
        Decimal("0"),
    )
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("30.00")


async def test_a_late_decline_is_reported_under_the_pending_reference(world: World) -> None:
    await world.saleor.initialize(
        world.client, session_payload("tx-r5", Decimal("30.00"), "AUTHORIZATION", CARD)
    )
    world.sandbox.spend_in_shop(CARD, Decimal("90.00"))  # the hold is the App's only
    tight_budget(world)
    gate = Gate(world, "capture")
    [response] = await world.saleor.request_action(
        world.client, CHARGE, action_payload("tx-r5", Decimal("30.00"), "CHARGE")
    )
    psp = response.json()["pspReference"]
    assert world.saleor.transaction("tx-r5").amounts()["charge_pending"] == Decimal("30.00")
    gate.opened.set()
    await world.state.handlers.drain()
    await world.flush()
    reports = [(r["type"], r["pspReference"]) for r in world.saleor.reports_of("tx-r5")]
    assert reports == [("CHARGE_FAILURE", psp)]
    amounts = world.saleor.transaction("tx-r5").amounts()
    assert (amounts["charge_pending"], amounts["charged"]) == (Decimal("0"), Decimal("0"))
    assert world.sandbox.balance(CARD) == Decimal("10.00")


async def test_a_crash_after_the_refund_post_adopts_it_instead_of_refunding_twice(
    world: World, monkeypatch: Any
) -> None:
    await charged_order(world, "tx-r6", "40.00")
    real_link = world.store.link_operation
    crashed: list[bool] = []

    def link(record: Any) -> None:
        if record.kind == "refund" and not crashed:
            crashed.append(True)
            raise RuntimeError("process died after the POST")
        real_link(record)

    monkeypatch.setattr(world.store, "link_operation", link)
    [response] = await world.saleor.request_action(
        world.client, REFUND, action_payload("tx-r6", Decimal("15.00"), "REFUND")
    )
    assert response.status_code == 200  # pending, not a 5xx
    assert crashed
    await world.state.maintain()  # the runner finds the posted refund and adopts it
    await world.settle()
    await world.flush()
    refunds = [op for op in await world.payments.list_operations() if op.kind.value == "refund"]
    assert [op.amount for op in refunds] == [Decimal("15.00")]
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("25.00")
    assert world.saleor.transaction("tx-r6").amounts()["refunded"] == Decimal("15.00")


async def test_a_request_arriving_while_saleors_keys_are_unreachable_is_kept_not_503(
    world: World,
) -> None:
    """A 503 would come back without its body; the request is kept, unverified, instead."""
    await world.saleor.initialize(
        world.client, session_payload("tx-r7", Decimal("30.00"), "AUTHORIZATION", CARD)
    )
    world.saleor.jwks_down = True
    world.state.verifier.forget(world.saleor_api_url)
    [response] = await world.saleor.request_action(
        world.client, CHARGE, action_payload("tx-r7", Decimal("30.00"), "CHARGE")
    )
    assert response.status_code == 200
    psp = response.json()["pspReference"]
    forged = await world.saleor.send(
        world.client,
        CHARGE,
        action_payload("tx-r7", Decimal("1.00"), "CHARGE"),
        signature=world.saleor.sign(b"something else"),
    )
    assert forged.status_code == 200  # cannot be told apart yet; nothing is done with it
    await world.state.maintain()
    assert await world.payments.list_operations() == []  # nothing acted on unverified
    world.saleor.jwks_down = False
    await world.state.maintain()  # verified now: the real request runs, the forged is dropped
    await world.settle()
    await world.flush()
    assert world.store.unverified() == []
    [capture] = await world.payments.list_operations()
    assert capture.amount == Decimal("30.00")
    reports = [(r["type"], r["pspReference"]) for r in world.saleor.reports_of("tx-r7")]
    assert ("CHARGE_SUCCESS", psp) in reports
    amounts = world.saleor.transaction("tx-r7").amounts()
    assert (amounts["charged"], amounts["charge_pending"]) == (Decimal("30.00"), Decimal("0"))


async def test_a_slow_balance_check_is_given_up_within_the_budget(world: World) -> None:
    tight_budget(world)
    gate = Gate(world, "check")
    response = await world.saleor.send(
        world.client,
        WebhookEvent.PAYMENT_GATEWAY_INITIALIZE_SESSION,
        gateway_payload(Decimal("10.00"), CARD),
    )
    assert gate.entered.is_set()
    data = response.json()["data"]
    assert data["ok"] is False
    assert "try again" in data["message"]
