"""The embedded default ledger: one SQLite file, WAL, ``BEGIN IMMEDIATE`` per card.

SQLite has one writer at a time, so ``BEGIN IMMEDIATE`` (take the write lock at BEGIN, not at
the first write) makes every card transaction a critical section across threads *and*
processes sharing the file. That is coarser than per-card but correct, and a transaction
here lasts tens of microseconds because no HTTP call happens inside one.

Durability: WAL with ``synchronous=NORMAL`` survives a killed process (``kill -9``), which is
what invariant 14 asks; it does not promise survival of a power cut (use ``FULL`` via
``synchronous="FULL"`` if that matters to you).

Each thread (and each forked process) gets its own connection. Amounts are stored as text
(exact Decimal), times as fixed-width ISO-8601 UTC text so that they compare as strings.

``locking=False`` exists only so the contention test can show that the lock is what
prevents over-reservation: it runs each statement in autocommit instead.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fourws_pay.errors import ConfigurationError
from fourws_pay.ledger._errors import mapped_errors
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    barcode TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    decimals INTEGER NOT NULL,
    entity_code TEXT NOT NULL,
    order_ref TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    forfeited TEXT NOT NULL,
    operation_id TEXT,
    updated_at TEXT
);
CREATE INDEX IF NOT EXISTS reservations_card ON reservations (barcode, state);
CREATE INDEX IF NOT EXISTS reservations_state ON reservations (state, order_ref);
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    barcode TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    entity_code TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deadline TEXT NOT NULL,
    callback_token_hash TEXT NOT NULL,
    queue_id TEXT,
    balance_before TEXT,
    parent_id TEXT,
    message TEXT,
    callback_id TEXT,
    settled_at TEXT
);
CREATE INDEX IF NOT EXISTS operations_card ON operations (barcode, state);
CREATE INDEX IF NOT EXISTS operations_state ON operations (state);
CREATE INDEX IF NOT EXISTS operations_reservation ON operations (reservation_id);
CREATE INDEX IF NOT EXISTS operations_parent ON operations (parent_id);
"""

_RES_COLUMNS = (
    "id",
    "barcode",
    "amount",
    "currency",
    "decimals",
    "entity_code",
    "order_ref",
    "state",
    "created_at",
    "expires_at",
    "forfeited",
    "operation_id",
    "updated_at",
)
_OP_COLUMNS = (
    "id",
    "kind",
    "reservation_id",
    "barcode",
    "amount",
    "currency",
    "entity_code",
    "state",
    "created_at",
    "updated_at",
    "deadline",
    "callback_token_hash",
    "queue_id",
    "balance_before",
    "parent_id",
    "message",
    "callback_id",
    "settled_at",
)


def _is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: the busy timeout ran out waiting for another writer."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc)


