"""``fourws-pay barcodes import``: validation, concurrent inserts, resume, 429s, report."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from fourws_pay.clock import ManualClock
from fourws_pay.sandbox import Fault, Sandbox
from fourws_pay.sandbox.ean import make_ean13
from fourws_pay.sandbox.seed import PRODUCT

from .conftest import Invoke

HEADER = "item_code,barcode,barcode_type,dimension_level1,dimension_level2\n"


def rows_file(tmp_path: Path, count: int, *, start: int = 0, extra: str = "") -> Path:
    path = tmp_path / "barcodes.csv"
    skus = (("1", "Y4"), ("2", "Y4"), ("XL", "RED"))
    lines = [
        f"{PRODUCT},{make_ean13('805', start + i)},EAN13,{skus[i % 3][0]},{skus[i % 3][1]}\n"
        for i in range(count)
    ]
    path.write_text(HEADER + "".join(lines) + extra, encoding="utf-8")
    return path


def run_import(invoke: Invoke, path: Path, *args: str) -> tuple[int, dict]:
    result = invoke("barcodes", "import", str(path), "--rate", "0", "--json", *args)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, json.loads(result.stdout)


def test_imports_every_row_onto_its_sku(invoke: Invoke, sandbox: Sandbox, tmp_path: Path) -> None:
    path = rows_file(tmp_path, 300)
    code, summary = run_import(invoke, path, "--concurrency", "8")
    assert code == 0
    assert summary["inserted"] == 300
    assert summary["rejected_by_4ws"] == 0
    for i in (0, 1, 2, 299):
        record = sandbox.barcode_record(make_ean13("805", i))
        assert record is not None
        assert record["item_code"] == PRODUCT
    assert sandbox.barcode_record(make_ean13("805", 1))["dimension_level1"] == "2"
    assert not (tmp_path / "barcodes.csv.rejected.csv").exists()


def test_invalid_rows_are_reported_and_never_sent(
    invoke: Invoke, sandbox: Sandbox, tmp_path: Path
) -> None:
    bad_check = make_ean13("805", 500)[:-1] + str((int(make_ean13("805", 500)[-1]) + 1) % 10)
    extra = (
        f"{PRODUCT},{bad_check},EAN13,1,Y4\n"
        f"{PRODUCT},{make_ean13('805', 501)},EAN13,,Y4\n"
        f"NO_SUCH_PRODUCT,{make_ean13('805', 502)},EAN13,1,Y4\n"
    )
    path = rows_file(tmp_path, 5, extra=extra)
    code, summary = run_import(invoke, path)
    assert code == 1
    assert summary["inserted"] == 5
    assert summary["invalid"] == 2
    assert summary["rejected_by_4ws"] == 1
    assert sandbox.barcode_record(bad_check) is None
    with (tmp_path / "barcodes.csv.rejected.csv").open(encoding="utf-8") as handle:
        report = {int(r["line"]): r["reason"] for r in csv.DictReader(handle)}
    assert "check digit" in report[7]
    assert "dimension_level1 is empty" in report[8]
    assert "not found" in report[9].lower()


def test_a_rerun_skips_what_was_inserted(invoke: Invoke, sandbox: Sandbox, tmp_path: Path) -> None:
    path = rows_file(tmp_path, 40)
    sandbox.faults.add("insert_barcode", Fault.server_error(503), times=None)
    code, first = run_import(invoke, path)
    assert code == 1
    assert first["inserted"] == 0
    assert first["failed_retry_later"] == 40
    assert (tmp_path / "barcodes.csv.rejected.csv").exists()
    sandbox.faults.clear()
    code, second = run_import(invoke, path)
    assert code == 0
    assert second["inserted"] == 40
    assert not (tmp_path / "barcodes.csv.rejected.csv").exists()  # nothing left to fix
    code, third = run_import(invoke, path)
    assert code == 0
    assert third["inserted"] == 0
    assert third["skipped_already_inserted"] == 40


def test_an_insert_whose_answer_was_lost_counts_as_done(
    invoke: Invoke, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = rows_file(tmp_path, 3)
    state = tmp_path / "barcodes.csv.state.jsonl"
    # A previous run sent row 1, 4WS applied it, and the run died before recording success.
    first = make_ean13("805", 0)
    sandbox.insert_barcode(PRODUCT, first, ["1", "Y4"], "EAN13")
    state.write_text(
        json.dumps({"barcode": first, "item_code": PRODUCT, "status": "sending"}) + "\n",
        encoding="utf-8",
    )
    code, summary = run_import(invoke, path)
    assert code == 0
    assert summary["already_present"] == 1
    assert summary["inserted"] == 2


def test_a_barcode_owned_by_another_sku_is_rejected(
    invoke: Invoke, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = rows_file(tmp_path, 1)
    sandbox.insert_barcode(PRODUCT, make_ean13("805", 0), ["XL", "RED"], "EAN13")
    code, summary = run_import(invoke, path)
    assert code == 1
    assert summary["rejected_by_4ws"] == 1
    with (tmp_path / "barcodes.csv.rejected.csv").open(encoding="utf-8") as handle:
        assert "already used" in next(csv.DictReader(handle))["reason"]


def test_the_same_sku_already_holding_the_barcode_is_fine(
    invoke: Invoke, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = rows_file(tmp_path, 1)
    sandbox.insert_barcode(PRODUCT, make_ean13("805", 0), ["1", "Y4"], "EAN13")
    code, summary = run_import(invoke, path)
    assert code == 0
    assert summary["already_present"] == 1


def test_429_retry_intervals_are_honoured(
    invoke: Invoke, sandbox: Sandbox, clock: ManualClock, tmp_path: Path
) -> None:
    path = rows_file(tmp_path, 10)
    sandbox.faults.add("insert_barcode", Fault.rate_limited(7.0), times=4)
    code, summary = run_import(invoke, path, "--concurrency", "2")
    assert code == 0, summary
    assert summary["inserted"] == 10
    assert clock.slept.count(7.0) >= 4  # every Retry-After waited for, on the test clock


def test_client_side_rate_limit(invoke: Invoke, clock: ManualClock, tmp_path: Path) -> None:
    path = rows_file(tmp_path, 21)
    before = clock.monotonic()
    result = invoke("barcodes", "import", str(path), "--rate", "5", "--json")
    assert result.exit_code == 0, result.output
    assert clock.monotonic() - before == pytest.approx(4.0)  # 21 starts at 5/s: 20 gaps


def test_dry_run_validates_ten_thousand_rows_quickly(
    invoke: Invoke, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = rows_file(tmp_path, 10_000, extra=f"{PRODUCT},123,EAN13,1,Y4\n")
    started = time.perf_counter()
    code, summary = run_import(invoke, path, "--dry-run")
    assert time.perf_counter() - started < 5
    assert code == 1
    assert summary["rows"] == 10_001
    assert summary["invalid"] == 1
    assert summary["inserted"] == 0
    assert sandbox.barcode_record(make_ean13("805", 0)) is None


@pytest.mark.slow  # about 9 s: httpx's ASGI transport is fast once sniffio is installed
def test_ten_thousand_inserts(invoke: Invoke, sandbox: Sandbox, tmp_path: Path) -> None:
    path = rows_file(tmp_path, 10_000)
    started = time.perf_counter()
    code, summary = run_import(invoke, path, "--concurrency", "16")
    elapsed = time.perf_counter() - started
    assert code == 0
    assert summary["inserted"] == 10_000
    assert sandbox.barcode_record(make_ean13("805", 9_999)) is not None
    print(f"10,000 inserts against the in-process sandbox: {elapsed:.1f}s")


def test_bad_header_exits_2(invoke: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("sku,ean\n", encoding="utf-8")
    result = invoke("barcodes", "import", str(path))
    assert result.exit_code == 2
    assert "missing column(s) item_code, barcode" in result.stderr
