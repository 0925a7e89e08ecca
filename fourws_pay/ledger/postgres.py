"""The PostgreSQL ledger: same schema and semantics as SQLite, per-card advisory locks.

Why these choices:

- ``card_transaction(barcode)`` runs ``pg_advisory_xact_lock`` on a 64-bit hash of the table
  prefix and the barcode as the first statement of a ``READ COMMITTED`` transaction. The lock is
  per card (other cards proceed in parallel), shared by every thread and process using the
  database, and released by COMMIT/ROLLBACK or when the session dies, so a killed worker never
  leaves a card locked. ``READ COMMITTED`` matters: each later statement takes a fresh snapshot,
  so the reads after the lock see everything the previous holder committed. Under
  ``REPEATABLE READ`` the snapshot would be taken by the lock statement itself, *before* the
  wait, and the read-then-write would use stale data.
- Compare-and-set is ``UPDATE … WHERE id = %s AND state = %s``: the row lock plus PostgreSQL's
  re-check of the WHERE clause after waiting makes exactly one of two racing writers win, with
  or without the card lock (``transaction()``).
- ``snapshot()`` is ``REPEATABLE READ, READ ONLY``: one snapshot for every read, no locks.
- Amounts are ``NUMERIC`` without a typmod, which keeps the scale as written (``10.00`` comes
  back as ``10.00``); times are ``TIMESTAMPTZ`` (microseconds), read back in UTC.

Transactions and reads borrow connections from a small pool (``pool_size`` idle ones kept);
after a fork the child opens its own and leaves the parent's alone. ``locking=False`` skips the
advisory lock; it exists so the contention tests can show that the lock is what prevents
over-reservation.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.rows import DictRow, dict_row

from fourws_pay.errors import ConfigurationError
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)

Conn: TypeAlias = "psycopg.Connection[DictRow]"
_RES_COLUMNS = tuple(f.name for f in fields(Reservation))
_OP_COLUMNS = tuple(f.name for f in fields(Operation))
_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {p}reservations (
    id TEXT PRIMARY KEY,
    barcode TEXT NOT NULL,
    amount NUMERIC NOT NULL,
    currency TEXT NOT NULL,
    decimals INTEGER NOT NULL,
    entity_code TEXT NOT NULL,
    order_ref TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    forfeited NUMERIC NOT NULL,
    operation_id TEXT,
    updated_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS {p}reservations_card ON {p}reservations (barcode, state);
CREATE INDEX IF NOT EXISTS {p}reservations_state ON {p}reservations (state, order_ref);
CREATE TABLE IF NOT EXISTS {p}operations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    barcode TEXT NOT NULL,
    amount NUMERIC NOT NULL,
    currency TEXT NOT NULL,
    entity_code TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    deadline TIMESTAMPTZ NOT NULL,
    callback_token_hash TEXT NOT NULL,
    queue_id TEXT,
    balance_before NUMERIC,
    parent_id TEXT,
    message TEXT,
    callback_id TEXT,
    settled_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS {p}operations_card ON {p}operations (barcode, state);
CREATE INDEX IF NOT EXISTS {p}operations_state ON {p}operations (state);
CREATE INDEX IF NOT EXISTS {p}operations_reservation ON {p}operations (reservation_id);
CREATE INDEX IF NOT EXISTS {p}operations_parent ON {p}operations (parent_id);
"""


