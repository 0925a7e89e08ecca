"""Who may talk to the App: installation, signatures, key rotation, event routing."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fake_saleor import API_URL, APP_TOKEN, FakeSaleor, new_key, session_payload
from fourws_pay_saleor import AppStore, create_app
from fourws_pay_saleor.jsonutil import dumps, loads
from fourws_pay_saleor.jws import b64url_encode
from fourws_pay_saleor.payloads import WebhookEvent
from saleor_world import APP_URL, CARD, World, make_config

from fourws_pay.clock import ManualClock

INIT = WebhookEvent.TRANSACTION_INITIALIZE_SESSION


def payload(tx: str = "tx-sec") -> dict[str, object]:
    return session_payload(tx, Decimal("10.00"), "AUTHORIZATION", CARD, idempotency_key=tx)


def held(world: World, tx: str = "tx-sec") -> int:
    return len(world.payments.store.list_reservations(order_ref=tx))


async def test_manifest_describes_a_payment_app(world: World) -> None:
    response = await world.client.get("/api/manifest")
    assert response.status_code == 200
    manifest = response.json()
    assert manifest["permissions"] == ["HANDLE_PAYMENTS"]
    assert manifest["tokenTargetUrl"] == f"{APP_URL}/api/register"
    assert manifest["appUrl"].startswith(APP_URL)
    assert {"id", "name", "version", "webhooks"} <= set(manifest)
    assert manifest["requiredSaleorVersion"] == ">=3.20"
    events = {e for hook in manifest["webhooks"] for e in hook["syncEvents"]}
    assert events == {e.name for e in WebhookEvent}
    lifecycle = {e for hook in manifest["webhooks"] for e in hook["asyncEvents"]}
    assert lifecycle == {"APP_DELETED", "APP_STATUS_CHANGED"}
    for hook in manifest["webhooks"]:
        for event in hook["syncEvents"] + hook["asyncEvents"]:
            typename = "".join(part.title() for part in event.split("_"))
            assert f"... on {typename} " in hook["query"]
        event = (hook["syncEvents"] + hook["asyncEvents"])[0]
        assert hook["query"].startswith("subscription")
        assert hook["query"].count("{") == hook["query"].count("}")
        path = hook["targetUrl"].removeprefix(APP_URL)
        # Every declared target exists and is guarded (unsigned -> 401, not 404).
        probe = await world.client.post(path, content=b"{}")
        assert probe.status_code == 401, (event, probe.status_code)
    assert (await world.client.get("/")).status_code == 200


async def test_valid_signed_webhook_is_accepted(world: World) -> None:
    response = await world.saleor.send(world.client, INIT, payload())
    assert response.status_code == 200
    assert response.json()["result"] == "AUTHORIZATION_SUCCESS"
    assert held(world) == 1


@pytest.mark.parametrize(
    "breakage",
    ["missing", "tampered", "wrong_key", "alg_none", "attached", "crit_unknown", "garbage"],
)
async def test_bad_signatures_are_rejected_before_anything_happens(
    world: World, breakage: str
) -> None:
    body = dumps(payload()).encode()
    saleor = world.saleor
    signature: str | None
    sign_body: bytes | None = None
    if breakage == "missing":
        signature = ""
    elif breakage == "tampered":
        signature = None
        sign_body = body.replace(b'"10.00"', b'"1.00"').replace(b"10.00", b"1.00")
        assert sign_body != body
    elif breakage == "wrong_key":
        signature = saleor.sign(body, key=new_key(7), kid=saleor.kid)
    elif breakage == "alg_none":
        header = b64url_encode(b'{"alg":"none","b64":false,"crit":["b64"],"kid":"1"}')
        signature = f"{header}.."
    elif breakage == "attached":
        good = saleor.sign(body)
        head, _, sig = good.split(".")
        signature = f"{head}.{b64url_encode(body)}.{sig}"
    elif breakage == "crit_unknown":
        header = b64url_encode(b'{"alg":"RS256","crit":["exp"],"exp":1,"kid":"1"}')
        signature = f"{header}..{saleor.sign(body).split('.')[2]}"
    else:
        signature = "not-a-jws"
    response = await saleor.send(
        world.client, INIT, {}, body=body, signature=signature, sign_body=sign_body
    )
    assert response.status_code == 401, breakage
    assert held(world) == 0


async def test_unknown_saleor_is_rejected(world: World) -> None:
    response = await world.saleor.send(
        world.client, INIT, payload(), api_url="http://other.test/graphql/"
    )
    assert response.status_code == 401
    assert held(world) == 0


async def test_event_must_match_the_endpoint(world: World) -> None:
    response = await world.saleor.send(
        world.client,
        INIT,
        payload(),
        headers={"Saleor-Event": "transaction_charge_requested"},
    )
    assert response.status_code == 400
    assert held(world) == 0


async def test_upper_case_event_header_is_tolerated(world: World) -> None:
    response = await world.saleor.send(
        world.client, INIT, payload(), headers={"Saleor-Event": "TRANSACTION_INITIALIZE_SESSION"}
    )
    assert response.status_code == 200


async def test_malformed_payload_is_400(world: World) -> None:
    response = await world.saleor.send(world.client, INIT, {"transaction": {"id": "x"}})
    assert response.status_code == 400
    assert "action" in response.json()["error"]["message"]
    response = await world.saleor.send(world.client, INIT, {}, body=b"[not json")
    assert response.status_code == 400


async def test_key_rotation_refetches_once(world: World) -> None:
    await world.saleor.send(world.client, INIT, payload("tx-r1"))
    fetched = world.saleor.jwks_requests
    world.saleor.rotate()
    world.clock.advance(60)  # well within the JWKS cache lifetime
    response = await world.saleor.send(world.client, INIT, payload("tx-r2"))
    assert response.status_code == 200
    assert world.saleor.jwks_requests == fetched + 1
    # Forged requests right after do not turn into a stream of JWKS fetches.
    for _ in range(5):
        forged = await world.saleor.send(
            world.client,
            INIT,
            {},
            body=dumps(payload("tx-r3")).encode(),
            signature=world.saleor.sign(b"other", kid="99"),
        )
        assert forged.status_code == 401
    assert world.saleor.jwks_requests <= fetched + 2


async def test_signature_from_the_old_key_fails_after_rotation(world: World) -> None:
    old_key, old_kid = world.saleor.key, world.saleor.kid
    world.saleor.rotate()
    body = dumps(payload()).encode()
    response = await world.saleor.send(
        world.client, INIT, {}, body=body, signature=world.saleor.sign(body, old_key, old_kid)
    )
    assert response.status_code == 401
    assert held(world) == 0


async def test_jwks_unreachable_is_503_so_saleor_retries(world: World) -> None:
    world.saleor.jwks_down = True
    world.state.verifier.forget(API_URL)
    response = await world.saleor.send(world.client, INIT, payload())
    assert response.status_code == 503
    assert held(world) == 0


# -- installation ------------------------------------------------------------------------


@pytest.fixture
async def bare(tmp_path: Path, saleor: FakeSaleor) -> httpx.AsyncClient:
    """An App with nothing installed; the gateway is never reached in these tests (nor its
    ledger: no back office)."""
    config = make_config(tmp_path, backoffice=False)
    store = AppStore(config.store_path)
    app = create_app(
        config, _NoGateway(), store=store, http=saleor.http_client(), clock=ManualClock()
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=APP_URL)


class _NoGateway:
    def add_listener(self, plugin: object, name: str) -> None:
        self.plugin = plugin

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the gateway must not be used: {name}")


async def test_register_stores_the_token_durably(
    tmp_path: Path, bare: httpx.AsyncClient, saleor: FakeSaleor
) -> None:
    response = await saleor.install(bare)
    assert response.status_code == 200
    assert response.json() == {"success": True}
    reopened = AppStore(tmp_path / "app.db")
    installation = reopened.get_installation(API_URL)
    assert installation is not None
    assert installation.token == APP_TOKEN
    assert installation.app_id == "QXBwOjQy"
    assert APP_TOKEN not in repr(installation)


async def test_register_refuses_bad_tokens_and_strangers(
    tmp_path: Path, bare: httpx.AsyncClient, saleor: FakeSaleor
) -> None:
    stranger = await bare.post(
        "/api/register",
        json={"auth_token": APP_TOKEN},
        headers={"Saleor-Domain": "evil.test", "Saleor-Api-Url": "http://evil.test/graphql/"},
    )
    assert stranger.status_code == 403
    assert stranger.json() == {"error": {"message": "this Saleor instance may not install the App"}}
    missing = await bare.post("/api/register", json={"auth_token": APP_TOKEN})
    assert missing.status_code == 400
    empty = await bare.post(
        "/api/register", json={"auth_token": ""}, headers={"Saleor-Api-Url": API_URL}
    )
    assert empty.status_code == 400
    # Nothing was installed, so webhooks from that Saleor are still refused.
    body = dumps(payload()).encode()
    response = await saleor.send(bare, INIT, {}, body=body)
    assert response.status_code == 401

    assert (await saleor.install(bare)).status_code == 200
    # A token Saleor refuses never replaces an active installation.
    assert (await saleor.install(bare, token="stolen")).status_code == 401
    installation = AppStore(tmp_path / "app.db").get_installation(API_URL)
    assert installation is not None
    assert installation.token == APP_TOKEN
    assert installation.active


async def test_the_auth_token_never_reaches_the_logs(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await world.saleor.install(world.client)
    await world.saleor.send(
        world.client,
        INIT,
        session_payload("tx-log", Decimal("10.00"), "CHARGE", CARD, idempotency_key="log"),
    )
    await world.settle()
    assert world.saleor.reports  # a report was sent with the token
    # httpx's own INFO lines carry request URLs (the 4WS client's query string); they are
    # the host's logging choice. Everything this project logs goes to ``fourws_pay``.
    ours = [r for r in caplog.records if r.name.startswith("fourws_pay")]
    assert ours
    text = "\n".join(r.getMessage() for r in ours) + repr([r.__dict__ for r in ours])
    assert APP_TOKEN not in text
    assert CARD not in text


async def test_responses_are_exactly_what_saleor_parses(world: World) -> None:
    response = await world.saleor.send(world.client, INIT, payload("tx-json"))
    assert response.headers["content-type"].startswith("application/json")
    body = loads(response.content)
    # Amounts travel as JSON numbers in plain notation, never floats or exponents.
    assert b'"amount":10.00' in response.content
    assert body["result"] == "AUTHORIZATION_SUCCESS"
    assert "externalUrl" not in body
