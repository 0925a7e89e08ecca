"""Served mode: uvicorn on loopback, the queue worker running by itself, callbacks POSTed
over real HTTP to a real receiver, faults scripted over the control API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from fourws_pay.api.client import AsyncClient, Client
from fourws_pay.api.models import GiftCardUpdate
from fourws_pay.errors import AmbiguousOutcomeError, ReadTimeout
from fourws_pay.sandbox import seed as demo
from fourws_pay.sandbox.faults import parse_fault_spec
from fourws_pay.sandbox.server import ServedSandbox, start_in_thread
from fourws_pay.testing.receiver import CallbackReceiver


@pytest.fixture(scope="module")
def served() -> Iterator[ServedSandbox]:
    with start_in_thread(seed="demo") as server:
        yield server


@pytest.fixture(scope="module")
def rx() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as receiver:
        yield receiver


def documented_headers(served: ServedSandbox, content_type: str | None = None) -> dict[str, str]:
    s = served.settings
    headers = {
        "applicationId": s.application_id,
        "appId": s.application_id,
        "namespace": s.namespace,
        "languageId": s.language_id,
        "username": s.username,
        "password": s.password.get_secret_value(),
        "companyId": s.company_id,
        "siteId": s.site_id,
        "loadRoles": "Y",
    }
    if content_type:
        headers["Content-Type"] = content_type
    return headers


def test_documented_update_curl_example(served: ServedSandbox) -> None:
    """The reference's updateGiftcard curl, byte for byte (JS literal, text/plain)."""
    app_id = served.settings.application_id
    body = (
        '{\n\t\tentityCode : 440,\n\t\tbarcode: "0098260111383",\n\t\tamount : 100.0,\n'
        '\t\tactivationDate : "2021-08-31 10:00:00",\n\t\tcountry : "IT",\n'
        '\t\tbranchCode : "1150",\n\t\tpriceList : "1150",\n\t\tcurrencySymbol : "€",\n'
        '\t\tcurrency : "EUR",\n\t\tclientBarcode : "clientBarcode",\n'
        '\t\tclientCode : "clientCode",\n\t\tclientDenomination : "GINO",\n'
        '        callback : "https://..."\n}'
    )
    response = httpx.post(
        f"{served.url}/api?cmd=updateGiftcard_v1&applicationId={app_id}&appId={app_id}",
        headers=documented_headers(served, "text/plain"),
        content=body.encode(),
    )
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"success", "queueId"}
    assert answer["success"] is True
    assert len(answer["queueId"]) == 36


def test_documented_generate_and_get(served: ServedSandbox) -> None:
    app_id = served.settings.application_id
    response = httpx.post(
        f"{served.url}/api?cmd=generateGiftcards_v1&applicationId={app_id}&appId={app_id}",
        headers=documented_headers(served, "application/json"),
        content=b'{\n    "itemCode" : "GIFTCARD_IVA_TAGLIO_100",\n    "giftcards" : 5,\n'
        b'    "callback" : "https://webhook.site/9b012812-2164-43ea-ba24-7c518acd510d"\n}',
    )
    assert response.json()["success"] is True
    queue_id = response.json()["queueId"]
    httpx.post(f"{served.url}/_sandbox/process")
    (delivery,) = [c for c in served.sandbox.callbacks if c.queue_id == queue_id]
    assert delivery.status is None  # webhook.site is off the machine: never contacted
    assert delivery.error == "not delivered: callback host is not loopback"
    assert len(delivery.json()["giftcards"]) == 5
    got = httpx.get(
        f"{served.url}/api",
        params={
            "cmd": "getGiftcard_v1",
            "applicationId": app_id,
            "appId": app_id,
            "barcode": demo.EXAMPLE_CARD,
        },
        headers=documented_headers(served),
    ).json()
    card = got["giftcard"]
    assert got["success"] is True
    assert list(card) == [
        "id",
        "companyId",
        "siteId",
        "branchCode",
        "entityCode",
        "cardBarcode",
        "issueDate",
        "activationDate",
        "expirationDate",
        "flgActive",
        "priceList",
        "priceListType",
        "decimalNumber",
        "currencySymbol",
        "currency",
        "originalAmount",
        "amount",
        "itemType",
        "itemSubtype",
        "itemCode",
        "taxRate",
        "vatCode",
        "printerDepartmentCode",
        "flgNetworkUsage",
        "flgPartiallyUsage",
        "paymentTermCode",
        "flgAllowOfflineUsage",
        "taxation",
    ]
    assert card["id"] == "SVILU_500_440_2000000001814"
    assert card["siteId"] == 500
    assert card["entityCode"] == 440
    assert card["issueDate"] == "2021-10-04 00:00:00"
    denied = httpx.get(f"{served.url}/api", params={"cmd": "getGiftcard_v1", "barcode": "1"})
    assert denied.status_code == 401
    assert denied.json() == {"success": False, "message": "Access Denied."}


