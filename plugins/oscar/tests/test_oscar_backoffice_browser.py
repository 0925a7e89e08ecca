"""Staff use the "Gift cards" back office of the example shop in a real browser.

The shop (``examples/oscar_shop``) runs under ``runserver`` against a sandbox served by the
test, whose queue worker the test works by hand (``worker_interval`` of an hour), so an
operation can be put in review the way it happens for real: a capture 4WS queued whose
callback is lost, reconciled past every window while 4WS has not applied it yet (the
balance proves nothing), then applied by 4WS with nobody told. The test writes that
capture from its own process into the shop's ledger, on a manual clock. Then staff log in,
find the card (a POST: the number is never in a URL), resolve the operation from the review
queue with a note, and download the daily report's CSV.

With ``FOURWS_PAY_SCREENSHOTS=1`` the review queue, the card page and the report are saved
to ``docs/images/oscar-backoffice-*.png`` (1100x700, for the README); without it they are
not written, so a CI run leaves the tree clean. Same Chromium and Playwright rules as
``test_oscar_browser.py`` (skipped without them unless ``FOURWS_PAY_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import csv
import io
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_oscar_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    GIFTCARD_ITEM,
    REPO,
    _manage,
    _serve_shop,
    sync_playwright,  # noqa: F401 (the fixture)
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CARD = "4440000000018"  # 100.00 EUR demo card (shop/demo_cards.py)
STAFF_EMAIL = "backoffice-staff@example.com"
STAFF_PASSWORD = "pw-of-backoffice-1"
IMAGES = REPO / "docs" / "images"
MAX_IMAGE_BYTES = 200_000


@pytest.fixture(scope="module")
def served_shop(tmp_path_factory, sync_playwright):  # noqa: F811
    from fourws_pay.sandbox.server import start_in_thread

    served = start_in_thread(seed="empty", worker_interval=3600.0)  # its queue: by hand
    served.sandbox.add_product(GIFTCARD_ITEM, item_type="FINANCIAL")
    try:
        for shop in _serve_shop("backoffice", tmp_path_factory, served):
            yield shop, served
    finally:
        served.stop()


def _in_review(shop: dict, served) -> tuple[str, object]:
    """A 30.00 capture of CARD in the shop's ledger, in manual review, applied by 4WS."""
    from fourws_pay.api.client import Client
    from fourws_pay.clock import ManualClock
    from fourws_pay.ledger import open_store
    from fourws_pay.payments import GiftCardPayments
    from fourws_pay.payments.models import OperationState
    from fourws_pay.sandbox.faults import Fault

    settings = served.settings.model_copy(
        update={
            "callback_base_url": f"{shop['url']}/fourws-pay/callback",
            "ledger_url": shop["env"]["FOURWS_PAY_LEDGER_URL"],
        }
    )
    clock = ManualClock(datetime.now(UTC))
    payments = GiftCardPayments(
        settings=settings,
        client=Client(settings),
        store=open_store(settings.ledger_url),
        clock=clock,
    )
    r = payments.reserve(CARD, amount="30.00", currency="EUR", order_ref="BO-1")
    served.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    op = payments.capture(r.id)
    clock.advance(settings.callback_timeout + settings.reconcile_window + 1)
    payments.reconcile()  # 4WS has not applied it yet: the balance proves nothing
    assert payments.get_operation(op.id).state is OperationState.MANUAL_REVIEW
    served.sandbox.process_queue()  # 4WS applies it now; the callback is lost
    return op.id, payments


def _shot(page, name: str) -> None:
    if os.environ.get("FOURWS_PAY_SCREENSHOTS") != "1":
        return
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / f"oscar-backoffice-{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size < MAX_IMAGE_BYTES, (path, path.stat().st_size)


def test_staff_find_a_card_resolve_it_and_download_the_report(served_shop, sync_playwright):  # noqa: F811
    shop, served = served_shop
    url = shop["url"]
    _manage(
        {**shop["env"], "DJANGO_SUPERUSER_PASSWORD": STAFF_PASSWORD},
        "createsuperuser",
        "--noinput",
        "--username",
        "bo-staff",
        "--email",
        STAFF_EMAIL,
    )
    op_id, payments = _in_review(shop, served)
    downloads = Path(shop["data_dir"]) / "downloads"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700}, accept_downloads=True)
            page.set_default_timeout(30_000)
            page.goto(url + "/fourws-pay/backoffice/")
            assert "/login/" in page.url  # anonymous: to the login page
            page.goto(url + "/accounts/login/")
            page.fill("#id_login-username", STAFF_EMAIL)
            page.fill("#id_login-password", STAFF_PASSWORD)
            with page.expect_navigation():
                page.click("button[name=login_submit]")

            # the dashboard's menu has the section; its first page is the review queue
            page.goto(url + "/dashboard/")
            assert page.locator("a[href='/fourws-pay/backoffice/']").count() >= 1
            page.goto(url + "/fourws-pay/backoffice/")
            queue = page.locator("#review-queue").inner_text()
            assert op_id in queue, queue
            assert "*********0018" in queue
            assert CARD not in page.content()
            _shot(page, "queue")

            # find the card: a POST, the number stays out of the URL
            page.fill("#card-lookup input[name=barcode]", CARD)
            with page.expect_navigation():
                page.click("#card-lookup button[type=submit]")
            assert page.url.endswith("/fourws-pay/backoffice/card")
            card_page = page.locator("#card-page").inner_text()
            assert "*********0018" in card_page
            assert "70.00 EUR" in card_page  # 4WS's live balance: it did apply the capture
            assert op_id in card_page
            assert CARD not in page.content()
            _shot(page, "card")
            with page.expect_navigation():
                page.click("#reveal-form button")
            assert CARD in page.locator("#card-number").inner_text()
            assert CARD not in page.url

            # resolve it from the queue: applied, with a note
            page.goto(url + "/fourws-pay/backoffice/")
            form = page.locator(f"form.resolve-form[data-operation='{op_id}']")
            form.locator("select[name=verdict]").select_option("applied")
            form.locator("input[name=note]").fill("4WS shows -30.00 on the card")
            with page.expect_navigation():
                form.locator("button[type=submit]").click()
            message = page.locator("body").inner_text()
            assert f"{op_id} on card *********0018 is succeeded now" in message, message[:3000]
            assert op_id not in page.locator("#review-queue").inner_text()

            # today's report, and its CSV
            page.goto(url + "/fourws-pay/backoffice/report")
            table = page.locator("#report-table").inner_text()
            assert "EUR" in table
            assert "30.00" in table
            _shot(page, "report")
            with page.expect_download() as download_info:
                page.click("#report-csv")
            download = download_info.value
            downloads.mkdir(exist_ok=True)
            target = downloads / download.suggested_filename
            download.save_as(str(target))
        finally:
            browser.close()

    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert rows[0][:5] == ["day", "currency", "captured", "refunded", "net"]
    (eur,) = [row for row in rows[1:] if row[1] == "EUR"]
    assert (eur[2], eur[4], eur[6]) == ("30.00", "30.00", "1"), rows
    assert target.name == f"fourws-pay-{eur[0]}.csv"

    final = payments.get_operation(op_id)
    assert final.state.value == "succeeded"
    assert final.message == "resolved by operator bo-staff: 4WS shows -30.00 on the card"
    assert served.sandbox.balance(CARD) == 70  # once
    assert CARD not in shop["log"].read_text()  # never in the shop's logs
    payments.close()
