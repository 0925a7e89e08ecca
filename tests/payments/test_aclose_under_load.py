"""Closing under load: ``aclose()`` while async checkouts run on ledger threads.

The child (``aclose_child.py``) runs rounds of concurrent checkouts on a SQLite ledger and
calls ``aclose()`` once the first is through. Before the fix the store closed its
connections under running statements: of 10 single-round children, 8 segfaulted and 2
saw calls fail with other errors. A segfault is a negative return code here. With the
store's gate but the old ``aclose()`` (executor shut down without waiting) the child fails
too: ledger threads are still running when ``aclose()`` has returned.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fourws_pay import LedgerClosedError, SQLiteStore

ROOT = Path(__file__).resolve().parents[2]


def test_aclose_mid_flight_neither_crashes_nor_fails_calls(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.payments.aclose_child", str(tmp_path), "6"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr[-2000:])


def test_sqlite_close_waits_for_the_transaction_in_flight(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.db")
    closer = threading.Thread(target=store.close)
    with store.transaction() as tx:
        closer.start()
        for _ in range(5000):  # bounded: close() marks the store closed at once
            if store._closed:
                break
            threading.Event().wait(0.001)
        assert store._closed
        assert tx.get_reservation("none") is None  # the connection is still open
        assert closer.is_alive()
    closer.join(5)
    assert not closer.is_alive()
    with pytest.raises(LedgerClosedError):
        store.list_reservations()
    with pytest.raises(LedgerClosedError), store.transaction():
        pass