def test_consumption_callback_over_http(served: ServedSandbox, rx: CallbackReceiver) -> None:
    before = len(rx.received)
    with Client(served.settings) as client:
        start = client.get_giftcard(demo.UPDATE_EXAMPLE_CARD).amount
        queued = client.update_giftcard(
            GiftCardUpdate(
                entity_code="440",
                barcode=demo.UPDATE_EXAMPLE_CARD,
                amount=Decimal("-5.00"),
                callback=f"{rx.url}/fourws/callback/op-7/secret-token",
                payload={"op": "op-7"},
            )
        )
        arrived = rx.wait_for(before + 1)[before]
        assert arrived.path == "/fourws/callback/op-7/secret-token"
        body = arrived.json()
        assert body["success"] is True
        assert body["payload"] == {"op": "op-7"}
        assert client.get_giftcard(demo.UPDATE_EXAMPLE_CARD).amount == start - 5
    ops = served.sandbox.applied_operations(demo.UPDATE_EXAMPLE_CARD)
    assert [o.queue_id for o in ops][-1] == queued.queue_id


async def test_async_client_and_control_api(served: ServedSandbox, rx: CallbackReceiver) -> None:
    async with httpx.AsyncClient(base_url=served.url) as http:
        faults = await http.post(
            "/_sandbox/faults",
            json=[
                parse_fault_spec("update_giftcard:duplicate:copies=2"),
            ],
        )
        assert faults.json()["faults"][0]["kind"] == "duplicate"
        before = len(rx.received)
        async with AsyncClient(served.settings) as client:
            await client.update_giftcard(
                GiftCardUpdate(
                    entity_code="440",
                    barcode=demo.EXAMPLE_CARD,
                    amount=Decimal("-1.00"),
                    callback=f"{rx.url}/cb/dup/tok",
                    payload="dup",
                )
            )
        received = rx.wait_for(before + 2)[before:]
        assert [r.json()["payload"] for r in received] == ["dup", "dup"]
        card = (await http.get(f"/_sandbox/cards/{demo.EXAMPLE_CARD}")).json()
        assert card["operations"][-1]["payload"] == "dup"
        spent = await http.post(
            f"/_sandbox/cards/{demo.EXAMPLE_CARD}/spend", json={"amount": "1.50"}
        )
        assert spent.json()["success"] is True
        ledger = (
            await http.get("/_sandbox/operations", params={"barcode": demo.EXAMPLE_CARD})
        ).json()
        assert ledger["operations"][-1]["kind"] == "in_shop_spend"
        assert (await http.delete("/_sandbox/faults")).json()["faults"] == []
        bad = await http.post("/_sandbox/faults", json={"kind": "nope"})
        assert bad.status_code == 400


def test_reset_after_enqueue_over_a_real_socket(served: ServedSandbox) -> None:
    httpx.post(
        f"{served.url}/_sandbox/faults",
        json={"endpoint": "update_giftcard", "kind": "reset", "after_enqueue": True},
    )
    sb = served.sandbox
    before = len(sb.applied_operations(demo.EXAMPLE_CARD))
    with Client(served.settings) as client, pytest.raises(AmbiguousOutcomeError):
        client.update_giftcard(
            GiftCardUpdate(entity_code="440", barcode=demo.EXAMPLE_CARD, amount=Decimal("-2.00"))
        )
    assert [r.fault for r in sb.requests_to("update_giftcard")][-1] == "reset"
    httpx.post(f"{served.url}/_sandbox/process")
    assert len(sb.applied_operations(demo.EXAMPLE_CARD)) == before + 1


