"""The world of a Saleor App test: a fake Saleor, the 4WS sandbox, real payments, the App.

Everything runs in one event loop, in-process: the App talks to the fake Saleor through an
``ASGITransport``, payments talk to the sandbox through its in-process transport, and the
sandbox delivers 4WS callbacks to the App's callback endpoint through another
``ASGITransport``. Time is a ``ManualClock``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fourws_pay_saleor import AppStore, PaymentsGateway, create_app

from fourws_pay.clock import ManualClock
from fourws_pay.ledger import open_store
from fourws_pay.payments import AsyncGiftCardPayments
from fourws_pay.sandbox import Sandbox
from fourws_pay.sandbox.sandbox import sandbox_settings

sys.path.insert(0, str(Path(__file__).parent))

from fake_saleor import FakeSaleor
from saleor_world import APP_URL, CARD, CARD_BALANCE, World, make_config


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def saleor() -> FakeSaleor:
    return FakeSaleor()


@pytest.fixture
def app_options() -> dict[str, Any]:
    """``{"config": AppConfig overrides, "app": create_app keywords}``; modules override it."""
    return {}


@pytest.fixture
async def world(
    tmp_path: Path, clock: ManualClock, saleor: FakeSaleor, app_options: dict[str, Any]
) -> AsyncIterator[World]:
    settings = sandbox_settings(callback_base_url=APP_URL + "/fourws/callback")
    sandbox = Sandbox(settings=settings, clock=clock)
    sandbox.add_giftcard(CARD, CARD_BALANCE)
    payments = AsyncGiftCardPayments(
        settings=settings,
        client=sandbox.async_client(),
        store=open_store(f"sqlite:///{tmp_path / 'ledger.db'}"),
        clock=clock,
    )
    config = make_config(tmp_path, **app_options.get("config", {}))
    store = AppStore(config.store_path)
    http = saleor.http_client()
    app = create_app(
        config,
        PaymentsGateway(payments),
        store=store,
        http=http,
        clock=clock,
        **app_options.get("app", {}),
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=APP_URL)

    async def deliver(url: str, body: bytes) -> int:
        response = await client.post(url, content=body)
        return response.status_code

    sandbox.set_callback_handler(deliver)
    world = World(clock, sandbox, payments, saleor, app, client, store)
    response = await saleor.install(client)
    assert response.status_code == 200, response.text
    yield world
    await client.aclose()
    await http.aclose()
    await payments.aclose()
    store.close()