def _param(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("ledger times must be timezone-aware")
        return value.astimezone(UTC)
    return value


def _row(obj: Reservation | Operation, columns: Sequence[str]) -> list[Any]:
    return [_param(getattr(obj, c)) for c in columns]


def _utc(row: DictRow) -> dict[str, Any]:
    return {k: v.astimezone(UTC) if isinstance(v, datetime) else v for k, v in row.items()}


def _reservation(row: DictRow) -> Reservation:
    values = _utc(row)
    values["state"] = ReservationState(values["state"])
    return Reservation(**values)


def _operation(row: DictRow) -> Operation:
    values = _utc(row)
    values["state"] = OperationState(values["state"])
    values["kind"] = OperationKind(values["kind"])
    return Operation(**values)


def _marks(values: Iterable[Any]) -> tuple[str, list[Any]]:
    items = list(values)
    return ",".join(["%s"] * len(items)) or "NULL", items


class PostgresTransaction:
    """``LedgerTransaction`` over one psycopg connection inside a server transaction."""

    def __init__(self, conn: Conn, prefix: str) -> None:
        self._conn = conn
        self._res = f"{prefix}reservations"
        self._ops = f"{prefix}operations"

    def execute(self, query: str, params: Sequence[Any] = ()) -> psycopg.Cursor[DictRow]:
        return self._conn.execute(query.encode(), params)

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[DictRow]:
        return self.execute(query, params).fetchall()

    def reservations_for_card(
        self, barcode: str, states: Iterable[ReservationState]
    ) -> list[Reservation]:
        marks, values = _marks(s.value for s in states)
        rows = self._rows(
            f"SELECT * FROM {self._res} WHERE barcode = %s AND state IN ({marks})"  # noqa: S608
            " ORDER BY created_at, id",
            [barcode, *values],
        )
        return [_reservation(r) for r in rows]

    def operations_for_card(
        self, barcode: str, states: Iterable[OperationState]
    ) -> list[Operation]:
        marks, values = _marks(s.value for s in states)
        rows = self._rows(
            f"SELECT * FROM {self._ops} WHERE barcode = %s AND state IN ({marks})"  # noqa: S608
            " ORDER BY created_at, id",
            [barcode, *values],
        )
        return [_operation(r) for r in rows]

    def operations_settled_since(self, barcode: str, since: datetime) -> list[Operation]:
        rows = self._rows(
            f"SELECT * FROM {self._ops} WHERE barcode = %s AND state = %s"  # noqa: S608
            " AND settled_at >= %s ORDER BY created_at, id",
            [barcode, OperationState.SUCCEEDED.value, _param(since)],
        )
        return [_operation(r) for r in rows]

    def get_reservation(self, reservation_id: str) -> Reservation | None:
        rows = self._rows(f"SELECT * FROM {self._res} WHERE id = %s", [reservation_id])  # noqa: S608
        return _reservation(rows[0]) if rows else None

    def get_operation(self, operation_id: str) -> Operation | None:
        rows = self._rows(f"SELECT * FROM {self._ops} WHERE id = %s", [operation_id])  # noqa: S608
        return _operation(rows[0]) if rows else None

    def operations_for_reservation(self, reservation_id: str) -> list[Operation]:
        rows = self._rows(
            f"SELECT * FROM {self._ops} WHERE reservation_id = %s AND kind = %s"  # noqa: S608
            " ORDER BY created_at, id",
            [reservation_id, OperationKind.CAPTURE.value],
        )
        return [_operation(r) for r in rows]

    def children_of(self, operation_id: str, kind: OperationKind) -> list[Operation]:
        rows = self._rows(
            f"SELECT * FROM {self._ops} WHERE parent_id = %s AND kind = %s"  # noqa: S608
            " ORDER BY created_at, id",
            [operation_id, kind.value],
        )
        return [_operation(r) for r in rows]

    def _insert(self, table: str, columns: Sequence[str], values: list[Any]) -> None:
        query = (
            f"INSERT INTO {table} ({','.join(columns)}) "  # noqa: S608
            f"VALUES ({','.join(['%s'] * len(columns))})"
        )
        self._conn.execute(query.encode(), values)

    def _update(self, table: str, columns: Sequence[str], values: list[Any], expected: str) -> bool:
        sets = ",".join(f"{c} = %s" for c in columns[1:])
        query = f"UPDATE {table} SET {sets} WHERE id = %s AND state = %s"  # noqa: S608
        cur = self._conn.execute(query.encode(), [*values[1:], values[0], expected])
        return cur.rowcount == 1

    def insert_reservation(self, reservation: Reservation) -> None:
        self._insert(self._res, _RES_COLUMNS, _row(reservation, _RES_COLUMNS))

    def insert_operation(self, operation: Operation) -> None:
        self._insert(self._ops, _OP_COLUMNS, _row(operation, _OP_COLUMNS))

    def update_reservation(self, reservation: Reservation, expected: ReservationState) -> bool:
        values = _row(reservation, _RES_COLUMNS)
        return self._update(self._res, _RES_COLUMNS, values, expected.value)

    def update_operation(self, operation: Operation, expected: OperationState) -> bool:
        values = _row(operation, _OP_COLUMNS)
        return self._update(self._ops, _OP_COLUMNS, values, expected.value)


def _where(url: str) -> str:
    """``host:port/db`` of a URL, without the credentials (errors must not carry them)."""
    rest = url.partition("://")[2]
    return rest.rpartition("@")[2].partition("?")[0]


class _Pool:
    """Idle connections kept for reuse: a transaction or a read borrows one, then returns it.

    A pool (rather than one connection per thread) keeps the number of server sessions bounded
    when a host's threads come and go. After a fork the child starts with an empty pool and
    never closes the parent's connections (that would end the parent's sessions).
    """

    def __init__(self, connect: Callable[[], Conn], max_idle: int) -> None:
        self._connect = connect
        self._max_idle = max_idle
        self._idle: list[Conn] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _mine(self) -> list[Conn]:
        if self._pid != os.getpid():
            self._idle, self._pid = [], os.getpid()
        return self._idle

    @contextmanager
    def borrow(self) -> Iterator[Conn]:
        owner = os.getpid()
        with self._lock:
            idle = self._mine()
            conn = idle.pop() if idle else None
        if conn is None or not _reusable(conn):
            conn = self._connect()
        try:
            yield conn
        finally:
            if os.getpid() == owner:
                with self._lock:
                    keep = _reusable(conn) and len(self._mine()) < self._max_idle
                    if keep:
                        self._idle.append(conn)
                if not keep:
                    with suppress(psycopg.Error):
                        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._mine(), []
        for conn in idle:
            with suppress(psycopg.Error):
                conn.close()


def _reusable(conn: Conn) -> bool:
    return (
        not conn.closed
        and not conn.broken
        and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    )


class PostgresStore:
    """``LedgerStore`` in two PostgreSQL tables named ``<table_prefix>reservations/operations``."""

    def __init__(
        self,
        url: str,
        *,
        table_prefix: str = "fourws_",
        locking: bool = True,
        lock_timeout_ms: int = 30_000,
        connect_timeout: float = 10.0,
        pool_size: int = 8,
    ) -> None:
        if not _PREFIX.match(table_prefix):
            raise ConfigurationError(
                "table_prefix must be letters, digits and underscores (at most 40), "
                f"not starting with a digit: {table_prefix!r}"
            )
        self.url = url
        self.table_prefix = table_prefix
        self.locking = locking
        self._lock_timeout_ms = int(lock_timeout_ms)
        self._connect_timeout = connect_timeout
        self._pool = _Pool(self._connect, max_idle=pool_size)
        self._local = threading.local()
        try:
            self._create_schema()
        except psycopg.OperationalError as exc:
            raise ConfigurationError(
                f"the PostgreSQL ledger at {_where(url)} is not reachable: {exc}"
            ) from None

    def _connect(self) -> Conn:
        conn = psycopg.connect(
            self.url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=max(1, round(self._connect_timeout)),
        )
        conn.execute(f"SET TIME ZONE 'UTC'; SET lock_timeout = {self._lock_timeout_ms}".encode())
        return conn

    def _create_schema(self) -> None:
        # Concurrent CREATE … IF NOT EXISTS can still collide in the catalog: serialise.
        with self._tx("BEGIN", lock_key=f"fourws-pay schema {self.table_prefix}") as tx:
            tx.execute(_SCHEMA.format(p=self.table_prefix))

    @contextmanager
    def _tx(self, begin: str, lock_key: str | None = None) -> Iterator[PostgresTransaction]:
        if getattr(self._local, "depth", 0) and self._local.pid == os.getpid():
            raise RuntimeError("ledger transactions do not nest")
        self._local.depth, self._local.pid = 1, os.getpid()
        try:
            with self._pool.borrow() as conn:
                conn.execute(begin.encode())
                try:
                    if lock_key is not None:
                        conn.execute(
                            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [lock_key]
                        )
                    yield PostgresTransaction(conn, self.table_prefix)
                except BaseException:
                    with suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        finally:
            self._local.depth = 0

    def card_transaction(self, barcode: str) -> Any:
        """The advisory lock is taken before anything is read (see the module docstring)."""
        key = self.table_prefix + barcode if self.locking else None
        return self._tx("BEGIN ISOLATION LEVEL READ COMMITTED", lock_key=key)

    def transaction(self) -> Any:
        return self._tx("BEGIN ISOLATION LEVEL READ COMMITTED")

    def snapshot(self) -> Any:
        return self._tx("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    def _read(self, query: str, params: Sequence[Any] = ()) -> list[DictRow]:
        with self._pool.borrow() as conn:
            return PostgresTransaction(conn, self.table_prefix)._rows(query, params)

    def get_reservation(self, reservation_id: str) -> Reservation | None:
        rows = self._read(
            f"SELECT * FROM {self.table_prefix}reservations WHERE id = %s",  # noqa: S608
            [reservation_id],
        )
        return _reservation(rows[0]) if rows else None

    def get_operation(self, operation_id: str) -> Operation | None:
        rows = self._read(
            f"SELECT * FROM {self.table_prefix}operations WHERE id = %s",  # noqa: S608
            [operation_id],
        )
        return _operation(rows[0]) if rows else None

    def list_reservations(
        self, states: Iterable[ReservationState] | None = None, order_ref: str | None = None
    ) -> list[Reservation]:
        query = f"SELECT * FROM {self.table_prefix}reservations WHERE TRUE"  # noqa: S608
        params: list[Any] = []
        if states is not None:
            marks, values = _marks(s.value for s in states)
            query += f" AND state IN ({marks})"
            params += values
        if order_ref is not None:
            query += " AND order_ref = %s"
            params.append(order_ref)
        return [_reservation(r) for r in self._read(query + " ORDER BY created_at, id", params)]

    def list_operations(
        self,
        states: Iterable[OperationState] | None = None,
        kind: OperationKind | None = None,
    ) -> list[Operation]:
        query = f"SELECT * FROM {self.table_prefix}operations WHERE TRUE"  # noqa: S608
        params: list[Any] = []
        if states is not None:
            marks, values = _marks(s.value for s in states)
            query += f" AND state IN ({marks})"
            params += values
        if kind is not None:
            query += " AND kind = %s"
            params.append(kind.value)
        return [_operation(r) for r in self._read(query + " ORDER BY created_at, id", params)]

    def drop(self) -> None:
        """Drop this prefix's tables (tests use a throw-away prefix per run)."""
        p = self.table_prefix
        with self._pool.borrow() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {p}operations, {p}reservations".encode())

    def close(self) -> None:
        """Close the idle connections (a later call opens new ones)."""
        self._pool.close()


def _split_options(url: str, known: dict[str, Callable[[str], Any]]) -> tuple[str, dict[str, Any]]:
    """Take this store's own options out of the URL query (``?table_prefix=shop1_``) so that
    ``Settings.ledger_url`` alone can configure them; the rest of the URL goes to the driver."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    options: dict[str, Any] = {}
    for name, value in pairs:
        if name in known:
            try:
                options[name] = known[name](value)
            except ValueError:
                raise ConfigurationError(f"bad ledger URL option {name}={value!r}") from None
    rest = urlencode([(n, v) for n, v in pairs if n not in known])
    return urlunsplit(parts._replace(query=rest)), options


def open_store(url: str, **options: Any) -> PostgresStore:
    """Entry point for ``fourws_pay.ledger.open_store`` (``postgresql://`` and ``postgres://``).

    Store options may also come from the URL query:
    ``table_prefix``, ``lock_timeout_ms``, ``pool_size``.
    Keyword arguments win over the URL.
    """
    known: dict[str, Callable[[str], Any]] = {
        "table_prefix": str,
        "lock_timeout_ms": int,
        "pool_size": int,
    }
    driver_url, from_url = _split_options(url, known)
    return PostgresStore(driver_url, **{**from_url, **options})
