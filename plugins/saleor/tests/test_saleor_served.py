"""The App served by uvicorn on 127.0.0.1: manifest and signed webhooks over real HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
import uvicorn
from fake_saleor import action_payload, session_payload
from fourws_pay_saleor.jsonutil import loads
from fourws_pay_saleor.payloads import WebhookEvent
from saleor_world import CARD, CARD_BALANCE, World


@pytest.fixture
async def served(world: World) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(world.app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(2000):  # uvicorn reports readiness by a flag, not an event
        if server.started:
            break
        await asyncio.sleep(0.005)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
    sock.close()


async def test_manifest_and_signed_webhooks_over_loopback(world: World, served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as http:
        manifest = (await http.get("/api/manifest")).json()
        assert "HANDLE_PAYMENTS" in manifest["permissions"]

        init = await world.saleor.send(
            http,
            WebhookEvent.TRANSACTION_INITIALIZE_SESSION,
            session_payload("tx-http", Decimal("20.00"), "AUTHORIZATION", CARD),
        )
        assert init.status_code == 200, init.text
        body = loads(init.content)
        assert body["result"] == "AUTHORIZATION_SUCCESS"

        charge = await world.saleor.send(
            http,
            WebhookEvent.TRANSACTION_CHARGE_REQUESTED,
            action_payload("tx-http", Decimal("20.00"), "CHARGE"),
        )
        assert set(charge.json()) == {"pspReference"}

        unsigned = await http.post(
            "/api/webhooks/transaction-charge-requested",
            content=b"{}",
            headers={"Saleor-Api-Url": "http://saleor.test/graphql/"},
        )
        assert unsigned.status_code == 401

    await world.settle()
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("20.00")
    assert [r["type"] for r in world.saleor.reports_of("tx-http")] == ["CHARGE_SUCCESS"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_cli_serves_the_manifest_with_a_sandbox(tmp_path: object) -> None:
    port = _free_port()
    env = dict(os.environ, FOURWS_SALEOR_STORE_PATH=str(tmp_path) + "/app.db")
    process = subprocess.Popen(
        [sys.executable, "-m", "fourws_pay_saleor", "serve", "--sandbox", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        manifest = None
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/manifest", timeout=1)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            manifest = response.json()
            break
        assert manifest is not None, "the App did not come up"
        assert manifest["tokenTargetUrl"] == f"http://127.0.0.1:{port}/api/register"
        # a (forged) 4WS callback: uvicorn's access line must not keep its secret
        secret = "Jq3kT9xv0b_Wm2Lr8YtZpE5sNcA7uHdG4fKiVoQ1yXw"
        path = f"/fourws/callback/op_0123456789abcdef0123456789abcdef/{secret}"
        forged = httpx.post(f"http://127.0.0.1:{port}{path}", content=b"{}", timeout=5)
        assert forged.status_code >= 400
    finally:
        process.terminate()
        process.wait(timeout=10)
    logged = process.stdout.read().decode() if process.stdout else ""
    assert "/fourws/callback/op_0123456789abcdef0123456789abcdef/****" in logged, logged
    assert secret not in logged
