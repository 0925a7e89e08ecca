"""Answers shaped for the calling Saleor; nothing moves for one too old (issue 13, item 4)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fake_saleor import session_payload
from fourws_pay_saleor.jsonutil import loads
from fourws_pay_saleor.payloads import WebhookEvent
from fourws_pay_saleor.versions import parse_version, saleor_version
from saleor_schema import assert_saleor_accepts
from saleor_world import CARD, World

INIT = WebhookEvent.TRANSACTION_INITIALIZE_SESSION


def payload(tx: str, version: str | None) -> dict[str, Any]:
    body = session_payload(tx, Decimal("10.00"), "AUTHORIZATION", CARD)
    if version is None:
        del body["version"]
    else:
        body["version"] = version
    return body


@pytest.mark.parametrize(
    ("version", "kind", "parsed"),
    [
        ("3.24.0-a.0", "GIFT_CARD", (3, 24)),
        ("3.23.1", "GIFT_CARD", (3, 23)),
        ("3.22.7", "OTHER", (3, 22)),
        ("3.21.0", "OTHER", (3, 21)),
        ("3.20.40", None, (3, 20)),
        (None, None, (3, 24)),  # unknown: no details at all, checked against the newest
    ],
)
async def test_payment_method_details_follow_the_callers_version(
    world: World, version: str | None, kind: str | None, parsed: tuple[int, int]
) -> None:
    response = await world.saleor.send(world.client, INIT, payload(f"tx-v-{version}", version))
    body = loads(response.content)
    assert body["result"] == "AUTHORIZATION_SUCCESS"
    assert_saleor_accepts(INIT, body, parsed)
    assert body.get("paymentMethodDetails", {}).get("type") == kind


async def test_a_saleor_below_the_minimum_gets_a_failure_before_money_moves(
    world: World,
) -> None:
    response = await world.saleor.send(world.client, INIT, payload("tx-old", "3.19.5"))
    body = response.json()
    assert body["result"] == "AUTHORIZATION_FAILURE"
    assert "too old" in body["message"]
    assert world.payments.store.list_reservations(order_ref="tx-old") == []


async def test_headers_are_used_when_the_payload_has_no_version(world: World) -> None:
    response = await world.saleor.send(
        world.client,
        INIT,
        payload("tx-hdr", None),
        headers={"Saleor-Schema-Version": "3.22"},
    )
    assert response.json()["paymentMethodDetails"]["type"] == "OTHER"


def test_versions_are_read_tolerantly() -> None:
    assert parse_version("3.24.0-a.0") == (3, 24)
    assert parse_version(" 3.20 ") == (3, 20)
    for junk in (None, "", "latest", "3", "three.two", "3.24.0 drop table"):
        assert parse_version(junk) is None
    assert saleor_version({"saleor-version": "3.22.0"}, {"version": "3.24.0"}) == (3, 24)
    assert saleor_version({"saleor-version": "3.22.0"}, {"version": 7}) == (3, 22)
    assert saleor_version({}, None) is None
