"""Full payment flows: fake Saleor -> App -> real payments -> sandbox 4WS -> callback -> report."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fake_saleor import action_payload, gateway_payload, session_payload
from fourws_pay_saleor.jsonutil import loads
from fourws_pay_saleor.payloads import WebhookEvent
from saleor_schema import assert_saleor_accepts
from saleor_world import CARD, CARD_BALANCE, World

from fourws_pay.payments import OperationState, ReservationState

INIT = WebhookEvent.TRANSACTION_INITIALIZE_SESSION
PROCESS = WebhookEvent.TRANSACTION_PROCESS_SESSION
CHARGE = WebhookEvent.TRANSACTION_CHARGE_REQUESTED
REFUND = WebhookEvent.TRANSACTION_REFUND_REQUESTED
CANCEL = WebhookEvent.TRANSACTION_CANCELATION_REQUESTED
GATEWAY = WebhookEvent.PAYMENT_GATEWAY_INITIALIZE_SESSION


async def call(world: World, event: WebhookEvent, payload: dict[str, Any]) -> dict[str, Any]:
    response = await world.saleor.send(world.client, event, payload)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = loads(response.content)
    assert_saleor_accepts(event, body)
    return body


async def authorize(world: World, tx: str, amount: str, key: str = "idem-1") -> dict[str, Any]:
    return await call(
        world,
        INIT,
        session_payload(tx, Decimal(amount), "AUTHORIZATION", CARD, idempotency_key=key),
    )


async def test_authorize_then_charge_settles_and_is_reported(world: World) -> None:
    body = await authorize(world, "VHJhbnNhY3Rpb246MQ==", "30.00")
    assert body["result"] == "AUTHORIZATION_SUCCESS"
    assert body["amount"] == Decimal("30.00")
    assert body["actions"] == ["CHARGE", "CANCEL"]
    assert body["paymentMethodDetails"] == {
        "type": "GIFT_CARD",
        "name": "4WS gift card",
        "brand": "4WS",
        "lastChars": CARD[-4:],
    }
    reservation = world.reservation_for(body["pspReference"])
    assert reservation.state is ReservationState.ACTIVE
    assert reservation.order_ref == "VHJhbnNhY3Rpb246MQ=="
    assert world.sandbox.balance(CARD) == CARD_BALANCE  # a hold moves no money

    charged = await call(
        world,
        CHARGE,
        action_payload(
            "VHJhbnNhY3Rpb246MQ==", Decimal("30.00"), "CHARGE", psp_reference=body["pspReference"]
        ),
    )
    assert set(charged) == {"pspReference"}  # asynchronous: the outcome comes later
    operation = world.operation_for(charged["pspReference"])
    assert operation.state is OperationState.ENQUEUED
    assert world.saleor.reports == []

    await world.settle()

    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("30.00")
    reports = world.saleor.reports_of("VHJhbnNhY3Rpb246MQ==")
    assert len(reports) == 1
    report = reports[0]
    assert report["type"] == "CHARGE_SUCCESS"
    assert report["pspReference"] == charged["pspReference"]
    assert report["amount"] == Decimal("30.00")
    assert report["availableActions"] == ["REFUND"]
    assert world.saleor.reports[0].token == "app-token-0123456789abcdef"


async def test_charge_directly_requests_then_reports_success(world: World) -> None:
    body = await call(world, INIT, session_payload("tx-charge", Decimal("12.50"), "CHARGE", CARD))
    assert body["result"] == "CHARGE_REQUEST"
    assert body["amount"] == Decimal("12.50")
    operation = world.operation_for(body["pspReference"])
    assert operation.amount == Decimal("12.50")
    assert world.saleor.reports == []

    await world.settle()

    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("12.50")
    [report] = world.saleor.reports_of("tx-charge")
    assert (report["type"], report["pspReference"], report["amount"]) == (
        "CHARGE_SUCCESS",
        body["pspReference"],
        Decimal("12.50"),
    )

    # The storefront polls with transactionProcess: it now sees the settled charge.
    processed = await call(
        world,
        PROCESS,
        session_payload("tx-charge", Decimal("12.50"), "CHARGE", CARD, idempotency_key=None),
    )
    assert processed["result"] == "CHARGE_SUCCESS"
    assert processed["pspReference"] == body["pspReference"]


async def test_cancel_releases_the_hold(world: World) -> None:
    body = await authorize(world, "tx-cancel", "40.00")
    canceled = await call(world, CANCEL, action_payload("tx-cancel", Decimal("40.00"), "CANCEL"))
    assert canceled["result"] == "CANCEL_SUCCESS"
    assert canceled["amount"] == Decimal("40.00")
    reservation = world.reservation_for(body["pspReference"])
    assert reservation.state is ReservationState.RELEASED

    # The whole balance can be held again, and the canceled transaction cannot be charged.
    again = await authorize(world, "tx-after", "100.00", key="idem-2")
    assert again["result"] == "AUTHORIZATION_SUCCESS"
    charge = await call(world, CHARGE, action_payload("tx-cancel", Decimal("40.00"), "CHARGE"))
    assert charge["result"] == "CHARGE_FAILURE"
    assert world.sandbox.balance(CARD) == CARD_BALANCE


async def test_partial_then_full_refund(world: World) -> None:
    body = await call(world, INIT, session_payload("tx-refund", Decimal("50.00"), "CHARGE", CARD))
    await world.settle()
    assert world.sandbox.balance(CARD) == Decimal("50.00")

    first = await call(
        world,
        REFUND,
        action_payload("tx-refund", Decimal("20.00"), "REFUND", issued_at="2026-01-01T13:00:00Z"),
    )
    assert set(first) == {"pspReference"}
    await world.settle()
    assert world.sandbox.balance(CARD) == Decimal("70.00")

    second = await call(
        world,
        REFUND,
        action_payload("tx-refund", Decimal("30.00"), "REFUND", issued_at="2026-01-01T13:01:00Z"),
    )
    assert second["pspReference"] != first["pspReference"]
    await world.settle()
    assert world.sandbox.balance(CARD) == CARD_BALANCE

    reports = [
        (r["type"], r["pspReference"], r["amount"]) for r in world.saleor.reports_of("tx-refund")
    ]
    assert reports == [
        ("CHARGE_SUCCESS", body["pspReference"], Decimal("50.00")),
        ("REFUND_SUCCESS", first["pspReference"], Decimal("20.00")),
        ("REFUND_SUCCESS", second["pspReference"], Decimal("30.00")),
    ]

    # Nothing is left to refund: a decline, not an error.
    more = await call(
        world,
        REFUND,
        action_payload("tx-refund", Decimal("1.00"), "REFUND", issued_at="2026-01-01T13:02:00Z"),
    )
    assert more["result"] == "REFUND_FAILURE"
    # Saleor needs a pspReference even on an action's failure (parse_transaction_action_data).
    assert more["pspReference"] not in (first["pspReference"], second["pspReference"])
    assert world.sandbox.balance(CARD) == CARD_BALANCE


async def test_refund_before_settlement_is_pending_and_done_after_it(world: World) -> None:
    await call(world, INIT, session_payload("tx-early", Decimal("10.00"), "CHARGE", CARD))
    early = await call(world, REFUND, action_payload("tx-early", Decimal("10.00"), "REFUND"))
    assert set(early) == {"pspReference"}  # pending: Saleor books REFUND_REQUEST
    assert world.sandbox.balance(CARD) == CARD_BALANCE  # not even the charge has landed
    await world.settle()  # the charge settles
    await world.state.maintain()  # the runner posts the refund
    await world.settle()
    await world.flush()
    assert world.sandbox.balance(CARD) == CARD_BALANCE
    refunds = [r for r in world.saleor.reports_of("tx-early") if r["type"] == "REFUND_SUCCESS"]
    assert [(r["pspReference"], r["amount"]) for r in refunds] == [
        (early["pspReference"], Decimal("10.00"))
    ]


async def test_two_identical_refunds_issued_separately_both_happen(world: World) -> None:
    await call(world, INIT, session_payload("tx-two", Decimal("40.00"), "CHARGE", CARD))
    await world.settle()
    a = await call(
        world,
        REFUND,
        action_payload("tx-two", Decimal("10.00"), "REFUND", issued_at="2026-01-01T13:00:00Z"),
    )
    await world.settle()
    b = await call(
        world,
        REFUND,
        action_payload("tx-two", Decimal("10.00"), "REFUND", issued_at="2026-01-01T13:00:01Z"),
    )
    await world.settle()
    assert a["pspReference"] != b["pspReference"]
    assert world.sandbox.balance(CARD) == Decimal("80.00")


async def test_declines_are_200_failures_that_saleor_books_with_their_message(
    world: World,
) -> None:
    payload = session_payload("tx-u", Decimal("5.00"), "AUTHORIZATION", "2009999999999")
    response = await world.saleor.initialize(world.client, payload)
    unknown = response.json()
    assert unknown["result"] == "AUTHORIZATION_FAILURE"
    # Saleor 3.24 replaces a session failure without pspReference by its own message.
    [_, booked] = world.saleor.transaction("tx-u").events
    assert (booked.type, booked.message) == ("AUTHORIZATION_FAILURE", unknown["message"])

    too_much = await call(
        world,
        INIT,
        session_payload("tx-big", Decimal("500.00"), "CHARGE", CARD, idempotency_key="k2"),
    )
    assert too_much["result"] == "CHARGE_FAILURE"

    no_code = await call(
        world,
        INIT,
        session_payload("tx-none", Decimal("5.00"), "CHARGE", None, idempotency_key="k3"),
    )
    assert no_code["result"] == "CHARGE_FAILURE"
    assert no_code["message"] == "Enter a gift card code."

    assert world.sandbox.balance(CARD) == CARD_BALANCE
    for tx in ("tx-u", "tx-big", "tx-none"):
        assert world.payments.store.list_reservations(order_ref=tx) == []


async def test_empty_and_unknown_cards_get_the_same_answer(world: World) -> None:
    world.sandbox.add_giftcard("2000000099990", Decimal("0"))
    empty = await call(world, GATEWAY, gateway_payload(Decimal("10.00"), "2000000099990"))
    unknown = await call(world, GATEWAY, gateway_payload(Decimal("10.00"), "2000000088880"))
    assert empty == unknown
    assert empty["data"]["ok"] is False
    assert "usableAmount" not in empty["data"]

    good = await call(world, GATEWAY, gateway_payload(Decimal("10.00"), CARD))
    assert good["data"]["ok"] is True
    assert good["data"]["usableAmount"] == Decimal("10.00")
    assert good["data"]["coversFullAmount"] is True

    bare = await call(world, GATEWAY, gateway_payload(Decimal("10.00"), None))
    assert "ok" not in bare["data"]


async def test_capture_declined_at_settlement_is_reported_as_charge_failure(world: World) -> None:
    body = await call(world, INIT, session_payload("tx-fail", Decimal("60.00"), "CHARGE", CARD))
    assert body["result"] == "CHARGE_REQUEST"
    # The card is spent in a physical shop before 4WS processes our update.
    world.sandbox.spend_in_shop(CARD, Decimal("90.00"))
    await world.settle()
    [report] = world.saleor.reports_of("tx-fail")
    assert report["type"] == "CHARGE_FAILURE"
    assert report["pspReference"] == body["pspReference"]
    assert world.sandbox.balance(CARD) == Decimal("10.00")


async def test_expired_authorization_is_reported_as_canceled(world: World) -> None:
    await authorize(world, "tx-exp", "15.00")
    # The provider's default hold (15 minutes) would have lapsed long ago: the App's does not.
    world.clock.advance(world.payments.settings.reservation_ttl * 4)
    assert await world.payments.sweep() == 0
    world.clock.advance(world.state.config.authorization_ttl)
    assert await world.payments.sweep() == 1
    await world.flush()
    [report] = world.saleor.reports_of("tx-exp")
    assert (report["type"], report["amount"]) == ("CANCEL_SUCCESS", Decimal("15.00"))
    assert "expired" in report["message"]
