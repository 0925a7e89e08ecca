"""The back office inside the App: only a Saleor staff user with HANDLE_PAYMENTS, signed in
with a token the installing Saleor vouches for, gets a session; the console then works on the
App's own ledger and records the staff member's e-mail on a resolve."""

from __future__ import annotations

import base64
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_saleor import API_URL, APP_ID, APP_TOKEN, FakeSaleor
from fourws_pay_saleor import build_manifest
from fourws_pay_saleor.backoffice import ME_QUERY, SESSION_COOKIE
from saleor_world import APP_URL, CARD, World, make_config

from fourws_pay.payments.models import Operation, OperationState
from fourws_pay.sandbox.faults import Fault

STAFF = "ops@shop.example"


async def login(world: World, token: str, api_url: str = API_URL, **headers: str) -> httpx.Response:
    return await world.client.post(
        "/backoffice/login",
        data={"saleor_api_url": api_url, "token": token},
        headers=headers,
    )


async def in_review(world: World, amount: str = "30.00") -> Operation:
    """A capture whose callback 4WS lost and that reconcile cannot prove: manual review."""
    payments = world.payments
    hold = await payments.reserve(CARD, amount=Decimal(amount), currency="EUR", order_ref="O-9")
    world.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    op = await payments.capture(hold.id)
    settings = payments.settings
    world.clock.advance(settings.callback_timeout + settings.reconcile_window + 1)
    await payments.reconcile()
    assert (await payments.get_operation(op.id)).state is OperationState.MANUAL_REVIEW
    await world.sandbox.aprocess_queue()  # 4WS applies it now; nobody is told
    return op


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match, "no form token on the page"
    return match.group(1)


# -- the manifest and the way in -------------------------------------------------------------


def test_the_manifest_puts_the_back_office_in_the_dashboard(tmp_path: Path) -> None:
    manifest = build_manifest(make_config(tmp_path))
    [extension] = manifest["extensions"]
    assert extension["target"] == "APP_PAGE"
    assert extension["mount"] == "NAVIGATION_ORDERS"
    # Relative: Saleor joins it to appUrl (manifest_validations._clean_extension_url).
    assert extension["url"] == "/backoffice/login"
    assert manifest["appUrl"]
    assert set(extension["permissions"]) <= set(manifest["permissions"])
    assert build_manifest(make_config(tmp_path, backoffice=False))["extensions"] == []


@pytest.mark.parametrize("app_options", [{"config": {"backoffice": False}}])
async def test_switched_off_there_is_no_back_office(world: World) -> None:
    assert (await world.client.get("/backoffice/login")).status_code == 404
    token = world.saleor.user_token(STAFF)
    assert (await login(world, token)).status_code == 404


async def test_the_dashboard_iframe_goes_on_to_the_login_page(world: World) -> None:
    opened = await world.client.get(
        "/", params={"saleorApiUrl": API_URL, "domain": "saleor.test", "id": APP_ID}
    )
    assert opened.status_code == 303
    assert opened.headers["location"].startswith("/backoffice/login?saleorApiUrl=")
    page = await world.client.get(opened.headers["location"])
    assert page.status_code == 200
    assert 'name="token"' in page.text
    assert "notifyReady" in page.text
    assert "handshake" in page.text
    assert "script-src 'nonce-" in page.headers["content-security-policy"]
    console = await world.client.get("/backoffice/")
    assert console.status_code == 303
    assert console.headers["location"] == "/backoffice/login"
    assert (await world.client.get("/backoffice/holds")).status_code == 303
    post = await world.client.post("/backoffice/card", content=b"barcode=" + CARD.encode())
    assert post.status_code == 401


async def test_a_staff_member_with_handle_payments_gets_a_short_signed_session(
    world: World,
) -> None:
    response = await login(world, world.saleor.user_token(STAFF))
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/backoffice/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/backoffice", "Max-Age=3600"):
        assert attribute.lower() in cookie.lower(), cookie
    home = await world.client.get("/backoffice/")
    assert home.status_code == 200
    assert "Review queue" in home.text
    assert STAFF in home.text


async def test_a_dashboard_token_minted_for_this_app_is_accepted(world: World) -> None:
    token = world.saleor.user_token(STAFF, app=APP_ID)
    assert (await login(world, token)).status_code == 303


# -- refusals --------------------------------------------------------------------------------


def _token_of(world: World, kind: str) -> str:
    saleor = world.saleor
    if kind == "app":
        return APP_TOKEN
    if kind == "customer":
        # Even with a permission somehow granted: not staff is not staff.
        return saleor.user_token("buyer@example.com", is_staff=False)
    if kind == "staff without HANDLE_PAYMENTS":
        return saleor.user_token(STAFF, permissions=("MANAGE_ORDERS", "MANAGE_PRODUCTS"))
    if kind == "forged":
        real = saleor.user_token(STAFF)
        return real.rpartition(".")[0] + ".forged"
    if kind == "another Saleor's":
        return FakeSaleor().user_token(STAFF)
    if kind == "another App's":
        return saleor.user_token(STAFF, app="QXBwOjk5")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "app",
        "customer",
        "staff without HANDLE_PAYMENTS",
        "forged",
        "another Saleor's",
        "another App's",
    ],
)
async def test_only_staff_with_the_apps_permission_is_let_in(world: World, kind: str) -> None:
    response = await login(world, _token_of(world, kind))
    assert response.status_code == 403, response.text
    assert "set-cookie" not in response.headers
    assert (await world.client.get("/backoffice/")).status_code == 303


