"""The wire quirks the reference documents, absorbed by the field types and envelopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from fourws_pay.api.fields import format_datetime, parse_code, parse_datetime, parse_flag
from fourws_pay.api.models import GiftCard, LoyaltyVoucher, VoucherPage, VoucherStatus
from fourws_pay.errors import APIFailure, MalformedResponseError

from .fakes import FakeFourWS, fixture_json, json_reply, make_client, make_settings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Y", True),
        ("N", False),
        ("y", True),
        (" n ", False),
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("", False),
    ],
)
def test_flags(raw: Any, expected: bool) -> None:
    assert parse_flag(raw) is expected


@pytest.mark.parametrize("raw", ["maybe", 2, None, [], {}, Decimal("1.5")])
def test_bad_flags_are_errors(raw: Any) -> None:
    with pytest.raises(ValueError):
        parse_flag(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2021-10-04 00:00:00", datetime(2021, 10, 4, tzinfo=UTC)),
        ("2021-03-17 10:42:52", datetime(2021, 3, 17, 10, 42, 52, tzinfo=UTC)),
        ("2024-06-06T13:15:59.267Z", datetime(2024, 6, 6, 13, 15, 59, 267000, tzinfo=UTC)),
        ("2024-06-06T15:15:59+02:00", datetime(2024, 6, 6, 13, 15, 59, tzinfo=UTC)),
        ("", None),
        (None, None),
    ],
)
def test_datetimes_are_aware_utc(raw: Any, expected: datetime | None) -> None:
    parsed = parse_datetime(raw)
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "raw",
    [
        "04/10/2021",
        "yesterday",
        1633305600,
        "2021-13-01 00:00:00",
        "9999-12-31T23:59:59-01:00",  # beyond datetime.max once in UTC
        "0001-01-01T00:00:00+01:00",
    ],
)
def test_bad_datetimes_are_errors(raw: Any) -> None:
    with pytest.raises(ValueError):
        parse_datetime(raw)


def test_datetimes_are_written_in_gmt() -> None:
    rome = timezone(timedelta(hours=2))
    assert format_datetime(datetime(2021, 8, 31, 12, 0, tzinfo=rome)) == "2021-08-31 10:00:00"
    with pytest.raises(ValueError):
        format_datetime(datetime(2021, 8, 31, 12, 0))


@pytest.mark.parametrize(
    ("raw", "expected"), [(440, "440"), ("440", "440"), ("0440", "0440"), (Decimal("1150"), "1150")]
)
def test_codes_as_str_or_int(raw: Any, expected: str) -> None:
    assert parse_code(raw) == expected


@pytest.mark.parametrize("raw", [True, Decimal("1.5"), None, [1]])
def test_bad_codes(raw: Any) -> None:
    with pytest.raises(ValueError):
        parse_code(raw)


def card(**changes: Any) -> dict[str, Any]:
    body = dict(fixture_json("get_giftcard_success.json")["giftcard"])
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("390", Decimal("390")),
        ("12.345", Decimal("12.345")),
        (" 7.10 ", Decimal("7.10")),
        (Decimal("330.18"), Decimal("330.18")),
        (0.1, Decimal("0.1")),  # a float from a foreign parser keeps its shortest repr
        (12, Decimal(12)),
    ],
)
def test_amounts_as_numbers_or_strings(raw: Any, expected: Decimal) -> None:
    parsed = GiftCard.model_validate(card(amount=raw))
    assert parsed.amount == expected
    assert isinstance(parsed.amount, Decimal)
    assert str(parsed.amount) == str(expected)


@pytest.mark.parametrize(
    "raw", ["abc", "NaN", "Infinity", True, None, [], "", "1e18", Decimal("-1E+400")]
)
def test_bad_amounts_do_not_parse(raw: Any) -> None:
    with pytest.raises(ValidationError):
        GiftCard.model_validate(card(amount=raw))


def test_codes_and_flags_in_a_card() -> None:
    parsed = GiftCard.model_validate(
        card(entityCode="440", siteId=500, branchCode="1", flgActive=True, flgPartiallyUsage="N")
    )
    assert (parsed.entity_code, parsed.site_id, parsed.branch_code) == ("440", "500", "1")
    assert parsed.flg_active is True
    assert parsed.flg_partially_usage is False


def test_missing_flags_take_the_safe_defaults() -> None:
    body = card()
    for key in ("flgActive", "flgNetworkUsage", "flgPartiallyUsage", "decimalNumber"):
        del body[key]
    parsed = GiftCard.model_validate(body)
    assert parsed.flg_active is False  # not known active -> not active
    assert parsed.decimal_number == 2


@pytest.mark.parametrize(("raw", "expected"), [("2", 2), (Decimal(3), 3), ("", 2), (None, 2)])
def test_decimal_number_forms(raw: Any, expected: int) -> None:
    assert GiftCard.model_validate(card(decimalNumber=raw)).decimal_number == expected


@pytest.mark.parametrize("raw", [-1, 9, "x", "1.5"])
def test_bad_decimal_number(raw: Any) -> None:
    with pytest.raises(ValidationError):
        GiftCard.model_validate(card(decimalNumber=raw))


def voucher(**changes: Any) -> dict[str, Any]:
    body = dict(fixture_json("loyalty_vouchers_success.json")["valueObjectList"][1])
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("OPEN", VoucherStatus.OPEN),
        ("CLOSE", VoucherStatus.CLOSE),
        ("ACTIVE", VoucherStatus.ACTIVE),
        ("active", VoucherStatus.ACTIVE),
        ("EXPIRED", VoucherStatus.UNKNOWN),
        ("", VoucherStatus.UNKNOWN),
        (None, VoucherStatus.UNKNOWN),
        (7, VoucherStatus.UNKNOWN),
    ],
)
def test_document_status(raw: Any, expected: VoucherStatus) -> None:
    assert LoyaltyVoucher.model_validate(voucher(documentStatus=raw)).document_status is expected


def test_voucher_usability_checks_end_validity() -> None:
    v = LoyaltyVoucher.model_validate(voucher())  # endValidity 2021-04-24 10:39:00
    assert v.is_usable(datetime(2021, 4, 24, 10, 38, tzinfo=UTC))
    assert not v.is_usable(datetime(2021, 4, 24, 10, 39, tzinfo=UTC))
    closed = LoyaltyVoucher.model_validate(voucher(documentStatus="CLOSE"))
    assert not closed.is_usable(datetime(2021, 4, 1, tzinfo=UTC))


@pytest.mark.parametrize(("raw", "expected"), [("Y", True), ("N", False), (True, True)])
def test_more_rows_forms(raw: Any, expected: bool) -> None:
    assert VoucherPage.model_validate({"moreRows": raw}).more_rows is expected


@pytest.mark.parametrize(
    "body",
    [
        {"success": False, "message": "barcode not found"},
        {"success": False},
    ],
)
def test_success_false_under_200_is_api_failure(fake: FakeFourWS, body: dict[str, Any]) -> None:
    fake.on(fake.settings.cmd_get_giftcard, json_reply(body, 200))
    with pytest.raises(APIFailure) as info:
        make_client(fake).get_giftcard("2000000001814")
    assert info.value.message == body.get("message", "4WS reported a failure")
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"giftcard": card()},  # no success at all
        {"success": "true", "giftcard": card()},  # a string is not True
        {"success": 1, "giftcard": card()},
        {"success": None, "giftcard": card()},
        {"success": True},  # no giftcard
        {"success": True, "giftcard": "2000000001814"},
        [1, 2],
    ],
)
def test_missing_or_odd_success_is_malformed(fake: FakeFourWS, body: Any) -> None:
    fake.settings = make_settings(retry={"max_attempts": 1})
    fake.on(fake.settings.cmd_get_giftcard, json_reply(body, 200))
    with pytest.raises(MalformedResponseError):
        make_client(fake).get_giftcard("2000000001814")


@pytest.mark.parametrize(
    "content", [b"", b"not json", b'{"success": true, "giftcard": {', b"\xff\xfe", b"NaN"]
)
def test_unreadable_bodies_are_malformed(fake: FakeFourWS, content: bytes) -> None:
    from .fakes import raw_reply

    fake.settings = make_settings(retry={"max_attempts": 1})
    fake.on(fake.settings.cmd_get_giftcard, raw_reply(content))
    with pytest.raises(MalformedResponseError):
        make_client(fake).get_giftcard("2000000001814")


@pytest.mark.parametrize(
    "content",
    [
        b'{"success": true, "token": "t", "expiresInMS": 1E+10000000}',
        b'{"success": true, "token": "t", "siteId": 1E+10000000}',
        b'{"success": true, "token": "t", "expires": "x", "n": -1e-10000000}',
    ],
)
def test_absurd_exponents_are_refused_quickly(content: bytes) -> None:
    """A dozen bytes must not cost seconds of CPU (int() of 10**10000000)."""
    import time

    from .fakes import raw_reply

    fake = FakeFourWS(make_settings(retry={"max_attempts": 1}))
    fake.on(fake.login_route, raw_reply(content))
    started = time.perf_counter()
    with pytest.raises(MalformedResponseError):
        make_client(fake).login()
    assert time.perf_counter() - started < 1.0


def test_huge_integral_code_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_code(Decimal("1E+10000000"))


@pytest.mark.parametrize(("raw", "expected"), [("abc-1", "abc-1"), (12345, "12345")])
def test_queue_id_as_str_or_int(raw: Any, expected: str) -> None:
    from fourws_pay.api.models import QueuedOperation

    assert QueuedOperation.model_validate({"queueId": raw}).queue_id == expected


@pytest.mark.parametrize("raw", [True, 1.5, []])
def test_bad_queue_ids(raw: Any) -> None:
    from fourws_pay.api.models import QueuedOperation

    with pytest.raises(ValidationError):
        QueuedOperation.model_validate({"queueId": raw})


@pytest.mark.parametrize("body", [{}, {"queueId": None}, {"queueId": ""}, {"queueId": "  "}])
def test_enqueued_without_a_queue_id(body: dict[str, Any]) -> None:
    """``success: true`` means enqueued; the id is optional (none is shown for activation)."""
    from fourws_pay.api.models import QueuedOperation

    assert QueuedOperation.model_validate(body).queue_id is None


def test_ids_and_cosmetic_codes_may_be_numbers() -> None:
    """A number where the example has a string must not make a whole card or page unusable."""
    from fourws_pay.api.models import LoginToken, UpdateGiftCardResult

    assert GiftCard.model_validate(card(id=42, taxation=0)).id == "42"
    assert LoyaltyVoucher.model_validate(voucher(id=7)).id == "7"
    assert LoginToken.model_validate({"token": "t", "username": 1001}).username == "1001"
    assert UpdateGiftCardResult.model_validate({"success": True, "id": 9}).id == "9"
