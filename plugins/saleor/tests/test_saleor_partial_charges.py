"""Several charges of one authorization, and cancelling the rest (issue 13, items 2 and 3).

Saleor subtracts each CHARGE_SUCCESS from ``authorized_value``; the fake books events the
same way (``SaleorTransaction.amounts``), so ``authorized`` below is what the merchant sees.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from fake_saleor import action_payload, session_payload
from fourws_pay_saleor.payloads import WebhookEvent
from saleor_world import CARD, CARD_BALANCE, World

from fourws_pay.payments import ReservationState

CHARGE = WebhookEvent.TRANSACTION_CHARGE_REQUESTED
REFUND = WebhookEvent.TRANSACTION_REFUND_REQUESTED
CANCEL = WebhookEvent.TRANSACTION_CANCELATION_REQUESTED


async def authorize(world: World, tx: str, amount: str) -> None:
    response = await world.saleor.initialize(
        world.client, session_payload(tx, Decimal(amount), "AUTHORIZATION", CARD)
    )
    assert response.json()["result"] == "AUTHORIZATION_SUCCESS"


async def action(
    world: World, event: WebhookEvent, tx: str, amount: str, at: str
) -> dict[str, object]:
    kind = {CHARGE: "CHARGE", REFUND: "REFUND", CANCEL: "CANCEL"}[event]
    [response] = await world.saleor.request_action(
        world.client, event, action_payload(tx, Decimal(amount), kind, issued_at=at)
    )
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


async def settle(world: World) -> None:
    await world.settle()
    await world.state.maintain()  # finishes pending actions, re-holds remainders
    await world.settle()
    await world.flush()


def amounts(world: World, tx: str) -> tuple[Decimal, Decimal, Decimal]:
    values = world.saleor.transaction(tx).amounts()
    return values["authorized"], values["charged"], values["canceled"]


def active_holds(world: World, tx: str) -> list[Decimal]:
    return [
        r.amount
        for r in world.payments.store.list_reservations(order_ref=tx)
        if r.state is ReservationState.ACTIVE
    ]


async def test_two_partial_charges_use_the_whole_authorization(world: World) -> None:
    await authorize(world, "tx-p1", "50.00")
    first = await action(world, CHARGE, "tx-p1", "20.00", "2026-01-01T12:01:00Z")
    assert set(first) == {"pspReference"}
    await settle(world)
    assert amounts(world, "tx-p1") == (Decimal("30.00"), Decimal("20.00"), Decimal("0"))
    assert active_holds(world, "tx-p1") == [Decimal("30.00")]  # the rest is still held

    await action(world, CHARGE, "tx-p1", "30.00", "2026-01-01T12:02:00Z")
    await settle(world)
    assert amounts(world, "tx-p1") == (Decimal("0"), Decimal("50.00"), Decimal("0"))
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("50.00")
    assert active_holds(world, "tx-p1") == []


async def test_the_rest_of_an_authorization_can_be_cancelled(world: World) -> None:
    await authorize(world, "tx-p2", "50.00")
    await action(world, CHARGE, "tx-p2", "20.00", "2026-01-01T12:01:00Z")
    await settle(world)
    canceled = await action(world, CANCEL, "tx-p2", "30.00", "2026-01-01T12:02:00Z")
    assert (canceled["result"], canceled["amount"]) == ("CANCEL_SUCCESS", 30)
    assert canceled["actions"] == ["REFUND"]
    assert amounts(world, "tx-p2") == (Decimal("0"), Decimal("20.00"), Decimal("30.00"))
    assert active_holds(world, "tx-p2") == []
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("20.00")
    # Nothing is left to charge.
    late = await action(world, CHARGE, "tx-p2", "30.00", "2026-01-01T12:03:00Z")
    assert late["result"] == "CHARGE_FAILURE"


async def test_a_second_charge_while_the_first_is_in_flight_waits_its_turn(
    world: World,
) -> None:
    await authorize(world, "tx-p3", "50.00")
    await action(world, CHARGE, "tx-p3", "20.00", "2026-01-01T12:01:00Z")
    second = await action(world, CHARGE, "tx-p3", "30.00", "2026-01-01T12:01:01Z")
    assert set(second) == {"pspReference"}  # pending, not failed
    await settle(world)  # first settles, the rest is re-held, the second is posted
    await settle(world)
    assert amounts(world, "tx-p3") == (Decimal("0"), Decimal("50.00"), Decimal("0"))
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("50.00")


async def test_charges_beyond_the_authorization_are_declined(world: World) -> None:
    await authorize(world, "tx-p5", "50.00")
    await action(world, CHARGE, "tx-p5", "20.00", "2026-01-01T12:01:00Z")
    await settle(world)
    too_much = await action(world, CHARGE, "tx-p5", "31.00", "2026-01-01T12:02:00Z")
    assert too_much["result"] == "CHARGE_FAILURE"
    assert "30.00 is authorized" in str(too_much["message"])
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("20.00")


async def test_refunds_of_partial_charges(world: World) -> None:
    await authorize(world, "tx-p6", "50.00")
    await action(world, CHARGE, "tx-p6", "20.00", "2026-01-01T12:01:00Z")
    await settle(world)
    await action(world, CHARGE, "tx-p6", "30.00", "2026-01-01T12:02:00Z")
    await settle(world)
    refund = await action(world, REFUND, "tx-p6", "25.00", "2026-01-01T12:03:00Z")
    assert set(refund) == {"pspReference"}
    await settle(world)
    values = world.saleor.transaction("tx-p6").amounts()
    assert (values["charged"], values["refunded"]) == (Decimal("25.00"), Decimal("25.00"))
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("25.00")


async def test_the_re_held_rest_keeps_the_original_expiry(world: World) -> None:
    await authorize(world, "tx-p7", "50.00")
    [first] = world.payments.store.list_reservations(order_ref="tx-p7")
    [booked] = [e for e in world.saleor.transaction("tx-p7").events if e.type.endswith("SUCCESS")]
    assert booked.message == f"Gift card held until {first.expires_at:%Y-%m-%d %H:%M} UTC."
    assert first.expires_at - first.created_at == timedelta(days=7)
    await action(world, CHARGE, "tx-p7", "20.00", "2026-01-01T12:01:00Z")
    await settle(world)
    [rest] = [
        r
        for r in world.payments.store.list_reservations(order_ref="tx-p7")
        if r.state is ReservationState.ACTIVE
    ]
    assert rest.expires_at == first.expires_at
    world.clock.advance(world.state.config.authorization_ttl + 1)
    await world.state.maintain()
    await world.flush()
    assert amounts(world, "tx-p7") == (Decimal("0"), Decimal("20.00"), Decimal("30.00"))


async def test_an_authorization_stored_by_the_previous_app_version_can_still_be_charged(
    world: World,
) -> None:
    await authorize(world, "tx-old", "30.00")
    record = world.store.get_transaction(world.saleor_api_url, "tx-old")
    assert record is not None
    record.authorized = None  # as written before the column existed
    world.store.save_transaction(record)
    await action(world, CHARGE, "tx-old", "30.00", "2026-01-01T12:01:00Z")
    await settle(world)
    assert amounts(world, "tx-old") == (Decimal("0"), Decimal("30.00"), Decimal("0"))


async def test_the_rest_stays_held_while_the_charged_part_settles(world: World) -> None:
    """The hold is split when the charge is posted: the rest is never unheld."""
    await authorize(world, "tx-p8", "50.00")
    await action(world, CHARGE, "tx-p8", "20.00", "2026-01-01T12:01:00Z")
    assert sorted(active_holds(world, "tx-p8")) == [Decimal("20.00"), Decimal("30.00")]
    await world.settle()
    assert active_holds(world, "tx-p8") == [Decimal("30.00")]


async def test_a_failed_partial_charge_leaves_its_part_held_with_the_rest(world: World) -> None:
    await authorize(world, "tx-p9", "50.00")
    await action(world, CHARGE, "tx-p9", "20.00", "2026-01-01T12:01:00Z")
    world.sandbox.spend_in_shop(CARD, Decimal("90.00"))  # 4WS declines the capture
    await settle(world)
    assert amounts(world, "tx-p9") == (Decimal("50.00"), Decimal("0"), Decimal("0"))
    assert sorted(active_holds(world, "tx-p9")) == [Decimal("20.00"), Decimal("30.00")]
    # A charge spanning both parts is declined with what is possible at once.
    spanning = await action(world, CHARGE, "tx-p9", "50.00", "2026-01-01T12:02:00Z")
    assert spanning["result"] == "CHARGE_FAILURE"
    assert "at most 30.00 at once" in str(spanning["message"])
    canceled = await action(world, CANCEL, "tx-p9", "50.00", "2026-01-01T12:03:00Z")
    assert (canceled["result"], canceled["amount"]) == ("CANCEL_SUCCESS", 50)
    assert active_holds(world, "tx-p9") == []
    assert amounts(world, "tx-p9") == (Decimal("0"), Decimal("0"), Decimal("50.00"))


async def test_a_rest_the_card_no_longer_covers_fails_its_charge_cleanly(world: World) -> None:
    await authorize(world, "tx-p10", "50.00")
    await action(world, CHARGE, "tx-p10", "20.00", "2026-01-01T12:01:00Z")
    world.sandbox.spend_in_shop(CARD, Decimal("70.00"))  # at a till: holds are the App's own
    await settle(world)
    assert world.sandbox.balance(CARD) == Decimal("10.00")
    late = await action(world, CHARGE, "tx-p10", "30.00", "2026-01-01T12:02:00Z")
    assert late["result"] == "CHARGE_FAILURE"
    assert world.sandbox.balance(CARD) == Decimal("10.00")
    canceled = await action(world, CANCEL, "tx-p10", "30.00", "2026-01-01T12:03:00Z")
    assert canceled["result"] == "CANCEL_SUCCESS"
    assert amounts(world, "tx-p10") == (Decimal("0"), Decimal("20.00"), Decimal("30.00"))


class _NoSplit:
    """A provider from before ``keep_remainder``: a partial capture frees the rest."""

    def __init__(self, world: World) -> None:
        gateway = world.state.handlers.gateway
        real = gateway.capture

        async def capture(reservation_id: str, amount: object = None, **_: object) -> object:
            return await real(reservation_id, amount)  # type: ignore[arg-type]

        gateway.capture = capture  # type: ignore[method-assign,assignment]


async def test_without_split_the_rest_is_held_again_once_the_charge_settles(
    world: World,
) -> None:
    _NoSplit(world)
    await authorize(world, "tx-p11", "50.00")
    await action(world, CHARGE, "tx-p11", "20.00", "2026-01-01T12:01:00Z")
    assert active_holds(world, "tx-p11") == [Decimal("50.00")]  # whole until settled
    await world.settle()  # the callback re-holds the freed rest at once
    assert active_holds(world, "tx-p11") == [Decimal("30.00")]
    await action(world, CHARGE, "tx-p11", "30.00", "2026-01-01T12:02:00Z")
    await settle(world)
    assert amounts(world, "tx-p11") == (Decimal("0"), Decimal("50.00"), Decimal("0"))


async def test_without_split_a_rest_that_cannot_be_held_again_is_reported(world: World) -> None:
    _NoSplit(world)
    await authorize(world, "tx-p12", "50.00")
    await action(world, CHARGE, "tx-p12", "20.00", "2026-01-01T12:01:00Z")
    world.sandbox.spend_in_shop(CARD, Decimal("70.00"))  # before 4WS settles the charge
    await settle(world)
    assert amounts(world, "tx-p12") == (Decimal("0"), Decimal("20.00"), Decimal("30.00"))
    [lost] = [r for r in world.saleor.reports_of("tx-p12") if r["type"] == "CANCEL_SUCCESS"]
    assert "could not be kept" in lost["message"]
    late = await action(world, CHARGE, "tx-p12", "30.00", "2026-01-01T12:02:00Z")
    assert late["result"] == "CHARGE_FAILURE"


async def test_one_refund_spread_over_two_partial_charges(world: World) -> None:
    """Issue 17, item 3: Saleor sends one refund; the App takes it from the newest charge
    first, each part exactly once, and reports it once under Saleor's pspReference."""
    await authorize(world, "tx-p10", "50.00")
    await action(world, CHARGE, "tx-p10", "20.00", "2026-01-01T12:01:00Z")
    await settle(world)
    await action(world, CHARGE, "tx-p10", "30.00", "2026-01-01T12:02:00Z")
    await settle(world)
    refund = await action(world, REFUND, "tx-p10", "40.00", "2026-01-01T12:03:00Z")
    assert set(refund) == {"pspReference"}  # pending: the parts settle at 4WS
    await settle(world)
    await settle(world)  # a further pass posts nothing more
    values = world.saleor.transaction("tx-p10").amounts()
    assert (values["charged"], values["refunded"]) == (Decimal("10.00"), Decimal("40.00"))
    assert values["refund_pending"] == 0
    reports = [r for r in world.saleor.reports_of("tx-p10") if r["type"].startswith("REFUND")]
    assert [(r["type"], r["pspReference"], Decimal(str(r["amount"]))) for r in reports] == [
        ("REFUND_SUCCESS", refund["pspReference"], Decimal("40.00"))
    ]
    refunds = [r.amount for r in world.sandbox.applied_operations(CARD) if r.amount > 0]
    assert refunds == [Decimal("30.00"), Decimal("10.00")]  # newest charge first
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("10.00")
    # The rest of both charges can still be refunded, from the older one.
    await action(world, REFUND, "tx-p10", "10.00", "2026-01-01T12:04:00Z")
    await settle(world)
    assert world.saleor.transaction("tx-p10").amounts()["refunded"] == Decimal("50.00")
    assert world.sandbox.balance(CARD) == CARD_BALANCE
    too_much = await action(world, REFUND, "tx-p10", "0.01", "2026-01-01T12:05:00Z")
    assert too_much["result"] == "REFUND_FAILURE"