def _ts(value: datetime | None) -> str | None:
    """Fixed-width ISO-8601 in UTC (``2026-06-01T12:00:00.000000+00:00``): compares as text."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _req_dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _reservation_row(r: Reservation) -> tuple[Any, ...]:
    return (
        r.id,
        r.barcode,
        str(r.amount),
        r.currency,
        r.decimals,
        r.entity_code,
        r.order_ref,
        r.state.value,
        _ts(r.created_at),
        _ts(r.expires_at),
        str(r.forfeited),
        r.operation_id,
        _ts(r.updated_at),
    )


def _operation_row(o: Operation) -> tuple[Any, ...]:
    return (
        o.id,
        o.kind.value,
        o.reservation_id,
        o.barcode,
        str(o.amount),
        o.currency,
        o.entity_code,
        o.state.value,
        _ts(o.created_at),
        _ts(o.updated_at),
        _ts(o.deadline),
        o.callback_token_hash,
        o.queue_id,
        None if o.balance_before is None else str(o.balance_before),
        o.parent_id,
        o.message,
        o.callback_id,
        _ts(o.settled_at),
    )


def _reservation(row: sqlite3.Row) -> Reservation:
    return Reservation(
        id=row["id"],
        barcode=row["barcode"],
        amount=Decimal(row["amount"]),
        currency=row["currency"],
        decimals=row["decimals"],
        entity_code=row["entity_code"],
        order_ref=row["order_ref"],
        state=ReservationState(row["state"]),
        created_at=_req_dt(row["created_at"]),
        expires_at=_req_dt(row["expires_at"]),
        forfeited=Decimal(row["forfeited"]),
        operation_id=row["operation_id"],
        updated_at=_dt(row["updated_at"]),
    )


def _operation(row: sqlite3.Row) -> Operation:
    return Operation(
        id=row["id"],
        kind=OperationKind(row["kind"]),
        reservation_id=row["reservation_id"],
        barcode=row["barcode"],
        amount=Decimal(row["amount"]),
        currency=row["currency"],
        entity_code=row["entity_code"],
        state=OperationState(row["state"]),
        created_at=_req_dt(row["created_at"]),
        updated_at=_req_dt(row["updated_at"]),
        deadline=_req_dt(row["deadline"]),
        callback_token_hash=row["callback_token_hash"],
        queue_id=row["queue_id"],
        balance_before=_dec(row["balance_before"]),
        parent_id=row["parent_id"],
        message=row["message"],
        callback_id=row["callback_id"],
        settled_at=_dt(row["settled_at"]),
    )


_PLACEHOLDERS = [",".join("?" * n) for n in range(16)]


def _marks(values: Iterable[Any]) -> tuple[str, list[Any]]:
    items = list(values)
    n = len(items)
    return (_PLACEHOLDERS[n] if n < 16 else ",".join("?" * n)), items


class SQLiteTransaction:
    """``LedgerTransaction`` over one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def reservations_for_card(
        self, barcode: str, states: Iterable[ReservationState]
    ) -> list[Reservation]:
        marks, values = _marks(s.value for s in states)
        rows = self._rows(
            f"SELECT * FROM reservations WHERE barcode = ? AND state IN ({marks})",  # noqa: S608
            [barcode, *values],
        )
        return [_reservation(r) for r in rows]

    def operations_for_card(
        self, barcode: str, states: Iterable[OperationState]
    ) -> list[Operation]:
        marks, values = _marks(s.value for s in states)
        rows = self._rows(
            f"SELECT * FROM operations WHERE barcode = ? AND state IN ({marks})",  # noqa: S608
            [barcode, *values],
        )
        return [_operation(r) for r in rows]

    def operations_settled_since(self, barcode: str, since: datetime) -> list[Operation]:
        rows = self._rows(
            "SELECT * FROM operations WHERE barcode = ? AND state = ? AND settled_at >= ?",
            [barcode, OperationState.SUCCEEDED.value, _ts(since)],
        )
        return [_operation(r) for r in rows]

    def get_reservation(self, reservation_id: str) -> Reservation | None:
        rows = self._rows("SELECT * FROM reservations WHERE id = ?", [reservation_id])
        return _reservation(rows[0]) if rows else None

    def get_operation(self, operation_id: str) -> Operation | None:
        rows = self._rows("SELECT * FROM operations WHERE id = ?", [operation_id])
        return _operation(rows[0]) if rows else None

    def operations_for_reservation(self, reservation_id: str) -> list[Operation]:
        rows = self._rows(
            "SELECT * FROM operations WHERE reservation_id = ? AND kind = ? ORDER BY created_at",
            [reservation_id, OperationKind.CAPTURE.value],
        )
        return [_operation(r) for r in rows]

    def children_of(self, operation_id: str, kind: OperationKind) -> list[Operation]:
        rows = self._rows(
            "SELECT * FROM operations WHERE parent_id = ? AND kind = ? ORDER BY created_at",
            [operation_id, kind.value],
        )
        return [_operation(r) for r in rows]

    def insert_reservation(self, reservation: Reservation) -> None:
        self._conn.execute(
            f"INSERT INTO reservations ({','.join(_RES_COLUMNS)}) "  # noqa: S608
            f"VALUES ({','.join('?' * len(_RES_COLUMNS))})",
            _reservation_row(reservation),
        )

    def insert_operation(self, operation: Operation) -> None:
        self._conn.execute(
            f"INSERT INTO operations ({','.join(_OP_COLUMNS)}) "  # noqa: S608
            f"VALUES ({','.join('?' * len(_OP_COLUMNS))})",
            _operation_row(operation),
        )

    def update_reservation(self, reservation: Reservation, expected: ReservationState) -> bool:
        row = _reservation_row(reservation)
        sets = ",".join(f"{c} = ?" for c in _RES_COLUMNS[1:])
        cur = self._conn.execute(
            f"UPDATE reservations SET {sets} WHERE id = ? AND state = ?",  # noqa: S608
            (*row[1:], reservation.id, expected.value),
        )
        return cur.rowcount == 1

    def update_operation(self, operation: Operation, expected: OperationState) -> bool:
        row = _operation_row(operation)
        sets = ",".join(f"{c} = ?" for c in _OP_COLUMNS[1:])
        cur = self._conn.execute(
            f"UPDATE operations SET {sets} WHERE id = ? AND state = ?",  # noqa: S608
            (*row[1:], operation.id, expected.value),
        )
        return cur.rowcount == 1


