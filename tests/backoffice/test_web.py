"""The standalone console: nothing without a credential, no card number in a URL or a list,
form tokens, a stale page refused, and the report's CSV."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fourws_pay.backoffice import BackOffice
from fourws_pay.backoffice.web import Staff, basic_auth, console_app
from fourws_pay.payments.models import OperationState
from tests.backoffice.test_service import in_review
from tests.payments.harness import Shop

CARD = "7000000000001"


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    s = Shop(tmp_path)
    s.card(CARD, amount="100.00")
    yield s
    s.payments.client.close()
    s.store.close()


def auth(name: str = "alice", password: str = "s3cret") -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def console(shop: Shop) -> AsyncIterator[httpx.AsyncClient]:
    app = console_app(
        BackOffice(shop.payments), authenticate=basic_auth({"alice": "s3cret", "bob": "pw"})
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://console"
    ) as client:
        yield client


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match, "no form token on the page"
    return match.group(1)


PAGES = [
    ("GET", "/"),
    ("GET", "/operations"),
    ("GET", "/holds"),
    ("GET", "/report"),
    ("GET", "/report.csv"),
    ("POST", "/card"),
    ("GET", "/card/op_x"),
    ("POST", "/operations/op_x/resolve"),
]


@pytest.mark.parametrize(("method", "path"), PAGES)
@pytest.mark.parametrize(
    "headers", [{}, auth("alice", "wrong"), auth("mallory", "s3cret"), {"Authorization": "Basic !"}]
)
async def test_no_page_without_the_credential(
    console: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await console.request(
        method, path, headers=headers, content=b"barcode=" + CARD.encode()
    )
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers
    assert CARD not in response.text


async def test_lists_show_masked_codes_and_the_lookup_is_a_post(
    shop: Shop, console: httpx.AsyncClient
) -> None:
    op = in_review(shop, CARD)
    home = await console.get("/", headers=auth())
    assert home.status_code == 200
    assert op.id in home.text
    assert CARD not in home.text  # masked in lists
    assert CARD[-4:] in home.text
    assert (await console.get(f"/card?barcode={CARD}", headers=auth())).status_code == 405
    found = await console.post(
        "/card", headers=auth(), content=f"csrf={csrf_of(home.text)}&barcode={CARD}"
    )
    assert found.status_code == 200
    assert "4WS balance" in found.text
    assert "balance before (evidence)" in found.text
    assert "100.00 EUR" in found.text  # the capture's evidence: the balance read before it
    assert CARD not in found.text  # masked until someone asks
    forged = await console.post("/card", headers=auth(), content=f"csrf=00&barcode={CARD}")
    assert forged.status_code == 403


async def test_revealing_the_whole_number_is_a_post_and_is_logged(
    shop: Shop, console: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    op = in_review(shop, CARD)
    page = await console.get(f"/card/{op.id}", headers=auth())
    assert CARD not in page.text
    shown = await console.post(
        f"/card/{op.id}", headers=auth(), content=f"csrf={csrf_of(page.text)}&reveal=1"
    )
    assert CARD in shown.text
    assert any("revealed" in r.getMessage() and "alice" in r.getMessage() for r in caplog.records)
    assert all(CARD not in r.getMessage() for r in caplog.records)


async def test_resolve_from_the_queue_records_the_staff_member(
    shop: Shop, console: httpx.AsyncClient
) -> None:
    op = in_review(shop, CARD)
    home = await console.get("/", headers=auth("bob", "pw"))
    token = csrf_of(home.text)
    done = await console.post(
        f"/operations/{op.id}/resolve",
        headers=auth("bob", "pw"),
        content=f"csrf={token}&seen_state=manual_review&verdict=applied&note=4WS+shows+it",
    )
    assert done.status_code == 303
    assert "succeeded" in done.headers["location"]
    final = shop.payments.get_operation(op.id)
    assert final.state is OperationState.SUCCEEDED
    assert final.message == "resolved by operator bob: 4WS shows it"
    history = await console.get(f"/card/{op.id}", headers=auth())
    assert "resolved by operator bob" in history.text
    shop.audit()


async def test_another_staff_members_token_is_not_accepted(
    shop: Shop, console: httpx.AsyncClient
) -> None:
    op = in_review(shop, CARD)
    alices = csrf_of((await console.get("/", headers=auth())).text)
    refused = await console.post(
        f"/operations/{op.id}/resolve",
        headers=auth("bob", "pw"),
        content=f"csrf={alices}&seen_state=manual_review&verdict=applied&note=x",
    )
    assert refused.status_code == 403
    assert shop.payments.get_operation(op.id).state is OperationState.MANUAL_REVIEW


async def test_a_stale_page_cannot_turn_a_settled_operation_around(
    shop: Shop, console: httpx.AsyncClient
) -> None:
    op = in_review(shop, CARD)
    home = await console.get("/", headers=auth())
    other = shop.new_provider()
    other.resolve(op.id, applied=True, note="carol saw it", actor="carol")
    late = await console.post(
        f"/operations/{op.id}/resolve",
        headers=auth(),
        content=f"csrf={csrf_of(home.text)}&seen_state=manual_review&verdict=not_applied&note=no",
    )
    assert late.status_code == 303
    assert "not%20changed" in late.headers["location"]
    assert shop.payments.get_operation(op.id).state is OperationState.SUCCEEDED
    shop.audit()


async def test_the_report_downloads_as_csv(shop: Shop, console: httpx.AsyncClient) -> None:
    r = shop.payments.reserve(CARD, amount="12.50", currency="EUR", order_ref="O")
    shop.payments.capture(r.id)
    shop.settle()
    day = shop.clock.now().date().isoformat()
    page = await console.get(f"/report?day={day}", headers=auth())
    assert "12.50" in page.text
    csv = await console.get(f"/report.csv?day={day}", headers=auth())
    assert csv.headers["content-type"].startswith("text/csv")
    assert f"{day},EUR,12.50,0,12.50" in csv.text
    bad = await console.get("/report?day=yesterday", headers=auth())
    assert bad.status_code == 400
    assert "YYYY-MM-DD" in bad.text


async def test_pages_never_show_secrets(shop: Shop, console: httpx.AsyncClient) -> None:
    op = in_review(shop, CARD)
    stored = shop.store.get_operation(op.id)
    assert stored is not None
    for path in ("/", "/operations", f"/card/{op.id}"):
        text = (await console.get(path, headers=auth())).text
        assert stored.callback_token_hash not in text
        assert shop.payments.settings.password.get_secret_value() not in text


async def test_a_host_authenticator_decides_who_may_resolve(shop: Shop) -> None:
    op = in_review(shop, CARD)

    async def read_only(request: Any) -> Staff | None:
        return Staff(name="viewer", can_resolve=False, can_reveal=False)

    app = console_app(BackOffice(shop.payments), authenticate=read_only)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        home = await c.get("/")
        assert "Resolve" not in home.text
        refused = await c.post(
            f"/operations/{op.id}/resolve",
            content=f"csrf={csrf_of(home.text)}&verdict=applied&note=x",
        )
        assert refused.status_code == 403
    assert shop.payments.get_operation(op.id).state is OperationState.MANUAL_REVIEW