async def test_available_actions_follow_what_is_held_and_refundable(world: World) -> None:
    """Issue 17, item 6: the Dashboard offers only what Saleor's availableActions lists."""
    await authorize(world, "tx-p11", "50.00")
    actions = lambda: world.saleor.transaction("tx-p11").actions  # noqa: E731
    assert actions() == ["CANCEL", "CHARGE"]
    await action(world, CHARGE, "tx-p11", "20.00", "2026-01-01T12:01:00Z")
    await settle(world)
    assert actions() == ["CANCEL", "CHARGE", "REFUND"]  # 30 still held, 20 charged
    canceled = await action(world, CANCEL, "tx-p11", "30.00", "2026-01-01T12:02:00Z")
    assert canceled["actions"] == ["REFUND"]
    await action(world, REFUND, "tx-p11", "20.00", "2026-01-01T12:03:00Z")
    await settle(world)
    assert actions() == []  # nothing held, nothing left to refund


async def test_after_the_rest_lapses_the_charge_can_still_be_refunded(world: World) -> None:
    await authorize(world, "tx-p12", "50.00")
    await action(world, CHARGE, "tx-p12", "20.00", "2026-01-01T12:04:00Z")
    await settle(world)
    world.clock.advance(world.state.config.authorization_ttl + 1)
    await world.state.maintain()  # the rest lapses
    await world.flush()
    assert amounts(world, "tx-p12") == (Decimal("0"), Decimal("20.00"), Decimal("30.00"))
    assert world.saleor.transaction("tx-p12").actions == ["REFUND"]  # the charge stays