class SQLiteStore:
    """``LedgerStore`` in one SQLite file (``":memory:"`` is refused: it cannot be shared)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        locking: bool = True,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 30_000,
    ) -> None:
        text = os.fspath(path)
        if text == ":memory:" or not text:
            raise ConfigurationError("SQLiteStore needs a file path (threads share it)")
        if synchronous.upper() not in {"NORMAL", "FULL", "EXTRA"}:
            raise ConfigurationError("synchronous must be NORMAL, FULL or EXTRA")
        self.path = Path(text)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.locking = locking
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        try:
            with closing(self._connect_raw()) as conn:  # `with conn` alone commits, never closes
                conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigurationError(
                f"the SQLite ledger at {self.path} cannot be used: {exc}"
            ) from None

    def _connect_raw(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout_ms / 1000,
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = self._connect_raw()
            self._local.conn = conn
            self._local.pid = os.getpid()
            with self._all_lock:
                self._all.append(conn)
        return conn

    @staticmethod
    def _mapped() -> AbstractContextManager[None]:
        return mapped_errors(
            sqlite3.Error,
            store="SQLite",
            is_lock_timeout=_is_busy,
            is_conflict=lambda exc: isinstance(exc, sqlite3.IntegrityError),
        )

    @contextmanager
    def _tx(self, begin: str) -> Iterator[SQLiteTransaction]:
        if getattr(self._local, "depth", 0):
            raise RuntimeError("ledger transactions do not nest")
        with self._mapped():
            conn = self._conn()
            if not self.locking:
                yield SQLiteTransaction(conn)
                return
            conn.execute(begin)
            self._local.depth = 1
            try:
                yield SQLiteTransaction(conn)
            except BaseException:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
            finally:
                self._local.depth = 0

    def card_transaction(self, barcode: str) -> Any:
        """``BEGIN IMMEDIATE``: the write lock is taken before anything is read."""
        return self._tx("BEGIN IMMEDIATE")

    def transaction(self) -> Any:
        return self._tx("BEGIN IMMEDIATE")

    def snapshot(self) -> Any:
        """A deferred transaction: a consistent WAL snapshot without the write lock."""
        return self._tx("BEGIN DEFERRED")

    def get_reservation(self, reservation_id: str) -> Reservation | None:
        with self._mapped():
            return SQLiteTransaction(self._conn()).get_reservation(reservation_id)

    def get_operation(self, operation_id: str) -> Operation | None:
        with self._mapped():
            return SQLiteTransaction(self._conn()).get_operation(operation_id)

    def list_reservations(
        self, states: Iterable[ReservationState] | None = None, order_ref: str | None = None
    ) -> list[Reservation]:
        sql = "SELECT * FROM reservations WHERE 1 = 1"
        params: list[Any] = []
        if states is not None:
            marks, values = _marks(s.value for s in states)
            sql += f" AND state IN ({marks})"
            params += values
        if order_ref is not None:
            sql += " AND order_ref = ?"
            params.append(order_ref)
        with self._mapped():
            rows = self._conn().execute(sql + " ORDER BY created_at, id", params).fetchall()
        return [_reservation(r) for r in rows]

    def list_operations(
        self,
        states: Iterable[OperationState] | None = None,
        kind: OperationKind | None = None,
    ) -> list[Operation]:
        sql = "SELECT * FROM operations WHERE 1 = 1"
        params: list[Any] = []
        if states is not None:
            marks, values = _marks(s.value for s in states)
            sql += f" AND state IN ({marks})"
            params += values
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind.value)
        with self._mapped():
            rows = self._conn().execute(sql + " ORDER BY created_at, id", params).fetchall()
        return [_operation(r) for r in rows]

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                with suppress(sqlite3.ProgrammingError):
                    conn.close()
            self._all.clear()
        self._local = threading.local()