async def test_a_saleor_that_did_not_install_the_app_is_never_asked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Any] = []
    original = world.state.http.post

    async def post(url: str, **kwargs: Any) -> httpx.Response:
        asked.append((url, kwargs.get("json")))
        return await original(url, **kwargs)

    monkeypatch.setattr(world.state.http, "post", post)
    token = world.saleor.user_token(STAFF)
    response = await login(world, token, api_url="http://other-saleor.test/graphql/")
    assert response.status_code == 403
    assert asked == []  # the token went nowhere
    assert (await login(world, token)).status_code == 303
    assert asked == [(API_URL, {"query": ME_QUERY})]


async def test_a_deactivated_or_deleted_installation_ends_sessions(world: World) -> None:
    assert (await login(world, world.saleor.user_token(STAFF))).status_code == 303
    assert (await world.client.get("/backoffice/")).status_code == 200
    world.store.set_installation_active(API_URL, False)
    assert (await world.client.get("/backoffice/")).status_code == 303
    assert (await login(world, world.saleor.user_token(STAFF))).status_code == 403
    world.store.set_installation_active(API_URL, True)
    assert (await world.client.get("/backoffice/")).status_code == 200
    assert (await world.saleor.app_event(world.client, "APP_DELETED")).status_code == 200
    assert (await world.client.get("/backoffice/")).status_code == 303


async def test_an_expired_session_is_refused(world: World) -> None:
    assert (await login(world, world.saleor.user_token(STAFF))).status_code == 303
    world.clock.advance(3599)
    assert (await world.client.get("/backoffice/")).status_code == 200
    world.clock.advance(2)
    assert (await world.client.get("/backoffice/")).status_code == 303


async def test_a_forged_cookie_is_refused(world: World) -> None:
    assert (await login(world, world.saleor.user_token(STAFF))).status_code == 303
    value = world.client.cookies[SESSION_COOKIE]
    body, _, mac = value.rpartition(".")
    claims = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    other = base64.urlsafe_b64encode(claims.replace(STAFF.encode(), b"boss@shop.example"))
    world.client.cookies.clear()
    for forged in (f"{other.rstrip(b'=').decode()}.{mac}", f"{body}.{'0' * 64}", body, "x.y"):
        world.client.cookies.set(SESSION_COOKIE, forged, domain="app.test", path="/backoffice")
        assert (await world.client.get("/backoffice/")).status_code == 303, forged
        world.client.cookies.clear()


async def test_a_sign_in_posted_from_another_site_is_refused(world: World) -> None:
    token = world.saleor.user_token(STAFF)
    response = await login(world, token, origin="https://evil.example")
    assert response.status_code == 403
    assert "set-cookie" not in response.headers
    assert (await login(world, token, origin=APP_URL)).status_code == 303


# -- the console on the App's ledger ---------------------------------------------------------


async def test_a_resolve_is_recorded_with_the_saleor_staff_members_email(world: World) -> None:
    op = await in_review(world)
    assert (await login(world, world.saleor.user_token(STAFF, app=APP_ID))).status_code == 303
    home = await world.client.get("/backoffice/")
    assert op.id in home.text
    assert CARD not in home.text  # masked
    done = await world.client.post(
        f"/backoffice/operations/{op.id}/resolve",
        content=f"csrf={csrf_of(home.text)}&seen_state=manual_review&verdict=applied"
        "&note=4WS+shows+it",
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith("/backoffice/?msg=")
    final = await world.payments.get_operation(op.id)
    assert final.state is OperationState.SUCCEEDED
    assert final.message == f"resolved by operator {STAFF}: 4WS shows it"


async def test_a_cookie_signed_under_another_secret_is_refused(world: World) -> None:
    from fourws_pay_saleor.backoffice import SaleorStaffGate, StaffSession

    state = world.state
    stranger = SaleorStaffGate(state.config, state.store, state.http, state.clock, b"another")
    far = int(world.clock.now().timestamp()) + 600
    value = stranger.cookie_value(StaffSession(email=STAFF, api_url=API_URL, expires=far))
    world.client.cookies.set(SESSION_COOKIE, value, domain="app.test", path="/backoffice")
    assert (await world.client.get("/backoffice/")).status_code == 303


async def test_refused_sign_ins_are_logged_without_the_token(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    token = world.saleor.user_token(STAFF, permissions=("MANAGE_ORDERS",))
    assert (await login(world, token)).status_code == 403
    logged = [r.getMessage() for r in caplog.records if "backoffice_login" in r.getMessage()]
    assert logged
    assert all(token not in line and token.split(".")[1] not in line for line in logged)


@pytest.mark.parametrize(
    "app_options",
    [{"config": {"app_url": "https://app.test", "backoffice_cookie_samesite": "none"}}],
)
async def test_a_dashboard_on_another_site_gets_a_secure_partitioned_cookie(
    world: World,
) -> None:
    response = await world.client.post(
        "https://app.test/backoffice/login",
        data={"saleor_api_url": API_URL, "token": world.saleor.user_token(STAFF)},
    )
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"].lower()
    for attribute in ("secure", "samesite=none", "partitioned", "httponly"):
        assert attribute in cookie, cookie


def test_samesite_none_needs_an_https_app(tmp_path: Path) -> None:
    from fourws_pay_saleor import AppConfig

    from fourws_pay.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        AppConfig.from_env({}, app_url="http://app.test", backoffice_cookie_samesite="none")
    assert make_config(tmp_path, app_url="https://app.test", backoffice_cookie_samesite="none")
