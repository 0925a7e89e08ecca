"""HTTP statuses and bodies become typed errors that carry what callers need, no secrets."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime as http_date

import pytest

from fourws_pay.clock import ManualClock
from fourws_pay.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    FourWSError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    UniqueConstraintError,
)

from .endpoints import CONSUMPTION
from .fakes import (
    CALLBACK_SECRET,
    PASSWORD,
    TOKEN,
    FakeFourWS,
    json_reply,
    make_client,
    make_settings,
    raw_reply,
)

CARD = "2000000001814"
PRODUCT = "8050200058081"

STATUS_CASES = [
    (400, {"message": "Bad request"}, BadRequestError),
    (401, {"message": "Access Denied."}, AuthenticationError),
    (403, {"message": "Operation not allowed"}, PermissionDeniedError),
    (404, {"message": "Product not found with item_code: ITEM"}, NotFoundError),
    (409, {"message": "Conflict"}, APIStatusError),
    (422, {}, UniqueConstraintError),
    (422, {"message": "Error - barcode exists"}, UniqueConstraintError),
    (400, {"message": f"Unique constraint error, this barcode {PRODUCT} already exists"},
     UniqueConstraintError),
    (409, {"message": "unique constraint violated"}, UniqueConstraintError),
    (429, {"message": "slow down"}, RateLimitedError),
    (500, {"message": "boom"}, ServerError),
    (502, {}, ServerError),
    (503, {"message": "maintenance"}, ServerError),
    (504, {}, ServerError),
    (599, {}, ServerError),
]  # fmt: skip


def no_retries(**overrides: object) -> FakeFourWS:
    return FakeFourWS(make_settings(retry={"max_attempts": 1}, **overrides))


@pytest.mark.parametrize(("status", "body", "error"), STATUS_CASES)
def test_documents_statuses(status: int, body: dict[str, str], error: type[Exception]) -> None:
    fake = no_retries()
    fake.on(fake.settings.cmd_get_giftcard, json_reply(body, status))
    with pytest.raises(error) as info:
        make_client(fake).get_giftcard(CARD)
    assert type(info.value) is error
    assert info.value.status_code == status
    assert info.value.endpoint == "get_giftcard"
    assert info.value.message  # from the body, or the reason phrase
    if "message" in body:
        assert info.value.message.replace("*********8081", PRODUCT) == body["message"]


@pytest.mark.parametrize(("status", "body", "error"), STATUS_CASES)
def test_data_management_statuses(
    status: int, body: dict[str, str], error: type[Exception]
) -> None:
    fake = no_retries()
    route = "POST /api/v1/products/ITEM/barcodes"
    fake.on(route, json_reply(body, status))
    with pytest.raises(error) as info:
        make_client(fake).insert_barcode("ITEM", PRODUCT)
    assert info.value.status_code == status
    expected_sends = 2 if status == 401 else 1  # a 401 on a bearer call re-logs in once
    assert len(fake.sent(route)) == expected_sends


def test_status_error_without_json_body_uses_the_reason_phrase() -> None:
    fake = no_retries()
    fake.on(fake.settings.cmd_get_giftcard, raw_reply(b"<html>Bad Gateway</html>", 502))
    with pytest.raises(ServerError) as info:
        make_client(fake).get_giftcard(CARD)
    assert info.value.message == "Bad Gateway"


def test_rate_limited_retry_after_seconds() -> None:
    fake = no_retries()
    fake.on(fake.settings.cmd_get_giftcard, json_reply({}, 429, {"Retry-After": "17"}))
    with pytest.raises(RateLimitedError) as info:
        make_client(fake).get_giftcard(CARD)
    assert info.value.retry_after == 17.0
    assert info.value.status_code == 429


def test_rate_limited_retry_after_http_date() -> None:
    clock = ManualClock()
    fake = no_retries()
    when = http_date(clock.now() + timedelta(seconds=90), usegmt=True)
    fake.on(fake.settings.cmd_get_giftcard, json_reply({}, 429, {"Retry-After": when}))
    with pytest.raises(RateLimitedError) as info:
        make_client(fake, clock=clock).get_giftcard(CARD)
    assert info.value.retry_after == 90.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "Wed, 01 Jan 2026 12:00:30 -0000"}, 30.0),  # zone-less HTTP date
        ({"Retry-After": "Thu, 01 Jan 2026 11:00:00 GMT"}, 0.0),  # in the past
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, 0.0),
        ({"X-RateLimit-Reset": "12"}, 12.0),
        ({"RateLimit-Reset": "5"}, 5.0),
        ({"X-RateLimit-Reset": str(1767268800 + 40)}, 40.0),  # an epoch timestamp
        ({}, None),
    ],
)
def test_retry_after_forms(headers: dict[str, str], expected: float | None) -> None:
    fake = no_retries()
    fake.on(fake.settings.cmd_update_giftcard, json_reply({}, 429, headers))
    with pytest.raises(RateLimitedError) as info:
        make_client(fake, clock=ManualClock()).update_giftcard(CONSUMPTION)
    assert info.value.retry_after == expected


# ---------------------------------------------------------------------------- hygiene


def secrets_in(text: str) -> list[str]:
    found = [s for s in (PASSWORD, TOKEN, CALLBACK_SECRET, CARD, PRODUCT) if s in text]
    return found


@pytest.mark.parametrize(
    "body",
    [
        {"message": f"barcode {CARD} not found"},
        {"message": f"Unique constraint error, this barcode {PRODUCT} already exists"},
        {"message": f"wrong password {PASSWORD} for user"},
        {"message": f"token {TOKEN}-1 expired"},
        {"message": f"cannot call https://shop.example/cb/op/{CALLBACK_SECRET}"},
        {"success": False, "message": f"barcode {CARD} not found"},
    ],
)
@pytest.mark.parametrize("status", [200, 400, 401, 404, 422, 429, 500])
def test_errors_never_carry_secrets(body: dict[str, object], status: int) -> None:
    """Even when 4WS echoes a secret or a full barcode, our exception text masks it."""
    fake = no_retries()
    fake.on(fake.settings.cmd_get_giftcard, json_reply(body, status))
    fake.on("POST /api/v1/products/ITEM/barcodes", json_reply(body, status))
    client = make_client(fake)
    # the bearer call first: a token is only ours once we have logged in
    for call in (lambda: client.insert_barcode("ITEM", PRODUCT), lambda: client.get_giftcard(CARD)):
        if status == 200 and "success" not in body:
            continue
        with pytest.raises(FourWSError) as info:
            call()
        texts = [str(info.value), repr(info.value), str(info.value.args)]
        texts += [str(getattr(info.value, "message", ""))]
        assert secrets_in(" ".join(texts)) == []


def test_masked_barcode_remains_readable() -> None:
    fake = no_retries()
    fake.on(fake.settings.cmd_get_giftcard, json_reply({"message": f"barcode {CARD} gone"}, 404))
    with pytest.raises(NotFoundError) as info:
        make_client(fake).get_giftcard(CARD)
    assert info.value.message == "barcode *********1814 gone"
