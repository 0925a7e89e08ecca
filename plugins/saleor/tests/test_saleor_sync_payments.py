"""The same App over the blocking ``GiftCardPayments`` (run in worker threads)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
from fake_saleor import FakeSaleor, action_payload, session_payload
from fourws_pay_saleor import AppStore, PaymentsGateway, create_app
from fourws_pay_saleor.payloads import WebhookEvent
from saleor_world import APP_URL, CARD, CARD_BALANCE, make_config

from fourws_pay.clock import ManualClock
from fourws_pay.ledger import open_store
from fourws_pay.payments import GiftCardPayments, ReservationState
from fourws_pay.sandbox import Sandbox, sandbox_settings


async def test_authorize_expire_and_cancel_with_blocking_payments(
    tmp_path: Path, saleor: FakeSaleor
) -> None:
    clock = ManualClock()
    settings = sandbox_settings(callback_base_url=APP_URL + "/fourws/callback")
    sandbox = Sandbox(settings=settings, clock=clock)
    sandbox.add_giftcard(CARD, CARD_BALANCE)
    payments = GiftCardPayments(
        settings=settings,
        client=sandbox.client(),
        store=open_store(f"sqlite:///{tmp_path / 'ledger.db'}"),
        clock=clock,
    )
    config = make_config(tmp_path)
    store = AppStore(config.store_path)
    http = saleor.http_client()
    app = create_app(config, PaymentsGateway(payments), store=store, http=http, clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=APP_URL
    ) as client:
        assert (await saleor.install(client)).status_code == 200
        init = WebhookEvent.TRANSACTION_INITIALIZE_SESSION
        first = await saleor.send(
            client, init, session_payload("tx-s1", Decimal("30.00"), "AUTHORIZATION", CARD)
        )
        assert first.json()["result"] == "AUTHORIZATION_SUCCESS"
        await saleor.send(
            client,
            init,
            session_payload("tx-s2", Decimal("20.00"), "AUTHORIZATION", CARD, idempotency_key="2"),
        )
        cancel = await saleor.send(
            client,
            WebhookEvent.TRANSACTION_CANCELATION_REQUESTED,
            action_payload("tx-s2", Decimal("20.00"), "CANCEL"),
        )
        assert cancel.json()["result"] == "CANCEL_SUCCESS"
        [released] = payments.list_reservations(order_ref="tx-s2")
        assert released.state is ReservationState.RELEASED

        # Events of the blocking provider reach the listener as well.
        clock.advance(app.state.saleor.config.authorization_ttl + 1)
        assert payments.sweep() == 1
        await app.state.saleor.flush_reports()
    [report] = saleor.reports_of("tx-s1")
    assert report["type"] == "CANCEL_SUCCESS"
    assert report["amount"] == first.json()["amount"]
    assert saleor.reports_of("tx-s2") == []  # answered synchronously, not reported again
    await http.aclose()
    payments.close()
    store.close()
