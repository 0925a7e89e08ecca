"""A person pays an order with a gift card in a real browser, on the example shop.

The shop (``examples/oscar_shop``) runs under ``manage.py runserver`` on 127.0.0.1, once
in its default demo mode (``runserver`` serves the demo sandbox from the shop's process)
and once against a sandbox served by the test (real HTTP both ways either way: updates to
the sandbox, callbacks to the shop's Django view). The person finds the product from the
home page, pays, sees the masked card on the thank-you page; then staff refund part of it
with ``manage.py fourws_pay_refund`` in another process, which must reach the shop's
sandbox (the card's balance moves) and be recorded once 4WS confirms. Playwright drives Debian's
Chromium (``/usr/bin/chromium``, never a downloaded browser) through the whole checkout and
saves a screenshot of the thank-you page in ``$FOURWS_PAY_ARTIFACTS_DIR`` (default: the
test's temporary directory). Another order is paid with two cards ("Apply" each) and cash on
delivery, and staff refund part of it from the dashboard's form, sent twice, which lands
once over both cards.

Skipped when Chromium or Playwright is missing, unless ``FOURWS_PAY_REQUIRE_SERVICES=1``
(CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
REPO = Path(__file__).resolve().parents[3]
SHOP = REPO / "examples" / "oscar_shop"
CARD = "4440000000018"  # 100.00 EUR demo card (shop/demo_cards.py)
BUYER_CARD = "4440000000070"  # another 100.00 EUR one, buys the shop's gift card
TEN_CARD = "4440000000025"  # 10.00 EUR
FIFTEEN_CARD = "4440000000087"  # 15.00 EUR: with TEN_CARD on one order, the rest on delivery
GIFTCARD_ITEM = "GIFTCARD_IVA_TAGLIO_100"  # the 4WS item the shop's gift cards are made of
STARTUP_TIMEOUT = 90.0


def _unavailable(reason: str) -> None:
    if os.environ.get("FOURWS_PAY_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (FOURWS_PAY_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def sync_playwright():
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed")
    return sync_playwright


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=SHOP,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stderr[-4000:]}"
    return done.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _shop_env(
    data_dir: Path, url: str, sandbox_env: dict[str, str] | None = None, sandbox_port: int = 0
) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOURWS_")}
    env.update(sandbox_env or {})
    env.update(
        DJANGO_SETTINGS_MODULE="shop.settings",
        OSCAR_SHOP_DATA_DIR=str(data_dir),
        FOURWS_PAY_BACKEND="http" if sandbox_env else "demo",
        SHOP_SANDBOX_PORT=str(sandbox_port or 8766),
        FOURWS_PAY_LEDGER_URL=f"sqlite:///{data_dir / 'ledger.db'}",
        SHOP_PUBLIC_URL=url,
        SHOP_EMAIL_DIR=str(data_dir / "mail"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the shop exited early:\n{log.read_text()[-4000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)  # polling a server's readiness, not driving any logic by time
    pytest.fail(f"the shop did not listen on {port}:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module", params=["demo sandbox", "served sandbox"])
def shop(request, tmp_path_factory, sync_playwright):
    """The example shop served on 127.0.0.1, on a fresh copy of a migrated database.

    Migrating Oscar takes most of a minute, so a migrated template database is kept in
    the temporary directory and only brought up to date (``--keepdb`` style).
    """
    served = None
    if request.param == "served sandbox":
        from fourws_pay.sandbox.server import start_in_thread

        served = start_in_thread(seed="empty")
        served.sandbox.add_product(GIFTCARD_ITEM, item_type="FINANCIAL")
    try:
        yield from _serve_shop(request.param, tmp_path_factory, served)
    finally:
        if served is not None:
            served.stop()


def _serve_shop(name, tmp_path_factory, served):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path_factory.mktemp("oscar-shop")
    template_dir = Path(tempfile.gettempdir()) / "fourws-pay-oscar-shop-template"
    template_dir.mkdir(exist_ok=True)
    _manage(_shop_env(template_dir, url), "migrate", "--noinput", "-v0")
    for suffix in ("", "-wal", "-shm"):
        src = template_dir / f"db.sqlite3{suffix}"
        if src.exists():
            shutil.copy(src, data_dir / src.name)
    sandbox_port = _free_port()
    env = _shop_env(data_dir, url, served.env() if served else None, sandbox_port)
    _manage(env, "seed_shop")
    cards = _manage(env, "seed_giftcards")
    assert CARD in cards

    log = data_dir / "runserver.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=SHOP,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc, log)
        yield {
            "url": url,
            "env": env,
            "balance": (
                (lambda barcode=CARD: served.sandbox.balance(barcode))
                if served
                else (
                    lambda barcode=CARD: _served_balance(
                        f"http://127.0.0.1:{sandbox_port}", barcode
                    )
                )
            ),
            "data_dir": data_dir,
            "log": log,
            "name": name.replace(" ", "-"),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_customer_pays_with_a_gift_card_in_the_browser(sync_playwright, shop):
    url = shop["url"]
    artifacts = Path(os.environ.get("FOURWS_PAY_ARTIFACTS_DIR") or shop["data_dir"])
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / f"oscar-thank-you-{shop['name']}.png"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)

            # the home page lists the catalogue, and so does the category page
            page.goto(url + "/")
            home = page.locator("body").inner_text()
            for title in PRODUCTS:
                assert title in home, home[:2000]
            page.goto(url + _category_path(shop["data_dir"]))
            category = page.locator("body").inner_text()
            for title in PRODUCTS:
                assert title in category, category[:2000]
            page.goto(url + "/")
            page.get_by_role("link", name="Moka pot, 6 cups").first.click()
            page.locator("#add_to_basket_form button[type=submit]").click()
            page.wait_for_load_state()

            page.goto(url + "/checkout/")
            page.fill("#id_username", "ada@example.com")
            page.check("input[name=options][value=anonymous]")
            page.locator("form button[type=submit]", has_text="Continue").first.click()

            page.wait_for_url("**/checkout/shipping-address/")
            page.fill("#id_first_name", "Ada")
            page.fill("#id_last_name", "Lovelace")
            page.fill("#id_line1", "Via Roma 1")
            page.fill("#id_line4", "Milano")
            page.fill("#id_postcode", "20100")
            page.locator("form button[type=submit]", has_text="Continue").first.click()

            page.wait_for_url("**/checkout/payment-details/")
            page.fill("#id_giftcard_code", CARD)
            page.click("#view_preview")

            page.wait_for_url("**/checkout/preview/")
            summary = page.locator("#giftcard-summary").inner_text()
            assert "0018" in summary
            assert "30.00" in summary
            assert CARD not in page.content()  # the code is carried sealed
            page.screenshot(path=str(artifacts / f"oscar-preview-{shop['name']}.png"))
            page.click("#place-order")

            page.wait_for_url("**/checkout/thank-you/")
            body = page.locator("body").inner_text()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    assert "Your order has been placed" in body, body[:2000]
    number = re.search(r"your order number is (\d+)", body)
    assert number, body[:2000]
    assert screenshot.stat().st_size > 10_000
    assert "*********0018" in body  # the card, masked, as the customer knows it
    assert "res_" not in body  # never an internal reservation id

    # The sandbox applies the capture and calls the shop back over HTTP a moment later.
    settled = [("4WS gift card", Decimal("30.00"), Decimal("30.00"), Decimal("0.00"))]
    _wait_for_sources(shop, number.group(1), settled)
    assert shop["balance"]() == Decimal("70.00")

    # Staff refund part of it from another process: it must reach the shop's 4WS.
    out = _manage(shop["env"], "fourws_pay_refund", number.group(1), "--amount", "5.00")
    assert "refund op_" in out
    refunded = [("4WS gift card", Decimal("30.00"), Decimal("30.00"), Decimal("5.00"))]
    _wait_for_sources(shop, number.group(1), refunded)
    assert shop["balance"]() == Decimal("75.00")

    # runserver's output: each payment event once, and no callback secret in any line
    log = shop["log"].read_text()
    events = [line for line in log.splitlines() if "event='fourws_pay.payments." in line]
    assert events, log[-3000:]
    assert len(events) == len(set(events)), "events logged twice:\n" + "\n".join(events)
    secrets = re.findall(r"/fourws-pay/callback/op_[0-9a-f]+/([^\s'\"]*)", log)
    assert secrets, log[-3000:]  # runserver logged the callbacks...
    assert set(secrets) == {"****"}, log[-3000:]  # ...with their secrets masked


def test_a_gift_card_bought_in_the_browser_pays_the_next_order(sync_playwright, shop):
    """Buy the shop's gift card for a friend, read the code from the e-mail the shop sends
    once 4WS made and loaded the card, and pay a second order with it."""
    url = shop["url"]
    artifacts = Path(os.environ.get("FOURWS_PAY_ARTIFACTS_DIR") or shop["data_dir"])
    artifacts.mkdir(parents=True, exist_ok=True)
    friend = f"friend-{shop['name']}@example.com"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(url + "/")
            page.get_by_role("link", name="4WS gift card, 25 EUR").first.click()
            page.fill("#id_giftcard-recipient-name", "Grace")
            page.fill("#id_giftcard-recipient-email", friend)
            page.fill("#id_giftcard-recipient-message", "Happy birthday!")
            page.locator("#add_to_basket_form button[type=submit]").click()
            page.wait_for_load_state()
            number = _checkout(page, url, "gift-buyer@example.com", BUYER_CARD, shipping=False)
            page.screenshot(path=str(artifacts / f"oscar-giftcard-sold-{shop['name']}.png"))
        finally:
            browser.close()

        message = _wait_for_mail(shop, friend)
        assert "Dear Grace" in message
        assert "Happy birthday!" in message
        codes = re.findall(r"Gift card (\d{6,}): 25.00 EUR", message)
        assert len(codes) == 1, message
        code = codes[0]
        assert code not in shop["log"].read_text()  # never in the shop's logs
        assert shop["balance"](code) == Decimal("25.00")
        settled = [("4WS gift card", Decimal("25.00"), Decimal("25.00"), Decimal("0.00"))]
        _wait_for_sources(shop, number, settled)

        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()  # the friend, another browser
            page.set_default_timeout(30_000)
            page.goto(url + "/")
            page.get_by_role("link", name="4WS espresso mug").first.click()
            page.locator("#add_to_basket_form button[type=submit]").click()
            page.wait_for_load_state()
            second = _checkout(page, url, friend, code, shipping=True)
            body = page.locator("body").inner_text()
        finally:
            browser.close()
    assert "*" * (len(code) - 4) + code[-4:] in body
    paid = [("4WS gift card", Decimal("12.00"), Decimal("12.00"), Decimal("0.00"))]
    _wait_for_sources(shop, second, paid)
    assert shop["balance"](code) == Decimal("13.00")


def test_one_order_paid_with_two_cards_and_cash_on_delivery(sync_playwright, shop):
    """Apply two cards on the payment page (10.00 + 15.00 of the 30.00 order), see each
    with what it pays, place the order; 5.00 is left for cash on delivery. Then staff
    refund 20.00 from the dashboard's form, which spans both cards' captures (newest
    first), and press the same form again: it lands once."""
    url = shop["url"]
    artifacts = Path(os.environ.get("FOURWS_PAY_ARTIFACTS_DIR") or shop["data_dir"])
    artifacts.mkdir(parents=True, exist_ok=True)
    staff = f"staff-{shop['name']}"
    _manage(
        {**shop["env"], "DJANGO_SUPERUSER_PASSWORD": "pw-of-staff-1"},
        "createsuperuser",
        "--noinput",
        "--username",
        staff,
        "--email",
        f"{staff}@example.com",
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(url + "/")
            page.get_by_role("link", name="Moka pot, 6 cups").first.click()
            page.locator("#add_to_basket_form button[type=submit]").click()
            page.wait_for_load_state()
            page.goto(url + "/checkout/")
            page.fill("#id_username", "two-cards@example.com")
            page.check("input[name=options][value=anonymous]")
            page.locator("form button[type=submit]", has_text="Continue").first.click()
            page.wait_for_url("**/checkout/shipping-address/")
            page.fill("#id_first_name", "Ada")
            page.fill("#id_last_name", "Lovelace")
            page.fill("#id_line1", "Via Roma 1")
            page.fill("#id_line4", "Milano")
            page.fill("#id_postcode", "20100")
            page.locator("form button[type=submit]", has_text="Continue").first.click()

            page.wait_for_url("**/checkout/payment-details/")
            for code in (TEN_CARD, FIFTEEN_CARD):
                page.fill("#id_giftcard_code", code)
                with page.expect_navigation():
                    page.click("#apply_giftcard")
            applied = page.locator("#giftcards-applied").inner_text()
            for expected in ("*********0025", "*********0087", "10.00", "15.00"):
                assert expected in applied, applied
            assert "5.00" in page.locator(".giftcards-remainder").inner_text()
            assert TEN_CARD not in page.content()
            assert FIFTEEN_CARD not in page.content()
            page.screenshot(path=str(artifacts / f"oscar-two-cards-{shop['name']}.png"))
            with page.expect_navigation():
                page.click("#view_preview")

            summary = page.locator("#giftcard-summary").inner_text()
            for card in ("*********0025", "*********0087"):
                assert card in summary, summary
            assert "5.00" in summary  # still to pay, on delivery
            page.click("#place-order")
            page.wait_for_url("**/checkout/thank-you/")
            body = page.locator("body").inner_text()
            number = re.search(r"your order number is (\d+)", body)
            assert number, body[:2000]
            number = number.group(1)

            paid = [
                ("4WS gift card", Decimal("10.00"), Decimal("10.00"), Decimal("0.00")),
                ("4WS gift card", Decimal("15.00"), Decimal("15.00"), Decimal("0.00")),
                ("Cash on delivery", Decimal("5.00"), Decimal("0.00"), Decimal("0.00")),
            ]
            _wait_for_sources(shop, number, paid)
            assert shop["balance"](TEN_CARD) == Decimal("0.00")
            assert shop["balance"](FIFTEEN_CARD) == Decimal("0.00")

            staff_page = browser.new_page()  # staff, in another session
            staff_page.set_default_timeout(30_000)
            staff_page.goto(url + "/accounts/login/")
            staff_page.fill("#id_login-username", f"{staff}@example.com")
            staff_page.fill("#id_login-password", "pw-of-staff-1")
            with staff_page.expect_navigation():
                staff_page.click("button[name=login_submit]")
            staff_page.goto(f"{url}/dashboard/orders/{number}/")
            dashboard = staff_page.locator("body").inner_text()
            assert staff_page.locator("#giftcard-refund-form").count() == 1, dashboard[:3000]
            key = staff_page.locator("#giftcard-refund-form input[name=refund_key]")
            form_key = key.input_value()
            staff_page.fill("#id_amount", "20.00")
            with staff_page.expect_navigation():
                staff_page.click("#refund-giftcards")
            message = staff_page.locator("body").inner_text()
            assert "Refund of 20.00 EUR to the gift cards requested" in message, message[:3000]
            # the same form sent again (a double click, "resend"): it carries its key
            assert key.input_value() != form_key  # the page shows a new form now
            key.evaluate("(input, value) => { input.value = value; }", form_key)
            staff_page.fill("#id_amount", "20.00")
            with staff_page.expect_navigation():
                staff_page.click("#refund-giftcards")
            again = staff_page.locator("body").inner_text()
            assert "Refund of 20.00 EUR to the gift cards requested" in again, again[:3000]
            staff_page.screenshot(
                path=str(artifacts / f"oscar-two-cards-refund-{shop['name']}.png"), full_page=True
            )
        finally:
            browser.close()

    # 20.00 back over both cards' captures, newest first: one whole, the other in part
    deadline = time.monotonic() + 30
    while True:
        rows = _gift_card_sources(shop["data_dir"], number)
        refunded = sorted(r[3] for r in rows if r[0] == "4WS gift card")
        if sum(refunded) == Decimal("20.00"):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"not refunded: {rows}\n{shop['log'].read_text()[-3000:]}")
        time.sleep(0.2)  # waiting for another process's callback, not driving logic by time
    assert refunded in ([Decimal("5.00"), Decimal("15.00")], [Decimal("10.00"), Decimal("10.00")])
    balances = shop["balance"](TEN_CARD) + shop["balance"](FIFTEEN_CARD)
    assert balances == Decimal("20.00")  # once, not twice
    for _, allocated, debited, back in rows[:2]:
        assert back <= debited == allocated


def _checkout(page, url: str, email: str, code: str, *, shipping: bool) -> str:
    """From the basket to the thank-you page as a guest paying with ``code``; the number."""
    page.goto(url + "/checkout/")
    page.fill("#id_username", email)
    page.check("input[name=options][value=anonymous]")
    page.locator("form button[type=submit]", has_text="Continue").first.click()
    if shipping:
        page.wait_for_url("**/checkout/shipping-address/")
        page.fill("#id_first_name", "Grace")
        page.fill("#id_last_name", "Hopper")
        page.fill("#id_line1", "Via Roma 2")
        page.fill("#id_line4", "Milano")
        page.fill("#id_postcode", "20100")
        page.locator("form button[type=submit]", has_text="Continue").first.click()
    page.wait_for_url("**/checkout/payment-details/")
    page.fill("#id_giftcard_code", code)
    page.click("#view_preview")
    page.wait_for_url("**/checkout/preview/")
    page.click("#place-order")
    page.wait_for_url("**/checkout/thank-you/")
    body = page.locator("body").inner_text()
    number = re.search(r"your order number is (\d+)", body)
    assert number, body[:2000]
    return number.group(1)


def _wait_for_mail(shop: dict, recipient: str) -> str:
    """The gift-card e-mail to ``recipient`` the shop wrote (Django's file backend), once
    4WS called the shop back for the card's generation and activation."""
    deadline = time.monotonic() + 60
    folder = shop["data_dir"] / "mail"
    while True:
        for path in sorted(folder.glob("*.log")) if folder.exists() else []:
            for message in path.read_text().split("-" * 79):
                if f"To: {recipient}" in message and "Gift card " in message:
                    return message
        if time.monotonic() > deadline:
            pytest.fail(f"no gift card mailed to {recipient}\n{shop['log'].read_text()[-3000:]}")
        time.sleep(0.2)  # waiting for another process's mail, not driving logic by time


PRODUCTS = ("4WS espresso mug", "Coffee beans, 1 kg", "Moka pot, 6 cups", "Hand grinder")


def _wait_for_sources(shop: dict, order_number: str, expected: list) -> None:
    """Until the shop's database shows ``expected`` (4WS calls the shop back a moment
    after each capture or refund)."""
    deadline = time.monotonic() + 30
    while (rows := _gift_card_sources(shop["data_dir"], order_number)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"not settled: {rows}\n{shop['log'].read_text()[-3000:]}")
        time.sleep(0.2)  # waiting for another process's callback, not driving logic by time


def _served_balance(sandbox_url: str, barcode: str) -> Decimal:
    """A card's balance on the shop's own demo sandbox, from its control API."""
    import httpx

    answer = httpx.get(f"{sandbox_url}/_sandbox/cards/{barcode}", timeout=10)
    answer.raise_for_status()
    return Decimal(str(json.loads(answer.content, parse_float=Decimal)["giftcard"]["amount"]))


def _category_path(data_dir: Path) -> str:
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        (pk,) = db.execute("SELECT id FROM catalogue_category WHERE slug = 'coffee'").fetchone()
    return f"/catalogue/category/coffee_{pk}/"


def _gift_card_sources(
    data_dir: Path, order_number: str
) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        rows = db.execute(
            "SELECT t.name, s.amount_allocated, s.amount_debited, s.amount_refunded "
            "FROM payment_source s "
            "JOIN payment_sourcetype t ON t.id = s.source_type_id "
            "JOIN order_order o ON o.id = s.order_id WHERE o.number = ? ORDER BY s.id",
            (order_number,),
        ).fetchall()
    return [(name, Decimal(str(a)), Decimal(str(d)), Decimal(str(r))) for name, a, d, r in rows]
