"""4WS misbehaving under the App: outages, ambiguous POSTs, early and duplicate callbacks."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fake_saleor import action_payload, session_payload
from fourws_pay_saleor.jsonutil import loads
from fourws_pay_saleor.payloads import WebhookEvent
from saleor_world import CARD, CARD_BALANCE, World

from fourws_pay.payments import OperationState
from fourws_pay.sandbox import Fault

INIT = WebhookEvent.TRANSACTION_INITIALIZE_SESSION


async def init(world: World, payload: dict[str, Any]) -> dict[str, Any]:
    response = await world.saleor.send(world.client, INIT, payload)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = loads(response.content)
    return body


async def test_4ws_outage_is_a_failure_that_a_replay_can_overcome(world: World) -> None:
    world.sandbox.faults.add("get_giftcard", Fault.server_error(503), times=None)
    payload = session_payload("tx-f1", Decimal("10.00"), "CHARGE", CARD, idempotency_key="f1")
    down = await init(world, payload)
    assert down["result"] == "CHARGE_FAILURE"
    assert "temporarily unavailable" in down["message"]
    assert world.payments.store.list_reservations(order_ref="tx-f1") == []

    world.sandbox.faults.clear()
    up = await init(world, payload)  # not answered from memory: the failure was transient
    assert up["result"] == "CHARGE_REQUEST"
    await world.settle()
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("10.00")


async def test_ambiguous_capture_is_pending_and_reported_once_settled(world: World) -> None:
    world.sandbox.faults.add("update_giftcard", Fault.reset_after_enqueue())
    body = await init(world, session_payload("tx-f2", Decimal("25.00"), "CHARGE", CARD))
    assert body["result"] == "CHARGE_REQUEST"
    operation = world.operation_for(body["pspReference"])
    assert operation.state is OperationState.UNKNOWN
    await world.settle()  # 4WS did apply it and calls back
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("25.00")
    [report] = world.saleor.reports_of("tx-f2")
    assert (report["type"], report["pspReference"]) == ("CHARGE_SUCCESS", body["pspReference"])


async def test_ambiguous_capture_without_callback_is_resolved_by_reconcile(world: World) -> None:
    world.sandbox.faults.add("update_giftcard", Fault.reset_after_enqueue())
    world.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    body = await init(world, session_payload("tx-f3", Decimal("5.00"), "CHARGE", CARD))
    await world.settle()
    assert world.saleor.reports_of("tx-f3") == []
    world.clock.advance(world.payments.settings.callback_timeout + 1)
    await world.state.maintain()  # sweep + reconcile + flush, as the server loop does
    [report] = world.saleor.reports_of("tx-f3")
    assert report["pspReference"] == body["pspReference"]
    assert report["type"] == "CHARGE_SUCCESS"  # reconcile proved it from the balance
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("5.00")


async def test_callback_before_the_response_is_answered_synchronously(world: World) -> None:
    world.sandbox.faults.add("update_giftcard", Fault.callback_before_response())
    body = await init(world, session_payload("tx-f4", Decimal("8.00"), "CHARGE", CARD))
    assert body["result"] == "CHARGE_SUCCESS"
    await world.settle()
    # The settlement landed before the App linked the operation, and Saleor got the
    # outcome in the answer: no second copy is reported.
    assert world.saleor.reports_of("tx-f4") == []
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("8.00")


async def test_duplicate_callbacks_report_once(world: World) -> None:
    world.sandbox.faults.add("update_giftcard", Fault.duplicate_callback(copies=3))
    await init(world, session_payload("tx-f5", Decimal("9.00"), "CHARGE", CARD))
    await world.settle()
    assert [r["type"] for r in world.saleor.reports_of("tx-f5")] == ["CHARGE_SUCCESS"]
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("9.00")


async def test_4ws_refusing_the_capture_post_is_a_charge_failure(world: World) -> None:
    world.sandbox.faults.add("update_giftcard", Fault.success_false("card blocked"))
    body = await init(world, session_payload("tx-f6", Decimal("9.00"), "CHARGE", CARD))
    assert body["result"] == "CHARGE_FAILURE"
    [reservation] = world.payments.store.list_reservations(order_ref="tx-f6")
    assert reservation.state.value == "released"
    assert world.sandbox.balance(CARD) == CARD_BALANCE


async def test_requested_actions_are_pending_while_4ws_is_down_and_finished_later(
    world: World,
) -> None:
    """Never a 5xx (Saleor's retry would come without a body): pending, then the runner."""
    auth = await init(world, session_payload("tx-f7", Decimal("30.00"), "AUTHORIZATION", CARD))
    charge = action_payload("tx-f7", Decimal("30.00"), "CHARGE", psp_reference=auth["pspReference"])
    world.sandbox.faults.add("get_giftcard", Fault.server_error(503), times=None)
    down = await world.saleor.send(world.client, WebhookEvent.TRANSACTION_CHARGE_REQUESTED, charge)
    assert down.status_code == 200
    assert set(down.json()) == {"pspReference"}
    await world.state.maintain()  # still down: stays queued, nothing reported
    assert world.saleor.reports_of("tx-f7") == []
    world.sandbox.faults.clear()
    await world.state.maintain()
    await world.settle()
    await world.flush()

    refund = action_payload("tx-f7", Decimal("30.00"), "REFUND")
    world.sandbox.faults.add("get_giftcard", Fault.server_error(503), times=None)
    pending = await world.saleor.send(
        world.client, WebhookEvent.TRANSACTION_REFUND_REQUESTED, refund
    )
    assert pending.status_code == 200
    assert set(pending.json()) == {"pspReference"}
    world.sandbox.faults.clear()
    await world.state.maintain()
    await world.settle()
    await world.flush()
    assert world.sandbox.balance(CARD) == CARD_BALANCE
    reports = [(r["type"], r["pspReference"]) for r in world.saleor.reports_of("tx-f7")]
    assert reports == [
        ("CHARGE_SUCCESS", down.json()["pspReference"]),
        ("REFUND_SUCCESS", pending.json()["pspReference"]),
    ]


async def test_4ws_refusing_the_apps_credentials_is_not_an_invalid_card(
    world: World, caplog: Any
) -> None:
    """Issue 17, item 7: a credential/configuration error says "try again", not "invalid"."""
    world.sandbox.faults.add("update_giftcard", Fault.http_status(403, "Forbidden"))
    payload = session_payload("tx-f9", Decimal("10.00"), "CHARGE", CARD, idempotency_key="f9")
    body = await init(world, payload)
    assert body["result"] == "CHARGE_FAILURE"
    assert "temporarily unavailable" in body["message"]
    assert "could not be charged" not in body["message"]
    logged = caplog.text
    assert "not_a_gift_card" not in logged
    assert "saleor.fourws_configuration_refused" in logged
    assert world.payments.store.list_reservations(order_ref="tx-f9")[0].state.value != "active"
    assert world.sandbox.balance(CARD) == CARD_BALANCE
    world.sandbox.faults.clear()  # the operator fixed the credentials: the shopper retries
    again = await init(world, payload)
    assert again["result"] == "CHARGE_REQUEST"
    await world.settle()
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("10.00")
