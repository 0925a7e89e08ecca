"""The Data management bearer token: cached, refreshed before expiry, re-fetched once on 401."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fourws_pay.clock import ManualClock
from fourws_pay.errors import AuthenticationError, MalformedResponseError

from .fakes import (
    PASSWORD,
    TOKEN,
    FakeFourWS,
    json_reply,
    login_body,
    make_async_client,
    make_client,
    make_settings,
)

SKU = "GET /api/v1/barcodes/8050200058081"


def sku_ok() -> object:
    return json_reply({"item_code": "ITEM"})


def bearer(fake: FakeFourWS) -> list[str]:
    return [r.headers["Authorization"] for r in fake.sent(SKU)]


def test_first_call_logs_in_and_second_reuses_the_token(fake: FakeFourWS) -> None:
    fake.on(SKU, sku_ok())
    client = make_client(fake)
    client.sku_from_barcode("8050200058081")
    client.sku_from_barcode("8050200058081")
    assert fake.logins == 1
    assert [fake.route_of(r) for r in fake.requests] == [fake.login_route, SKU, SKU]
    assert bearer(fake) == [f"Bearer {TOKEN}-1"] * 2


def test_explicit_login_is_cached(fake: FakeFourWS) -> None:
    fake.on(SKU, sku_ok())
    client = make_client(fake)
    token = client.login()
    assert TOKEN not in repr(token)
    assert PASSWORD not in repr(client.settings)
    client.sku_from_barcode("8050200058081")
    assert fake.logins == 1


@pytest.mark.parametrize(
    ("lifetime_ms", "margin", "reused_until"),
    [(285_000, 30.0, 255.0), (285_000, 100.0, 185.0), (60_000, 0.0, 60.0)],
)
def test_token_is_refreshed_before_expiry(
    lifetime_ms: int, margin: float, reused_until: float
) -> None:
    fake = FakeFourWS(make_settings(token_refresh_margin=margin))
    fake.on(fake.login_route, json_reply(login_body(f"{TOKEN}-a", lifetime_ms)))
    fake.on(SKU, sku_ok())
    clock = ManualClock()
    client = make_client(fake, clock=clock)
    client.sku_from_barcode("8050200058081")
    clock.advance(reused_until - 1)
    client.sku_from_barcode("8050200058081")
    assert fake.logins == 1
    clock.advance(1.5)
    client.sku_from_barcode("8050200058081")
    assert fake.logins == 2


def test_expiry_from_expires_when_no_expires_in_ms() -> None:
    clock = ManualClock()
    fake = FakeFourWS(make_settings())
    body = login_body(expires_in_ms=None)
    body["expires"] = (clock.now() + timedelta(seconds=120)).isoformat().replace("+00:00", "Z")
    fake.on(fake.login_route, json_reply(body))
    fake.on(SKU, sku_ok())
    client = make_client(fake, clock=clock)
    client.sku_from_barcode("8050200058081")
    clock.advance(89)  # 120 s - 30 s margin
    client.sku_from_barcode("8050200058081")
    assert fake.logins == 1
    clock.advance(2)
    client.sku_from_barcode("8050200058081")
    assert fake.logins == 2


def test_unknown_lifetime_is_short() -> None:
    clock = ManualClock()
    fake = FakeFourWS(make_settings(token_refresh_margin=0))
    body = login_body(expires_in_ms=None)
    del body["expires"]
    fake.on(fake.login_route, json_reply(body))
    fake.on(SKU, sku_ok())
    client = make_client(fake, clock=clock)
    client.sku_from_barcode("8050200058081")
    clock.advance(61)
    client.sku_from_barcode("8050200058081")
    assert fake.logins == 2


def test_401_relogs_in_once_then_retries(fake: FakeFourWS) -> None:
    fake.on(SKU, json_reply({"message": "Access Denied."}, 401), sku_ok())
    clock = ManualClock()
    sku = make_client(fake, clock=clock).sku_from_barcode("8050200058081")
    assert sku.item_code == "ITEM"
    assert [fake.route_of(r) for r in fake.requests] == [
        fake.login_route,
        SKU,
        fake.login_route,
        SKU,
    ]
    assert bearer(fake) == [f"Bearer {TOKEN}-1", f"Bearer {TOKEN}-2"]
    assert clock.slept == []  # a re-login is not a backoff


def test_second_401_is_authentication_error(fake: FakeFourWS) -> None:
    fake.on(SKU, json_reply({"message": "Access Denied."}, 401))
    with pytest.raises(AuthenticationError) as info:
        make_client(fake).sku_from_barcode("8050200058081")
    assert info.value.status_code == 401
    assert fake.logins == 2
    assert len(fake.sent(SKU)) == 2


def test_login_refused_sends_no_data_call(fake: FakeFourWS) -> None:
    fake.on(fake.login_route, json_reply({"message": "Access Denied."}, 401))
    with pytest.raises(AuthenticationError):
        make_client(fake).sku_from_barcode("8050200058081")
    assert fake.sent(SKU) == []


@pytest.mark.parametrize(
    "body",
    [{"token": ""}, {"token": 12}, {"expiresInMS": 1000}, {"token": None}],
)
def test_login_without_a_token_is_malformed(body: dict[str, object]) -> None:
    fake = FakeFourWS(make_settings(retry={"max_attempts": 1}))
    fake.on(fake.login_route, json_reply(body))
    with pytest.raises(MalformedResponseError):
        make_client(fake).login()


@pytest.mark.parametrize("expires_in_ms", [-5, 0, 10**30, 10**400])
def test_odd_lifetimes_do_not_break_the_client(expires_in_ms: int) -> None:
    fake = FakeFourWS(make_settings())
    fake.on(fake.login_route, json_reply(login_body(expires_in_ms=expires_in_ms)))
    fake.on(SKU, sku_ok())
    client = make_client(fake)
    client.sku_from_barcode("8050200058081")
    client.sku_from_barcode("8050200058081")
    assert len(fake.sent(SKU)) == 2


async def test_async_token_cache_and_401(fake: FakeFourWS) -> None:
    fake.on(SKU, sku_ok(), json_reply({}, 401), sku_ok())
    clock = ManualClock()
    client = make_async_client(fake, clock=clock)
    await client.sku_from_barcode("8050200058081")
    await client.sku_from_barcode("8050200058081")  # 401 -> re-login -> ok
    assert fake.logins == 2
    clock.advance(300)
    await client.sku_from_barcode("8050200058081")
    assert fake.logins == 3
    await client.aclose()


def test_login_is_retried_like_a_read(fake: FakeFourWS) -> None:
    """Logging in changes nothing on 4WS, so a 503 or a dropped connection is retried."""
    import httpx

    from .fakes import fail

    fake.on(
        fake.login_route,
        json_reply({}, 503),
        fail(httpx.ReadTimeout),
        json_reply(login_body(f"{TOKEN}-z")),
    )
    fake.on(SKU, sku_ok())
    clock = ManualClock()
    make_client(fake, clock=clock).sku_from_barcode("8050200058081")
    assert len(fake.sent(fake.login_route)) == 3
    assert len(clock.slept) == 2
    assert bearer(fake) == [f"Bearer {TOKEN}-z"]
