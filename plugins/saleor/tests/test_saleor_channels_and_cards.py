"""Per-channel 4WS tenants, partial cards, granted refunds, reversals (issue 13, item 7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fake_saleor import FakeSaleor, action_payload, gateway_payload, session_payload
from fourws_pay_saleor import AppStore, PaymentsGateway, create_app
from fourws_pay_saleor.jsonutil import loads
from fourws_pay_saleor.payloads import WebhookEvent
from saleor_world import APP_URL, CARD, World, make_config

from fourws_pay.clock import ManualClock
from fourws_pay.ledger import open_store
from fourws_pay.payments import AsyncGiftCardPayments
from fourws_pay.payments.models import EventKind, PaymentEvent
from fourws_pay.sandbox import Sandbox
from fourws_pay.sandbox.sandbox import sandbox_settings

INIT = WebhookEvent.TRANSACTION_INITIALIZE_SESSION
CHARGE = WebhookEvent.TRANSACTION_CHARGE_REQUESTED
REFUND = WebhookEvent.TRANSACTION_REFUND_REQUESTED
GATEWAY = WebhookEvent.PAYMENT_GATEWAY_INITIALIZE_SESSION
B2B_CARD = "2000000077777"


class TwoTenants:
    def __init__(self, default: Sandbox, b2b: Sandbox, client: httpx.AsyncClient) -> None:
        self.default, self.b2b, self.client = default, b2b, client


@pytest.fixture
async def tenants(
    tmp_path: Path, clock: ManualClock, saleor: FakeSaleor
) -> AsyncIterator[TwoTenants]:
    sandboxes, payments = [], []
    for name in ("default", "b2b"):
        settings = sandbox_settings(callback_base_url=APP_URL + "/fourws/callback")
        sandbox = Sandbox(settings=settings, clock=clock)
        sandboxes.append(sandbox)
        payments.append(
            AsyncGiftCardPayments(
                settings=settings,
                client=sandbox.async_client(),
                store=open_store(f"sqlite:///{tmp_path / name}.db"),
                clock=clock,
            )
        )
    sandboxes[0].add_giftcard(CARD, Decimal("100.00"))
    sandboxes[1].add_giftcard(B2B_CARD, Decimal("60.00"))
    config = make_config(tmp_path)
    store = AppStore(config.store_path)
    http = saleor.http_client()
    app = create_app(
        config,
        PaymentsGateway(payments[0]),
        store=store,
        http=http,
        clock=clock,
        channel_gateways={"b2b": PaymentsGateway(payments[1])},
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=APP_URL)

    async def deliver(url: str, body: bytes) -> int:
        return (await client.post(url, content=body)).status_code

    for sandbox in sandboxes:
        sandbox.set_callback_handler(deliver)
    assert (await saleor.install(client)).status_code == 200
    yield TwoTenants(sandboxes[0], sandboxes[1], client)
    await client.aclose()
    await http.aclose()
    for p in payments:
        await p.aclose()
    store.close()


async def test_each_channel_pays_through_its_own_tenant(
    tenants: TwoTenants, saleor: FakeSaleor
) -> None:
    payload = session_payload("tx-b2b", Decimal("40.00"), "CHARGE", B2B_CARD)
    payload["sourceObject"]["channel"]["slug"] = "b2b"
    response = await saleor.initialize(tenants.client, payload)
    assert response.json()["result"] == "CHARGE_REQUEST"
    await tenants.b2b.aprocess_queue()  # the b2b tenant settles; its callback finds its ledger
    assert tenants.b2b.balance(B2B_CARD) == Decimal("20.00")
    refund = await saleor.request_action(
        tenants.client, REFUND, action_payload("tx-b2b", Decimal("15.00"), "REFUND")
    )
    assert refund[0].status_code == 200
    await tenants.b2b.aprocess_queue()
    assert tenants.b2b.balance(B2B_CARD) == Decimal("35.00")
    # The default channel's tenant does not know that card at all.
    other = session_payload("tx-def", Decimal("10.00"), "CHARGE", B2B_CARD, idempotency_key="d")
    declined = await saleor.initialize(tenants.client, other)
    assert declined.json()["result"] == "CHARGE_FAILURE"
    assert tenants.default.balance(CARD) == Decimal("100.00")


async def test_a_partial_card_pays_what_the_gateway_step_offered(world: World) -> None:
    world.sandbox.add_giftcard("2000000033333", Decimal("30.00"))
    offer = await world.saleor.send(
        world.client, GATEWAY, gateway_payload(Decimal("50.00"), "2000000033333")
    )
    data = loads(offer.content)["data"]
    assert (data["ok"], data["coversFullAmount"]) == (True, False)
    payload = session_payload("tx-part", data["usableAmount"], "AUTHORIZATION", "2000000033333")
    payload["sourceObject"]["totalPrice"]["gross"]["amount"] = Decimal("50.00")
    response = await world.saleor.initialize(world.client, payload)
    body = loads(response.content)
    assert (body["result"], body["amount"]) == ("AUTHORIZATION_SUCCESS", Decimal("30.00"))
    assert world.saleor.transaction("tx-part").amounts()["authorized"] == Decimal("30.00")


async def test_a_refund_for_a_granted_refund_is_remembered_with_it(world: World) -> None:
    await world.saleor.initialize(
        world.client, session_payload("tx-gr", Decimal("20.00"), "CHARGE", CARD)
    )
    await world.settle()
    payload = action_payload("tx-gr", Decimal("20.00"), "REFUND")
    payload["grantedRefund"] = {"id": "T3JkZXJHcmFudGVkUmVmdW5kOjE="}
    [response] = await world.saleor.request_action(world.client, REFUND, payload)
    action = world.store.get_action(response.json()["pspReference"])
    assert action is not None
    assert action.granted_refund_id == "T3JkZXJHcmFudGVkUmVmdW5kOjE="
    await world.settle()
    await world.flush()
    assert world.saleor.transaction("tx-gr").amounts()["refunded"] == Decimal("20.00")


async def test_a_success_turned_around_later_is_a_charge_back_or_refund_reverse(
    world: World,
) -> None:
    await world.saleor.initialize(
        world.client, session_payload("tx-cb", Decimal("20.00"), "CHARGE", CARD)
    )
    await world.settle()
    [response] = await world.saleor.request_action(
        world.client, REFUND, action_payload("tx-cb", Decimal("5.00"), "REFUND")
    )
    await world.settle()
    await world.flush()
    capture = world.operation_for(world.saleor.reports_of("tx-cb")[0]["pspReference"])
    refund = world.operation_for(response.json()["pspReference"])
    # An operator finds both were never applied at 4WS after all.
    for operation, kind in ((capture, EventKind.CAPTURE_FAILED), (refund, EventKind.REFUND_FAILED)):
        failed = replace(operation, message="reversed by an operator")
        world.state.listener.fourws_pay_payment_event(
            PaymentEvent(kind=kind, at=world.clock.now(), operation=failed)
        )
    await world.flush()
    types = [r["type"] for r in world.saleor.reports_of("tx-cb")]
    assert types[-2:] == ["CHARGE_BACK", "REFUND_REVERSE"]
    amounts = world.saleor.transaction("tx-cb").amounts()
    assert (amounts["charged"], amounts["refunded"]) == (Decimal("0"), Decimal("0"))
