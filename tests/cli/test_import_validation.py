"""CSV validation of ``barcodes import``: every reason a row is refused before sending."""

from __future__ import annotations

from pathlib import Path

import pytest

from fourws_pay.cli.barcode_import import Rejected, Row, StateFile, check_barcode, read_csv
from fourws_pay.errors import InvalidInputError
from fourws_pay.sandbox.ean import make_ean13


def write(tmp_path: Path, text: str, name: str = "rows.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("barcode", "kind", "problem"),
    [
        ("4006381333931", "EAN13", None),
        ("4006381333932", "EAN13", "check digit is 2, expected 1"),
        ("805020005808", "EAN13", "exactly 13 digits"),
        ("80502000580811", "EAN13", "exactly 13 digits"),
        ("805020005808X", "EAN13", "exactly 13 digits"),
        ("٨٠٥٠٢٠٠٠٥٨٠٨١", "EAN13", "exactly 13 digits"),  # non-ASCII digits
        ("96385074", "EAN8", None),
        ("96385075", "EAN8", "check digit is 5, expected 4"),
        ("ABC-123", "CODE128", None),
        ("ABC 123", "CODE128", "spaces"),
    ],
)
def test_check_barcode(barcode: str, kind: str, problem: str | None) -> None:
    found = check_barcode(barcode, kind)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_read_csv_sorts_rows_into_valid_and_rejected(tmp_path: Path) -> None:
    good = make_ean13("805", 1)
    other = make_ean13("805", 2)
    path = write(
        tmp_path,
        "item_code,barcode,barcode_type,dimension_level1,dimension_level2\n"
        f"SHIRT,{good},,M,RED\n"
        f"SHIRT,{good[:-1]}{(int(good[-1]) + 1) % 10},EAN13,M,BLUE\n"
        f",{other},,,\n"
        f"SHIRT,{other},,,RED\n"
        f"SHIRT,{good},,L,RED\n"
        "SHIRT,,,,\n",
    )
    rows, rejected = read_csv(path)
    assert rows == [Row(2, "SHIRT", good, "EAN13", ("M", "RED"))]
    reasons = {r.line: r.reason for r in rejected}
    assert "check digit" in reasons[3]
    assert reasons[4] == "item_code is empty"
    assert "dimension_level1 is empty" in reasons[5]
    assert reasons[6] == "barcode already on line 2"
    assert reasons[7] == "barcode is empty"


def test_semicolon_files_with_a_bom_are_read(tmp_path: Path) -> None:
    code = make_ean13("805", 7)
    path = tmp_path / "excel.csv"
    path.write_bytes(f"\ufeffITEM_CODE;BARCODE\nCUP;{code}\n".encode())
    rows, rejected = read_csv(path)
    assert rejected == []
    assert rows[0].barcode == code
    assert rows[0].dimensions == ()


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("item_code,code\n", "missing column(s) barcode"),
        ("item_code,barcode,dimension_leve1\n", "unknown column(s) dimension_leve1"),
    ],
)
def test_bad_header_is_an_input_error(tmp_path: Path, header: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_csv(write(tmp_path, header))


def test_extra_cells_are_rejected(tmp_path: Path) -> None:
    code = make_ean13("805", 9)
    rows, rejected = read_csv(write(tmp_path, f"item_code,barcode\nCUP,{code},oops\n"))
    assert rows == []
    assert rejected == [Rejected(2, "CUP", code, "more cells than columns")]


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file"):
        read_csv(tmp_path / "absent.csv")


def test_state_file_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    row = Row(2, "CUP", make_ean13("805", 1), "EAN13", ())
    state = StateFile(path)
    state.record(row, "sending")
    state.record(row, "inserted", "17")
    state.close()
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"barcode": "80')  # the process died mid-write
    again = StateFile(path)
    assert again.inserted == {row.barcode}
    later = Row(3, "CUP", make_ean13("805", 2), "EAN13", ())
    again.record(later, "inserted")
    again.close()
    assert StateFile(path).inserted == {row.barcode, later.barcode}


def test_a_file_that_is_not_a_state_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not an import state file"):
        StateFile(write(tmp_path, "item_code,barcode\n", "state.jsonl"))
