"""What goes on the wire, checked against the reference's curl examples."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from pydantic import ValidationError

from fourws_pay.api.models import GiftCardUpdate
from fourws_pay.errors import InvalidInputError
from fourws_pay.settings import Settings

from .endpoints import ACTIVATION, CONSUMPTION, INTERVAL, SINCE
from .fakes import (
    CALLBACK_URL,
    TOKEN,
    FakeFourWS,
    curl_placeholders,
    fixture_json,
    fixture_reply,
    fixture_text,
    json_reply,
    make_client,
    make_settings,
    parse_curl,
    parse_js_literal,
    query_items,
    substitute,
)

TRANSPORT_HEADERS = {"host", "content-length"}


def sent_headers(request: httpx.Request) -> list[tuple[str, str]]:
    """Headers as they go on the wire, with their exact case."""
    return [(k.decode(), v.decode()) for k, v in request.headers.raw]


def assert_matches_curl(request: httpx.Request, curl_fixture: str, settings: Settings) -> None:
    method, url, headers, _ = parse_curl(substitute(fixture_text(curl_fixture), {}))
    mapping = curl_placeholders(settings)
    assert request.method == method
    assert request.url.path == url.split("?")[0] or url.startswith("/api/v1/products//")
    documented_query = [(k, substitute(v, mapping)) for k, v in query_items(url)]
    assert query_items(request.url)[: len(documented_query)] == documented_query
    documented = [(k, substitute(v, mapping)) for k, v in headers]
    sent = sent_headers(request)
    for header in documented:
        assert header in sent, f"missing header {header[0]}"
    extra = {k.lower() for k, _ in sent} - {k.lower() for k, _ in documented}
    assert extra <= TRANSPORT_HEADERS


def normalized_body(body: dict[str, object]) -> dict[str, object]:
    """Codes are strings for us (the table says String; the examples send numbers)."""
    return {k: str(v) if k == "entityCode" else v for k, v in body.items()}


def test_update_giftcard_activation_matches_curl(fake: FakeFourWS) -> None:
    fake.on(fake.settings.cmd_update_giftcard, fixture_reply("update_giftcard_queued.json"))
    make_client(fake).update_giftcard(ACTIVATION)
    (request,) = fake.requests
    assert_matches_curl(request, "update_giftcard.curl.txt", fake.settings)
    assert request.headers["Content-Type"] == "text/plain"
    body = json.loads(request.content, parse_float=Decimal)  # strict JSON, a valid JS literal too
    documented = parse_js_literal(parse_curl(fixture_text("update_giftcard.curl.txt"))[3] or "")
    documented["callback"] = CALLBACK_URL
    assert normalized_body(body) == normalized_body(documented)
    # activationDate is converted to UTC (the example's 12:00+02:00 is 10:00 GMT)
    assert body["activationDate"] == "2021-08-31 10:00:00"
    assert b'"amount":100.00' in request.content


@pytest.mark.parametrize(
    "fixture",
    ["update_giftcard_activation.txt", "update_giftcard_body_params.txt"],
)
def test_activation_body_matches_published_literals(fake: FakeFourWS, fixture: str) -> None:
    fake.on(fake.settings.cmd_update_giftcard, fixture_reply("update_giftcard_queued.json"))
    make_client(fake).update_giftcard(ACTIVATION)
    body = json.loads(fake.requests[0].content, parse_float=Decimal)
    documented = parse_js_literal(fixture_text(fixture))
    documented.setdefault("callback", CALLBACK_URL)
    documented["callback"] = CALLBACK_URL
    assert normalized_body(body) == normalized_body(documented)


@pytest.mark.parametrize(
    "fixture", ["update_giftcard_consumption.txt", "update_giftcard_request_usecase.json"]
)
def test_consumption_body_matches_published_examples(fake: FakeFourWS, fixture: str) -> None:
    fake.on(fake.settings.cmd_update_giftcard, fixture_reply("update_giftcard_queued.json"))
    update = GiftCardUpdate(entity_code="440", barcode="0098260111383", amount=Decimal("-50.00"))
    make_client(fake).update_giftcard(update)
    (request,) = fake.requests
    assert_matches_curl(request, "update_giftcard.curl.txt", fake.settings)
    assert request.content == b'{"entityCode":"440","barcode":"0098260111383","amount":-50.00}'
    documented = parse_js_literal(fixture_text(fixture))
    assert normalized_body(json.loads(request.content, parse_float=Decimal)) == (
        normalized_body(documented)
    )


def test_update_body_never_sends_null_or_insert_only_fields_on_consumption(
    fake: FakeFourWS,
) -> None:
    fake.on(fake.settings.cmd_update_giftcard, fixture_reply("update_giftcard_queued.json"))
    make_client(fake).update_giftcard(CONSUMPTION)
    body = json.loads(fake.requests[0].content)
    assert b"null" not in fake.requests[0].content
    assert set(body) == {"entityCode", "barcode", "amount", "callback", "payload"}
    assert body["payload"] == {"operation": "op-42"}


@pytest.mark.parametrize("payload", [{"x": 1.5}, {"when": datetime(2021, 1, 1)}, {1, 2}])
def test_unsendable_payload_is_refused_when_built(payload: object) -> None:
    with pytest.raises(ValidationError, match="payload must be JSON"):
        GiftCardUpdate(
            entity_code="440", barcode="0098260111383", amount=Decimal("-5"), payload=payload
        )


def test_request_validation_errors_do_not_echo_inputs() -> None:
    with pytest.raises(ValidationError) as info:
        GiftCardUpdate(
            entity_code="440",
            barcode="0098260111383",
            amount=Decimal("-5.001"),
            callback=CALLBACK_URL,
        )
    text = str(info.value) + repr(info.value)
    assert "0098260111383" not in text
    assert CALLBACK_URL.rsplit("/", 1)[1] not in text


def test_insert_only_fields_are_refused_on_consumption() -> None:
    with pytest.raises(ValidationError, match="insert-only"):
        GiftCardUpdate(
            entity_code="440", barcode="0098260111383", amount=Decimal("-5.00"), currency="EUR"
        )


@pytest.mark.parametrize(
    ("amount", "wire"),
    [
        (Decimal("-50.00"), b'"amount":-50.00'),
        (Decimal("-0.01"), b'"amount":-0.01'),
        (Decimal("1E+2"), b'"amount":100'),
        (Decimal("330.18"), b'"amount":330.18'),
        ("-12.30", b'"amount":-12.30'),
    ],
)
def test_amounts_are_written_exactly(fake: FakeFourWS, amount: object, wire: bytes) -> None:
    fake.on(fake.settings.cmd_update_giftcard, fixture_reply("update_giftcard_queued.json"))
    make_client(fake).update_giftcard(
        GiftCardUpdate(entity_code="440", barcode="0098260111383", amount=amount)
    )
    assert wire in fake.requests[0].content


def test_update_content_type_is_configurable() -> None:
    fake = FakeFourWS(make_settings(update_giftcard_content_type="application/json"))
    fake.on(fake.settings.cmd_update_giftcard, fixture_reply("update_giftcard_queued.json"))
    make_client(fake).update_giftcard(CONSUMPTION)
    assert fake.requests[0].headers["Content-Type"] == "application/json"


def test_generate_giftcards_matches_curl(fake: FakeFourWS) -> None:
    fake.on(fake.settings.cmd_generate_giftcards, fixture_reply("generate_giftcards_queued.json"))
    callback = "https://webhook.site/9b012812-2164-43ea-ba24-7c518acd510d"
    make_client(fake).generate_giftcards("GIFTCARD_IVA_TAGLIO_100", 5, callback)
    (request,) = fake.requests
    assert_matches_curl(request, "generate_giftcards.curl.txt", fake.settings)
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == fixture_json("generate_giftcards_request.json")
    assert json.loads(parse_curl(fixture_text("generate_giftcards.curl.txt"))[3] or "") == (
        json.loads(request.content)
    )


def test_loyalty_vouchers_matches_curl(fake: FakeFourWS) -> None:
    fake.on(fake.settings.cmd_loyalty_vouchers, fixture_reply("loyalty_vouchers_success.json"))
    list(make_client(fake).loyalty_vouchers("0099000001209", pk_field_name="identifier"))
    (request,) = fake.requests
    assert_matches_curl(request, "loyalty_vouchers.curl.txt", fake.settings)
    assert request.content == b""
    assert "Content-Type" not in request.headers
    # exactly the documented query, in the documented order (no start on the first page)
    _method, url, _, _ = parse_curl(fixture_text("loyalty_vouchers.curl.txt"))
    mapping = curl_placeholders(fake.settings)
    assert query_items(request.url) == [(k, substitute(v, mapping)) for k, v in query_items(url)]


def test_get_giftcard_request(fake: FakeFourWS) -> None:
    """Not shown by the reference: standard headers (as the loyalty curl) + barcode."""
    fake.on(fake.settings.cmd_get_giftcard, fixture_reply("get_giftcard_success.json"))
    make_client(fake).get_giftcard("2000000001814")
    (request,) = fake.requests
    assert request.method == "GET"
    assert request.url.path == "/api"
    assert query_items(request.url) == [
        ("cmd", "getGiftcard_v1"),
        ("applicationId", "APP-ID-1"),
        ("appId", "APP-ID-1"),
        ("barcode", "2000000001814"),
    ]
    assert [h for h in sent_headers(request) if h[0] != "Host"] == [
        ("applicationId", "APP-ID-1"),
        ("appId", "APP-ID-1"),
        ("namespace", "NS1"),
        ("languageId", "IT"),
        ("username", "api.user"),
        ("password", fake.settings.password.get_secret_value()),
        ("companyId", "XXXX"),
        ("siteId", "500"),
        ("loadRoles", "Y"),
    ]


def test_load_roles_can_be_turned_off() -> None:
    fake = FakeFourWS(make_settings(load_roles=False))
    fake.on(fake.settings.cmd_get_giftcard, fixture_reply("get_giftcard_success.json"))
    make_client(fake).get_giftcard("2000000001814")
    assert "loadRoles" not in fake.requests[0].headers


def test_wire_names_come_from_settings() -> None:
    fake = FakeFourWS(
        make_settings(
            cmd_get_giftcard="getGiftCard_v9",
            param_giftcard_barcode="cardBarcode",
            documents_base_url="https://docs.example/prefix/",
        )
    )
    fake.on("getGiftCard_v9", fixture_reply("get_giftcard_success.json"))
    make_client(fake).get_giftcard("2000000001814")
    request = fake.requests[0]
    assert str(request.url).startswith("https://docs.example/prefix/api?cmd=getGiftCard_v9&")
    assert ("cardBarcode", "2000000001814") in query_items(request.url)


def test_insert_barcode_matches_curl(fake: FakeFourWS) -> None:
    fake.on(
        "POST /api/v1/products/ITEM7/barcodes", fixture_reply("dm_insert_barcode_response.json")
    )
    make_client(fake).insert_barcode("ITEM7", "8050200058081", dimensions=("1", "Y4"))
    login, request = fake.requests
    assert login.url.path == "/api/v1/login"
    # the published curl has an empty {ITEM_CODE} segment; ours carries the code
    method, url, headers, data = parse_curl(fixture_text("dm_insert_barcode.curl.txt"))
    assert request.method == method
    assert request.url.path == url.replace("//", "/ITEM7/")
    mapping = {"<token>": f"{TOKEN}-1"}
    for header in [(k, substitute(v, mapping)) for k, v in headers]:
        assert header in sent_headers(request)
    assert json.loads(request.content) == json.loads(data or "")
    assert json.loads(request.content) == fixture_json("dm_insert_barcode_request.json")


def test_login_request(fake: FakeFourWS) -> None:
    make_client(fake).login()
    (request,) = fake.requests
    assert (request.method, str(request.url)) == ("POST", "https://tenant.example/api/v1/login")
    assert json.loads(request.content) == {
        "username": "api.user",
        "password": fake.settings.password.get_secret_value(),
    }
    assert request.headers["Content-Type"] == "application/json"
    assert "Authorization" not in request.headers


def test_data_management_calls(fake: FakeFourWS) -> None:
    fake.on(
        "GET /api/v1/barcodes/8050200058081",
        json_reply({"success": True, "item_code": "ITEM7", "dimension_level1": "1"}),
    )
    fake.on("DELETE /api/v1/products/ITEM7/barcodes/8050200058081", json_reply({}, 200))
    fake.on("POST /api/v1/products/ITEM7/barcodes/generate", json_reply({"barcodes": []}))
    client = make_client(fake)
    assert client.sku_from_barcode("8050200058081").item_code == "ITEM7"
    client.delete_barcode("ITEM7", "8050200058081")
    client.delete_barcode("ITEM7", "8050200058081", ignore_movements=True)
    assert client.generate_missing_barcodes("ITEM7", dimensions={"dimension_level1": "XL"}) == []
    _login, sku, delete, forced, generate = fake.requests
    assert fake.logins == 1
    for request in (sku, delete, forced, generate):
        assert request.headers["Authorization"] == f"Bearer {TOKEN}-1"
        assert request.url.host == "tenant.example"
    assert (sku.method, delete.method, generate.method) == ("GET", "DELETE", "POST")
    assert query_items(delete.url) == []
    assert query_items(forced.url) == [("ignore_movements", "true")]
    assert json.loads(generate.content) == {"dimension_level1": "XL"}


def test_data_base_url_is_separate() -> None:
    fake = FakeFourWS(make_settings(data_base_url="https://data.example"))
    fake.on("GET /api/v1/barcodes/123456789", json_reply({"item_code": "I"}))
    make_client(fake).sku_from_barcode("123456789")
    assert {r.url.host for r in fake.requests} == {"data.example"}


@pytest.mark.parametrize("bad", ["", "  ", "a/b", "..", "x\ny", "x" * 300])
def test_bad_codes_are_refused_before_sending(fake: FakeFourWS, bad: str) -> None:
    client = make_client(fake)
    with pytest.raises(InvalidInputError):
        client.delete_barcode(bad, "8050200058081")
    with pytest.raises(InvalidInputError):
        client.sku_from_barcode(bad)
    assert fake.requests == []


def test_interval_and_last_voucher_queries(fake: FakeFourWS) -> None:
    s = fake.settings
    fake.on(s.cmd_loyalty_vouchers_between, fixture_reply("loyalty_vouchers_success.json"))
    fake.on(s.cmd_last_loyalty_vouchers, fixture_reply("loyalty_vouchers_success.json"))
    client = make_client(fake)
    list(client.loyalty_vouchers_between(*INTERVAL, card_barcode="0099000001209"))
    list(client.last_loyalty_vouchers(SINCE))
    between, last = fake.requests
    assert query_items(between.url)[3:] == [
        ("startDate", "2021-03-01 00:00:00"),
        ("endDate", "2021-09-01 00:30:00"),  # 02:30+02:00 in GMT
        ("cardBarcode", "0099000001209"),
    ]
    assert query_items(last.url)[3:] == [("fromDateTime", "2021-03-17 10:42:52")]


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.loyalty_vouchers_between(datetime(2021, 1, 1), datetime(2021, 2, 1)),
        lambda c: c.loyalty_vouchers_between(
            datetime(2021, 2, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC)
        ),
        lambda c: c.last_loyalty_vouchers(datetime(2021, 1, 1)),
        lambda c: c.loyalty_vouchers(""),
        lambda c: c.giftcard_pdf([]),
        lambda c: c.giftcard_pdf("2000000001814"),
        lambda c: c.generate_giftcards("ITEM", 0, "https://h/cb"),
        lambda c: c.generate_giftcards("ITEM", True, "https://h/cb"),
        lambda c: c.generate_giftcards("ITEM", "5", "https://h/cb"),
        lambda c: c.insert_barcode("ITEM", "123", dimensions=["1"] * 6),
        lambda c: c.update_giftcard({"barcode": "1"}),
        lambda c: c.get_giftcard(None),
    ],
)
def test_invalid_calls_raise_invalid_input_and_send_nothing(fake: FakeFourWS, call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError):
        call(make_client(fake))
    assert fake.requests == []


def test_non_ascii_credentials_are_sent_as_utf8() -> None:
    fake = FakeFourWS(make_settings(password="pässwört€", username="zoë"))
    fake.on(fake.settings.cmd_get_giftcard, fixture_reply("get_giftcard_success.json"))
    make_client(fake).get_giftcard("2000000001814")
    raw = dict(fake.requests[0].headers.raw)
    assert raw[b"password"] == "pässwört€".encode()
    assert raw[b"username"] == "zoë".encode()