def test_hang_past_the_client_timeout(served: ServedSandbox) -> None:
    served.sandbox.faults.add_spec(parse_fault_spec("get_giftcard:hang:seconds=1.5,times=1"))
    settings = served.settings.model_copy(update={"read_timeout": 0.3})
    from fourws_pay.settings import RetryPolicy

    settings = settings.model_copy(update={"retry": RetryPolicy(max_attempts=1)})
    with Client(settings) as client, pytest.raises(ReadTimeout):
        client.get_giftcard(demo.EXAMPLE_CARD)


def test_pdf_url_is_served(served: ServedSandbox) -> None:
    with Client(served.settings) as client:
        pdf = client.giftcard_pdf([demo.EXAMPLE_CARD])
    assert pdf.url is not None
    assert pdf.url.startswith(served.url)
    document = httpx.get(pdf.url)
    assert document.headers["content-type"] == "application/pdf"
    assert document.content.startswith(b"%PDF")


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        start_in_thread(host="0.0.0.0")


def test_parse_fault_spec() -> None:
    assert parse_fault_spec("get_giftcard:rate_limited:seconds=2,times=3") == {
        "endpoint": "get_giftcard",
        "kind": "rate_limited",
        "seconds": 2.0,
        "times": 3,
    }
    assert parse_fault_spec("update_giftcard:http_status:status=503,after_enqueue=yes") == {
        "endpoint": "update_giftcard",
        "kind": "http_status",
        "status": 503,
        "after_enqueue": True,
    }
    with pytest.raises(ValueError):
        parse_fault_spec("hang")
    with pytest.raises(ValueError):
        parse_fault_spec("x:y:novalue")
    _ = json


def test_callback_before_response_over_http(served: ServedSandbox, rx: CallbackReceiver) -> None:
    served.sandbox.faults.add_spec(parse_fault_spec("update_giftcard:before_response"))
    before = len(rx.received)
    with Client(served.settings) as client:
        queued = client.update_giftcard(
            GiftCardUpdate(
                entity_code="440",
                barcode=demo.EXAMPLE_CARD,
                amount=Decimal("-1.00"),
                callback=f"{rx.url}/cb/early/tok",
                payload="early",
            )
        )
        # no waiting: the callback was delivered before the POST's answer was sent
        arrived = rx.received[before:]
    assert [r.json()["payload"] for r in arrived] == ["early"]
    assert served.sandbox.operations(demo.EXAMPLE_CARD)[-1].queue_id == queued.queue_id


def test_control_api_adds_cards(served: ServedSandbox) -> None:
    answer = httpx.post(
        f"{served.url}/_sandbox/cards",
        json={
            "barcode": "2000000099995",
            "amount": "12.00",
            "partial_usage": False,
            "expiration_date": "2099-01-01 00:00:00",
        },
    ).json()
    assert answer["giftcard"]["flgPartiallyUsage"] == "N"
    with Client(served.settings) as client:
        card = client.get_giftcard("2000000099995")
    assert card.amount == Decimal("12.00")
    assert card.expiration_date.year == 2099
    bad = httpx.post(f"{served.url}/_sandbox/cards", json={"amount": "x"})
    assert bad.status_code == 400
    missing = httpx.get(f"{served.url}/_sandbox/cards/0000000000000")
    assert missing.status_code == 404


def test_fault_tracebacks_are_not_logged(
    served: ServedSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.addHandler(caplog.handler)  # uvicorn's loggers do not propagate
    try:
        served.sandbox.faults.add_spec(parse_fault_spec("get_giftcard:reset:after_enqueue=false"))
        with Client(served.settings) as client:
            assert client.get_giftcard(demo.EXAMPLE_CARD).amount > 0  # retried
        assert served.sandbox.requests_to("get_giftcard")[-2].fault == "reset"
    finally:
        uvicorn_errors.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if r.name == "uvicorn.error"] == []
