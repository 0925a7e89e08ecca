"""The embedded SQLite ledger: exact round trips, compare-and-set, durability, locking."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from fourws_pay.errors import ConfigurationError
from fourws_pay.ledger import SQLiteStore, open_store
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def reservation(n: int = 1, barcode: str = "2000000001814", amount: str = "10.00") -> Reservation:
    return Reservation(
        id=f"res_{n}",
        barcode=barcode,
        amount=Decimal(amount),
        currency="EUR",
        decimals=2,
        entity_code="440",
        order_ref=f"ORD-{n}",
        state=ReservationState.ACTIVE,
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=15),
        updated_at=NOW,
    )


def operation(n: int = 1, reservation_id: str = "res_1") -> Operation:
    return Operation(
        id=f"op_{n}",
        kind=OperationKind.CAPTURE,
        reservation_id=reservation_id,
        barcode="2000000001814",
        amount=Decimal("10.00"),
        currency="EUR",
        entity_code="440",
        state=OperationState.PREPARED,
        created_at=NOW,
        updated_at=NOW,
        deadline=NOW + timedelta(minutes=10),
        callback_token_hash="ab" * 32,
        balance_before=Decimal("390.00"),
    )


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "ledger.db")
    yield s
    s.close()


def test_round_trip_is_exact(store: SQLiteStore) -> None:
    r = replace(reservation(), amount=Decimal("0.10"), forfeited=Decimal("0.05"))
    op = replace(operation(), amount=Decimal("0.10"), balance_before=Decimal("1E+2"))
    with store.card_transaction(r.barcode) as tx:
        tx.insert_reservation(r)
        tx.insert_operation(op)
    assert store.get_reservation(r.id) == r
    loaded = store.get_operation(op.id)
    assert loaded == op
    assert loaded is not None
    assert loaded.balance_before == Decimal(100)


def test_compare_and_set_refuses_stale_state(store: SQLiteStore) -> None:
    with store.transaction() as tx:
        tx.insert_operation(operation())
    sending = replace(operation(), state=OperationState.SENDING)
    with store.transaction() as tx:
        assert tx.update_operation(sending, OperationState.PREPARED)
    with store.transaction() as tx:  # a second writer with a stale view loses
        assert not tx.update_operation(
            replace(operation(), state=OperationState.FAILED), OperationState.PREPARED
        )
    stored = store.get_operation("op_1")
    assert stored is not None
    assert stored.state is OperationState.SENDING


def test_rollback_on_error_leaves_nothing(store: SQLiteStore) -> None:
    with pytest.raises(RuntimeError), store.card_transaction("x") as tx:
        tx.insert_reservation(reservation())
        raise RuntimeError("boom")
    assert store.get_reservation("res_1") is None


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    first = SQLiteStore(path)
    with first.card_transaction("2000000001814") as tx:
        tx.insert_reservation(reservation())
    first.close()
    again = open_store(f"sqlite:///{path}")
    assert again.get_reservation("res_1") == reservation()
    again.close()


def test_listings_filter_by_state_and_order(store: SQLiteStore) -> None:
    with store.transaction() as tx:
        tx.insert_reservation(reservation(1))
        tx.insert_reservation(replace(reservation(2), state=ReservationState.RELEASED))
    assert [r.id for r in store.list_reservations([ReservationState.ACTIVE])] == ["res_1"]
    assert [r.id for r in store.list_reservations(order_ref="ORD-2")] == ["res_2"]
    assert len(store.list_reservations()) == 2


def test_card_queries(store: SQLiteStore) -> None:
    settled = replace(
        operation(2), state=OperationState.SUCCEEDED, settled_at=NOW + timedelta(seconds=5)
    )
    with store.transaction() as tx:
        tx.insert_reservation(reservation(1))
        tx.insert_operation(operation(1))
        tx.insert_operation(settled)
        assert [
            o.id for o in tx.operations_for_card("2000000001814", [OperationState.PREPARED])
        ] == ["op_1"]
        assert [o.id for o in tx.operations_settled_since("2000000001814", NOW)] == ["op_2"]
        assert tx.operations_settled_since("2000000001814", NOW + timedelta(seconds=6)) == []
        assert [o.id for o in tx.captures_of_reservation("res_1")] == ["op_1", "op_2"]


def test_memory_and_bad_urls_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteStore(":memory:")
    with pytest.raises(ConfigurationError):
        open_store("ledger.db")
    with pytest.raises(ConfigurationError):
        open_store("ftp://x")


def read_modify_write(store: SQLiteStore, rounds: int, barrier: threading.Barrier) -> None:
    barrier.wait()
    for i in range(rounds):
        with store.card_transaction("2000000001814") as tx:
            count = len(tx.reservations_for_card("2000000001814", [ReservationState.ACTIVE]))
            tx.insert_reservation(
                replace(reservation(), id=f"res_{threading.get_ident()}_{i}", order_ref=str(count))
            )


def test_card_transactions_serialise_read_then_write(store: SQLiteStore) -> None:
    """Each insert records how many it saw: with the critical section they are all distinct."""
    threads = 4
    rounds = 25
    barrier = threading.Barrier(threads)
    workers = [
        threading.Thread(target=read_modify_write, args=(store, rounds, barrier))
        for _ in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seen = [r.order_ref for r in store.list_reservations()]
    assert sorted(map(int, seen)) == list(range(threads * rounds))


def test_live_lookups_do_not_scan_the_history_after_analyze(store: SQLiteStore) -> None:
    """``reconcile``'s listing by state and a refund's ``children_of`` stay index look-ups on
    a ledger that is almost all settled captures (parent_id NULL), even once ``ANALYZE`` has
    told the planner that a state or a parent_id value covers half the table on average."""
    settled = operation(0)
    with store.transaction() as tx:
        tx.insert_operation(replace(settled, id="op_live", state=OperationState.ENQUEUED))
    conn = store._conn()
    conn.execute(
        "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 5000)"
        " INSERT INTO operations SELECT 'op_h' || n, 'capture', 'res_h' || n, barcode, amount,"
        " currency, entity_code, 'succeeded', created_at, updated_at, deadline,"
        " callback_token_hash, NULL, balance_before, NULL, NULL, NULL, updated_at"
        " FROM seq, operations WHERE operations.id = 'op_live'"
    )
    conn.execute("ANALYZE")  # statistics from before the first refund, as in a young shop
    with store.transaction() as tx:
        tx.insert_operation(
            replace(
                settled,
                id="op_child",
                kind=OperationKind.REFUND,
                parent_id="op_h1",
                state=OperationState.SUCCEEDED,
            )
        )
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        live = store.list_operations([OperationState.PREPARED, OperationState.ENQUEUED])
        with store.snapshot() as tx:
            children = tx.children_of("op_h1", OperationKind.REFUND)
    finally:
        conn.set_trace_callback(None)
    assert [op.id for op in live] == ["op_live"]
    assert [op.id for op in children] == ["op_child"]
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2
    for sql in selects:
        plan = " | ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "SCAN operations" not in plan, (sql, plan)
        assert "SEARCH operations USING INDEX" in plan, (sql, plan)
