"""Messages that tell an operator what to do next, each from the real command.

Manual review names the order and the ``resolve`` step; ``resolve`` without a verdict names
both and what becomes of the hold; an ambiguous top-up says not to run it again; an
interrupted import says to re-run it; refused credentials name the settings; an expired
card says so; an unknown SKU is called one; malformed barcodes never leave the machine;
amounts are written with the card's digits.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fourws_pay.cli import barcode_import
from fourws_pay.cli.config import Runtime
from fourws_pay.clock import ManualClock
from fourws_pay.ledger import open_store
from fourws_pay.payments import GiftCardPayments, OperationState
from fourws_pay.sandbox import Fault, Sandbox
from fourws_pay.sandbox.ean import make_ean13
from fourws_pay.sandbox.seed import (
    EXAMPLE_CARD,
    EXPIRED_CARD,
    LOYALTY_CARD,
    NEVER_ACTIVATED_CARD,
    PRODUCT,
    UPDATE_EXAMPLE_CARD,
)

from .conftest import Invoke


@pytest.fixture
def payments(sandbox: Sandbox, clock: ManualClock, ledger_url: str) -> GiftCardPayments:
    settings = sandbox.settings.model_copy(update={"ledger_url": ledger_url})
    provider = GiftCardPayments(
        settings=settings,
        client=sandbox.client(settings),
        store=open_store(ledger_url),
        clock=clock,
    )
    sandbox.set_callback_handler(
        lambda url, body: provider.handle_callback(urlsplit(url).path, body).status_code
    )
    yield provider
    provider.close()


def capture_in_review(
    payments: GiftCardPayments, sandbox: Sandbox, clock: ManualClock, order_ref: str
) -> str:
    hold = payments.reserve(
        EXAMPLE_CARD, amount=Decimal("20.00"), currency="EUR", order_ref=order_ref
    )
    sandbox.faults.add("update_giftcard", Fault.drop_callback())
    capture = payments.capture(hold.id)
    sandbox.run_until_idle()
    sandbox.spend_in_shop(EXAMPLE_CARD, Decimal("3.00"))  # the balance no longer tells
    clock.advance(payments.settings.reconcile_window + 1)
    return capture.id


def test_reconcile_names_the_order_and_the_resolve_step(
    invoke: Invoke, payments: GiftCardPayments, sandbox: Sandbox, clock: ManualClock
) -> None:
    op_id = capture_in_review(payments, sandbox, clock, "ORD-4711")
    result = invoke("reconcile")
    assert result.exit_code == 1
    text = " ".join(result.stdout.split())  # the table may fold cells
    assert "ORD-4711" in text
    assert "order ORD-4711, capture of 20.00 EUR" in text
    assert f'fourws-pay resolve {op_id} --applied|--not-applied --note "what 4WS said"' in text
    assert "--not-applied if it did not (a capture's hold stops counting" in text
    (record,) = json.loads(invoke("reconcile", "--json").stdout)["manual_review"]
    assert record["order_ref"] == "ORD-4711"
    assert record["next_step"].startswith(f"fourws-pay resolve {op_id} --applied|--not-applied")


def test_resolve_without_a_verdict_names_both_and_what_happens_to_the_hold(
    invoke: Invoke, payments: GiftCardPayments, sandbox: Sandbox, clock: ManualClock
) -> None:
    op_id = capture_in_review(payments, sandbox, clock, "ORD-5")
    assert invoke("reconcile").exit_code == 1
    for args in ((op_id,), (op_id, "--note", "asked 4WS")):
        result = invoke("resolve", *args)
        assert result.exit_code == 2, result.output
        message = " ".join(result.stderr.split())
        assert "--applied or --not-applied is missing" in message
        assert "--applied if 4WS applied it (a capture's hold becomes captured" in message
        assert "--not-applied if it did not (a capture's hold stops counting" in message
        assert "its hold keeps counting" in message
        assert "Traceback" not in result.output
    no_note = invoke("resolve", op_id, "--applied")
    assert no_note.exit_code == 2
    assert "--note is missing" in no_note.stderr
    assert payments.get_operation(op_id).state is OperationState.MANUAL_REVIEW


def test_resolve_records_who_ran_it_on_the_operation(
    invoke: Invoke,
    payments: GiftCardPayments,
    sandbox: Sandbox,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    op_id = capture_in_review(payments, sandbox, clock, "ORD-6")
    assert invoke("reconcile").exit_code == 1
    monkeypatch.setattr("getpass.getuser", lambda: "erin")
    result = invoke("resolve", op_id, "--applied", "--note", "4WS ticket 12")
    assert result.exit_code == 0, result.output
    done = payments.get_operation(op_id)
    assert done.state is OperationState.SUCCEEDED
    assert done.message == "resolved by operator cli:erin: 4WS ticket 12"


def test_an_ambiguous_top_up_says_check_show_and_do_not_rerun(
    invoke: Invoke, sandbox: Sandbox
) -> None:
    sandbox.faults.add("update_giftcard", Fault.reset_after_enqueue())
    result = invoke(
        "giftcard", "activate", UPDATE_EXAMPLE_CARD, "--amount", "50", "--top-up", "--no-wait"
    )
    assert result.exit_code == 9, result.output
    message = " ".join(result.stderr.split())
    assert "do not run the top-up again (the card could be loaded twice)" in message
    assert "`fourws-pay giftcard show CARD`" in message
    assert "balance shows 50.00 EUR more (balance before: 100.00 EUR)" in message
    assert UPDATE_EXAMPLE_CARD not in result.output


def test_an_ambiguous_top_up_waiting_for_its_callback_says_the_same(
    invoke: Invoke, sandbox: Sandbox
) -> None:
    sandbox.faults.add("update_giftcard", Fault.drop_callback())
    result = invoke(
        "giftcard", "activate", UPDATE_EXAMPLE_CARD, "--amount", "5", "--top-up",
        "--timeout", "0.2", "--reveal",
    )  # fmt: skip
    assert result.exit_code == 9, result.output
    message = " ".join(result.stderr.split())
    assert "do not run the top-up again" in message
    assert f"`fourws-pay giftcard show {UPDATE_EXAMPLE_CARD}`" in message


HEADER = "item_code,barcode,barcode_type,dimension_level1,dimension_level2\n"


def import_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "barcodes.csv"
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    return path


def reasons(tmp_path: Path) -> dict[int, str]:
    with (tmp_path / "barcodes.csv.rejected.csv").open(encoding="utf-8") as handle:
        return {int(r["line"]): r["reason"] for r in csv.DictReader(handle)}


def test_an_interrupted_import_says_rerun_to_resume(
    invoke: Invoke, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = import_file(
        tmp_path, [f"{PRODUCT},{make_ean13('806', i)},EAN13,1,Y4\n" for i in range(6)]
    )
    real_insert = barcode_import.Importer._insert
    calls = []

    async def ctrl_c_on_the_fourth(self, row, report):  # type: ignore[no-untyped-def]
        calls.append(row)
        if len(calls) == 4:
            raise KeyboardInterrupt
        await real_insert(self, row, report)

    monkeypatch.setattr(barcode_import.Importer, "_insert", ctrl_c_on_the_fourth)
    result = invoke("barcodes", "import", str(path), "--rate", "0", "--concurrency", "1")
    assert result.exit_code == 130, result.output
    message = " ".join(result.stderr.split())
    assert "interrupted after 3 of 6 insert(s)" in message
    assert "re-run the same command to resume" in message
    monkeypatch.setattr(barcode_import.Importer, "_insert", real_insert)
    again = invoke("barcodes", "import", str(path), "--rate", "0", "--json")
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["skipped_already_inserted"] == 3
    assert summary["inserted"] == 3


def test_an_unknown_sku_is_called_an_unknown_sku(
    invoke: Invoke, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = import_file(
        tmp_path,
        [
            f"{PRODUCT},{make_ean13('807', 1)},EAN13,XL,BLUE\n",  # the product exists, not in blue
            f"NO_SUCH_ITEM,{make_ean13('807', 2)},EAN13,1,Y4\n",
        ],
    )
    result = invoke("barcodes", "import", str(path), "--rate", "0")
    assert result.exit_code == 1, result.output
    found = reasons(tmp_path)
    assert found[2].startswith(f"unknown SKU {PRODUCT} (XL/BLUE)")
    assert "Product not found" not in found[2]
    assert found[3].startswith("unknown SKU NO_SUCH_ITEM (1/Y4)")


def test_malformed_barcodes_are_refused_before_any_request(
    invoke: Invoke, sandbox: Sandbox, tmp_path: Path
) -> None:
    good = make_ean13("808", 1)
    path = import_file(
        tmp_path,
        [
            f"{PRODUCT},{good[:-1]}{(int(good[-1]) + 1) % 10},EAN13,1,Y4\n",  # check digit
            f"{PRODUCT},80820000001,EAN13,1,Y4\n",  # 11 digits
            f"{PRODUCT},036000291453,UPC-A,1,Y4\n",  # UPC-A check digit is 2
            f"{PRODUCT},ABC123,EAN 13,1,Y4\n",  # not a symbology name
            f"{PRODUCT},AB C,CODE128,1,Y4\n",  # a space
        ],
    )
    result = invoke("barcodes", "import", str(path), "--rate", "0", "--json")
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["invalid"] == 5
    assert sandbox.requests_to("insert_barcode") == []
    assert sandbox.requests_to("login") == []
    found = reasons(tmp_path)
    assert "check digit" in found[2]
    assert "UPC-A check digit is 3, expected 2" in found[4]
    assert "barcode_type" in found[5]


def test_what_4ws_may_accept_is_passed_on(invoke: Invoke, sandbox: Sandbox, tmp_path: Path) -> None:
    path = import_file(
        tmp_path,
        [
            f"{PRODUCT},036000291452,UPC-A,1,Y4\n",
            f"{PRODUCT},SKU-XL.RED_01,CODE128,XL,RED\n",
            f"{PRODUCT},{make_ean13('809', 1)},ean13,2,Y4\n",  # lower case type
        ],
    )
    result = invoke("barcodes", "import", str(path), "--rate", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inserted"] == 3


def wrong_password(runtime: Runtime) -> Runtime:
    runtime.environ = {**runtime.environ, "FOURWS_PASSWORD": "not-the-password"}
    return runtime


def test_refused_credentials_name_the_settings_to_check(
    invoke: Invoke, sandbox: Sandbox, runtime: Runtime, tmp_path: Path
) -> None:
    wrong = wrong_password(runtime)
    result = invoke("giftcard", "show", EXAMPLE_CARD, obj=wrong)
    assert result.exit_code == 4, result.output
    assert "check FOURWS_USERNAME and FOURWS_PASSWORD" in result.stderr
    assert "not-the-password" not in result.output
    as_json = invoke("giftcard", "show", EXAMPLE_CARD, "--json", obj=wrong)
    assert "FOURWS_PASSWORD" in json.loads(as_json.stdout)["error"]["hint"]
    # the Data management API: the import stops instead of rejecting every row
    path = import_file(
        tmp_path, [f"{PRODUCT},{make_ean13('810', i)},EAN13,1,Y4\n" for i in range(3)]
    )
    imported = invoke("barcodes", "import", str(path), "--rate", "0", obj=wrong)
    assert imported.exit_code == 4, imported.output
    assert "check FOURWS_USERNAME and FOURWS_PASSWORD" in imported.stderr
    assert not (tmp_path / "barcodes.csv.rejected.csv").exists()


def test_show_marks_an_expired_card(invoke: Invoke) -> None:
    result = invoke("giftcard", "show", EXPIRED_CARD)
    assert result.exit_code == 0, result.output
    assert "(EXPIRED since " in result.stdout
    record = json.loads(invoke("giftcard", "show", EXPIRED_CARD, "--json").stdout)
    assert record["expired"] is True
    assert record["status"].startswith("EXPIRED since ")
    active = json.loads(invoke("giftcard", "show", EXAMPLE_CARD, "--json").stdout)
    assert (active["status"], active["expired"]) == ("active", False)


def test_amounts_are_written_with_the_cards_digits(invoke: Invoke, sandbox: Sandbox) -> None:
    vouchers = invoke("vouchers", "list", LOYALTY_CARD)
    assert "72.90 EUR" in vouchers.stdout  # 4WS wrote 72.9
    assert "85.00 EUR" in vouchers.stdout
    listed = json.loads(invoke("vouchers", "list", LOYALTY_CARD, "--json").stdout)
    assert {"72.90", "85.00"} <= {v["amount"] for v in listed}
    shown = invoke("giftcard", "show", UPDATE_EXAMPLE_CARD)
    assert "100.00" in shown.stdout
    activated = invoke("giftcard", "activate", NEVER_ACTIVATED_CARD, "--amount", "50", "--no-wait")
    assert activated.exit_code == 0, activated.output
    assert "50.00" in activated.stdout
    sandbox.run_until_idle()
    topped = invoke(
        "giftcard", "activate", NEVER_ACTIVATED_CARD, "--amount", "25", "--top-up", "--no-wait",
        "--json",
    )  # fmt: skip
    assert topped.exit_code == 0, topped.output
    assert json.loads(topped.stdout)["amount"] == "25.00"
