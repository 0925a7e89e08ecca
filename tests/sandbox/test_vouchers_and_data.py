"""Loyalty vouchers (pagination, filters) and the Data management API (login, tokens,
barcodes) through the real client, sync and async."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from fourws_pay.clock import ManualClock
from fourws_pay.errors import AuthenticationError, NotFoundError, UniqueConstraintError
from fourws_pay.sandbox import Sandbox, sandbox_settings
from fourws_pay.sandbox import seed as demo
from fourws_pay.sandbox.ean import ean13_check_digit, is_valid_ean13, make_ean13

from .conftest import Either


async def test_customer_vouchers_all_pages(api: Either, sb: Sandbox) -> None:
    vouchers = await api.loyalty_vouchers(demo.LOYALTY_CARD)
    assert len(vouchers) == 25
    assert vouchers[0].barcode == "7000000000000017"
    assert str(vouchers[0].total_amount) == "330.18"
    assert len({v.id for v in vouchers}) == 25
    pages = [r for r in sb.requests_to("loyalty_vouchers")]
    assert len(pages) == 2


def test_voucher_page_shape_matches_reference(sb: Sandbox) -> None:
    with sb.client() as client, httpx.Client(transport=sb.transport()) as http:
        request = client.core.documents_request(
            "GET",
            sb.settings.cmd_loyalty_vouchers,
            {"cardBarcode": demo.LOYALTY_CARD, "pkFieldName": "identifier"},
        )
        first = http.send(request).json()
        request = client.core.documents_request(
            "GET",
            sb.settings.cmd_loyalty_vouchers,
            {"cardBarcode": demo.LOYALTY_CARD, "start": "20"},
        )
        second = http.send(request).json()
    assert first["success"] is True
    assert first["identifier"] == demo.LOYALTY_CARD
    assert first["validTicket"] == 2
    assert first["validSalesTotalAmount"] == 694
    assert first["moreRows"] is True
    assert len(first["valueObjectList"]) == 20
    assert first["valueObjectList"][0]["identifier"] == demo.LOYALTY_CARD
    assert second["moreRows"] is False
    assert len(second["valueObjectList"]) == 5
    documented = demo.documented_vouchers()[0]
    returned = {k: v for k, v in first["valueObjectList"][0].items() if k != "identifier"}
    assert returned == {**documented, "totalAmount": 330.18}


async def test_unknown_loyalty_card_has_no_vouchers(api: Either) -> None:
    assert await api.loyalty_vouchers("0099000009999") == []


async def test_vouchers_between_and_last(api: Either, sb: Sandbox) -> None:
    start = datetime(2021, 6, 1, tzinfo=UTC)
    end = datetime(2021, 7, 31, tzinfo=UTC)
    between = await api.loyalty_vouchers_between(start, end, card_barcode=demo.LOYALTY_CARD)
    assert [v.barcode for v in between] == [
        "7001150000011",
        "7001150000028",
        "7001150000042",
        "7001150000059",
        "7001150000066",
    ]
    recent = await api.last_loyalty_vouchers(sb.clock.now() - timedelta(days=3))
    assert len(recent) == 2  # created strictly after: the one made 3 days ago is out
    assert all(v.confirmation_date_order > sb.clock.now() - timedelta(days=3) for v in recent)


async def test_add_vouchers_and_status_filter(api: Either, sb: Sandbox) -> None:
    made = sb.add_vouchers("0099000005555", 3)
    made[0]["documentStatus"] = "CLOSE"  # the copy in the books is separate
    sb.add_vouchers("0099000005555", [{**made[1], "id": "closed", "documentStatus": "CLOSE"}])
    vouchers = await api.loyalty_vouchers("0099000005555")
    assert len(vouchers) == 3


async def test_hide_expired_vouchers_option(clock: ManualClock) -> None:
    sb = Sandbox(clock=clock, seed="demo", hide_expired_vouchers=True)
    with sb.client() as client:
        assert len(list(client.loyalty_vouchers(demo.LOYALTY_CARD))) == 7


# ------------------------------------------------------------------ data management


async def test_login_token_shape_and_expiry(api: Either, sb: Sandbox) -> None:
    token = await api.login()
    assert token.expires_in_ms == 285_000
    assert token.expires == sb.clock.now() + timedelta(milliseconds=285_000)
    assert token.site_id == "500"


def test_login_wire_body(sb: Sandbox) -> None:
    with httpx.Client(transport=sb.transport()) as http:
        ok = http.post(
            f"{sb.settings.data_url}{sb.settings.path_login}",
            json={"username": "sandbox", "password": "sandbox-password"},
        )
        bad = http.post(
            f"{sb.settings.data_url}{sb.settings.path_login}",
            json={"username": "sandbox", "password": "nope"},
        )
    body = ok.json()
    assert set(body) == {"username", "companyId", "siteId", "token", "expires", "expiresInMS"}
    assert body["expires"].endswith("Z")
    assert "T" in body["expires"]
    assert ok.cookies.get("fourws_session") == body["token"]
    assert bad.status_code == 401
    assert bad.json() == {"message": "Access Denied."}


def test_expired_token_gets_401_then_client_relogs(sb: Sandbox) -> None:
    clock = sb.clock
    assert isinstance(clock, ManualClock)
    with sb.client() as client:
        client.sku_from_barcode("3314254119515")
        sb.expire_tokens()
        assert client.sku_from_barcode("3314254119515").item_code == demo.PRODUCT
        clock.advance(300)  # past the 285 s lifetime: the client logs in again by itself
        assert client.sku_from_barcode("3314254119515").item_code == demo.PRODUCT
    statuses = [(r.endpoint, r.status) for r in sb.requests]
    assert statuses == [
        ("login", 200),
        ("sku_from_barcode", 200),
        ("sku_from_barcode", 401),
        ("login", 200),
        ("sku_from_barcode", 200),
        ("login", 200),
        ("sku_from_barcode", 200),
    ]


def test_data_call_without_token_is_denied(sb: Sandbox) -> None:
    with httpx.Client(transport=sb.transport()) as http:
        response = http.get(f"{sb.settings.data_url}/api/v1/barcodes/3314254119515")
        stale = http.get(
            f"{sb.settings.data_url}/api/v1/barcodes/3314254119515",
            headers={"Authorization": "Bearer made-up"},
        )
    assert response.status_code == 401
    assert response.json() == {"message": "Access Denied."}
    assert stale.status_code == 401


def test_wrong_data_password(sb: Sandbox) -> None:
    client = sb.client(settings=sandbox_settings(password="x"))
    with client, pytest.raises(AuthenticationError):
        client.sku_from_barcode("3314254119515")


async def test_insert_documented_example_then_duplicate(api: Either, sb: Sandbox) -> None:
    inserted = await api.insert_barcode(demo.PRODUCT, "8050200058081", dimensions=("1", "Y4"))
    assert inserted.barcode == "8050200058081"
    assert inserted.prog_id
    with pytest.raises(UniqueConstraintError) as info:
        await api.insert_barcode(demo.PRODUCT, "8050200058081", dimensions=("1", "Y4"))
    assert info.value.status_code == 422
    assert "already exists" in info.value.message
    sku = await api.sku_from_barcode("8050200058081")
    assert (sku.item_code, sku.dimension_level1, sku.dimension_level2) == (demo.PRODUCT, "1", "Y4")


async def test_insert_unknown_product_or_sku(api: Either) -> None:
    with pytest.raises(NotFoundError, match="Product not found with item_code: NOPE"):
        await api.insert_barcode("NOPE", "4006381333931")
    with pytest.raises(NotFoundError):
        await api.insert_barcode(demo.PRODUCT, "4006381333931", dimensions=("9", "Z"))


def test_duplicate_status_400_option(clock: ManualClock) -> None:
    sb = Sandbox(clock=clock, seed="demo", duplicate_barcode_status=400)
    with sb.client() as client, pytest.raises(UniqueConstraintError) as info:
        client.insert_barcode(demo.PRODUCT, "3314254119515", dimensions=("1", "Y4"))
    assert info.value.status_code == 400


async def test_sku_lookup_unknown(api: Either) -> None:
    with pytest.raises(NotFoundError):
        await api.sku_from_barcode("0000000000000")


async def test_delete_barcode_and_movements(api: Either, sb: Sandbox) -> None:
    from fourws_pay.errors import APIStatusError

    with pytest.raises(APIStatusError, match="already moved") as info:
        await api.delete_barcode(demo.PRODUCT, "3314254119515")
    assert info.value.status_code == 422
    await api.delete_barcode(demo.PRODUCT, "3314254119515", ignore_movements=True)
    with pytest.raises(NotFoundError):
        await api.sku_from_barcode("3314254119515")
    with pytest.raises(NotFoundError):
        await api.delete_barcode(demo.PRODUCT, "3314254119515")
    await api.insert_barcode(demo.PRODUCT, "4006381333931", dimensions=("XL", "RED"))
    await api.delete_barcode(demo.PRODUCT, "4006381333931")


async def test_generate_missing_barcodes(api: Either, sb: Sandbox) -> None:
    created = await api.generate_missing_barcodes(demo.PRODUCT)
    # (2, Y4) already has 3314254119515; (1, Y4) and (XL, RED) get one each
    assert len(created) == 2
    for item in created:
        assert is_valid_ean13(item.barcode)
    assert await api.generate_missing_barcodes(demo.PRODUCT) == []
    sb.add_product("SOCKS", skus=[("S",), ("M",)])
    one = await api.generate_missing_barcodes("SOCKS", dimensions={"dimension_level1": "M"})
    assert len(one) == 1
    assert (await api.sku_from_barcode(one[0].barcode)).dimension_level1 == "M"
    with pytest.raises(NotFoundError):
        await api.generate_missing_barcodes("NOPE")


def test_ean13_helpers() -> None:
    assert ean13_check_digit("400638133393") == "1"
    assert is_valid_ean13("4006381333931")
    assert not is_valid_ean13("4006381333932")
    assert not is_valid_ean13("400638133393")
    assert not is_valid_ean13("40063813339３1")
    assert is_valid_ean13(make_ean13("444", 42))
    assert not is_valid_ean13("8050200058081")  # the reference's own example is off
    with pytest.raises(ValueError):
        make_ean13("444", 10**10)
    with pytest.raises(ValueError):
        ean13_check_digit("12345")


def test_login_cookie_authenticates_like_the_bearer(sb: Sandbox) -> None:
    base = sb.settings.data_url
    with httpx.Client(transport=sb.transport()) as http:
        http.post(
            f"{base}{sb.settings.path_login}",
            json={"username": "sandbox", "password": "sandbox-password"},
        )
        assert http.cookies.get("fourws_session")
        by_cookie = http.get(f"{base}/api/v1/barcodes/3314254119515")
        sb.clock.advance(285)  # type: ignore[attr-defined]
        expired = http.get(f"{base}/api/v1/barcodes/3314254119515")
    assert by_cookie.status_code == 200
    assert by_cookie.json()["item_code"] == demo.PRODUCT
    assert expired.status_code == 401
