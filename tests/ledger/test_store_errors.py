"""Every store turns its driver's errors into the ledger's own (``errors.py``): a card
locked too long is ``LedgerLockTimeout``, any other driver failure ``LedgerError``, so a
host's ``except FourWSError`` catches a ledger outage. Nothing of a failed transaction is
written."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from fourws_pay.errors import FourWSError, LedgerError, LedgerLockTimeout
from fourws_pay.ledger import LedgerStore, SQLiteStore
from tests.services import StoreFactory

SHORT_LOCK_WAIT: dict[str, dict[str, Any]] = {
    "sqlite": {"busy_timeout_ms": 150},
    "postgres": {"lock_timeout_ms": 150},
    "mysql": {"lock_timeout_s": 1},
    "redis": {"lock_timeout": 0.15},
}


def test_a_card_locked_too_long_is_a_typed_lock_timeout(store_factory: StoreFactory) -> None:
    holder_store = store_factory()
    waiter = store_factory(**SHORT_LOCK_WAIT[store_factory.kind])
    locked, done = threading.Event(), threading.Event()

    def hold() -> None:
        with holder_store.card_transaction("7000000000001"):
            locked.set()
            done.wait(20)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert locked.wait(10)
        with pytest.raises(LedgerLockTimeout) as caught, waiter.card_transaction("7000000000001"):
            pass
        assert isinstance(caught.value, FourWSError)
        assert "7000000000001" not in str(caught.value)
    finally:
        done.set()
        thread.join(20)
    with waiter.card_transaction("7000000000001"):  # usable again once the holder is gone
        pass


def _break(store: LedgerStore, kind: str) -> None:
    """Make the next listing fail inside the driver."""
    if kind == "sqlite":
        assert isinstance(store, SQLiteStore)
        conn = sqlite3.connect(store.path)
        conn.execute("DROP TABLE operations")
        conn.commit()
        conn.close()
    elif kind == "redis":
        client = store._client  # type: ignore[attr-defined]
        client.set(store._key("os:prepared"), "not a set")  # type: ignore[attr-defined]
    else:
        store.drop()  # type: ignore[attr-defined]


def test_driver_errors_are_ledger_errors(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.list_operations()
    _break(store, store_factory.kind)
    with pytest.raises(LedgerError) as caught:
        store.list_operations()
    assert isinstance(caught.value.__cause__, Exception)
    if store_factory.kind != "redis":
        with pytest.raises(LedgerError), store.snapshot() as tx:
            tx.get_operation("op_x")


def _open_descriptors(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            count += 1
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to count files")
def test_sqlite_store_leaves_no_connection_open(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    for _ in range(5):
        store = SQLiteStore(path)
        store.list_operations()
        store.close()
    assert _open_descriptors(path) == 0
