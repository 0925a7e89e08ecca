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
over-reservation. The queries, row mapping, pool and transaction skeleton shared with the
MariaDB store live in ``fourws_pay.ledger._sql``; this module holds what is PostgreSQL's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, TypeAlias

import psycopg
from psycopg.rows import DictRow, dict_row

from fourws_pay.errors import ConfigurationError, LedgerError
from fourws_pay.ledger._sql import (
    SQLStore,
    SQLTransaction,
    check_lock_key,
    column_types,
    split_options,
)
from fourws_pay.limits import ISSUED_CARD_TEXT, OPERATION_TEXT, ORDER_REFUND_TEXT, RESERVATION_TEXT

Conn: TypeAlias = "psycopg.Connection[DictRow]"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {p}reservations (
    id {r[id]} PRIMARY KEY,
    barcode {r[barcode]} NOT NULL,
    amount NUMERIC NOT NULL,
    currency {r[currency]} NOT NULL,
    decimals INTEGER NOT NULL,
    entity_code {r[entity_code]} NOT NULL,
    order_ref {r[order_ref]} NOT NULL,
    state {r[state]} NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    forfeited NUMERIC NOT NULL,
    operation_id {r[operation_id]},
    updated_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS {p}reservations_card ON {p}reservations (barcode, state);
CREATE INDEX IF NOT EXISTS {p}reservations_state ON {p}reservations (state, order_ref);
CREATE TABLE IF NOT EXISTS {p}operations (
    id {o[id]} PRIMARY KEY,
    kind {o[kind]} NOT NULL,
    reservation_id {o[reservation_id]} NOT NULL,
    barcode {o[barcode]} NOT NULL,
    amount NUMERIC NOT NULL,
    currency {o[currency]} NOT NULL,
    entity_code {o[entity_code]} NOT NULL,
    state {o[state]} NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    deadline TIMESTAMPTZ NOT NULL,
    callback_token_hash {o[callback_token_hash]} NOT NULL,
    queue_id {o[queue_id]},
    balance_before NUMERIC,
    parent_id {o[parent_id]},
    message {o[message]},
    callback_id {o[callback_id]},
    settled_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS {p}operations_card ON {p}operations (barcode, state);
CREATE INDEX IF NOT EXISTS {p}operations_state ON {p}operations (state);
CREATE INDEX IF NOT EXISTS {p}operations_reservation ON {p}operations (reservation_id);
CREATE INDEX IF NOT EXISTS {p}operations_parent ON {p}operations (parent_id);
CREATE TABLE IF NOT EXISTS {p}issued_cards (
    id {i[id]} PRIMARY KEY,
    order_ref {i[order_ref]} NOT NULL,
    line_id {i[line_id]} NOT NULL,
    line_index INTEGER NOT NULL,
    amount NUMERIC NOT NULL,
    currency {i[currency]} NOT NULL,
    decimals INTEGER NOT NULL,
    item_code {i[item_code]} NOT NULL,
    entity_code {i[entity_code]} NOT NULL,
    state {i[state]} NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    barcode {i[barcode]},
    start_validity TIMESTAMPTZ,
    end_validity TIMESTAMPTZ,
    generate_op_id {i[generate_op_id]},
    activate_op_id {i[activate_op_id]},
    refund_of {i[refund_of]},
    reclaim_reservation_id {i[reclaim_reservation_id]},
    delivered_at TIMESTAMPTZ,
    deliveries INTEGER NOT NULL,
    message {i[message]}
);
CREATE INDEX IF NOT EXISTS {p}issued_cards_order ON {p}issued_cards (order_ref);
CREATE INDEX IF NOT EXISTS {p}issued_cards_state ON {p}issued_cards (state);
CREATE TABLE IF NOT EXISTS {p}order_refunds (
    id {f[id]} PRIMARY KEY,
    order_ref {f[order_ref]} NOT NULL,
    refund_key {f[refund_key]} NOT NULL,
    amount NUMERIC NOT NULL,
    currency {f[currency]} NOT NULL,
    decimals INTEGER NOT NULL,
    strategy {f[strategy]} NOT NULL,
    state {f[state]} NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    parts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {p}order_refunds_order ON {p}order_refunds (order_ref);
CREATE INDEX IF NOT EXISTS {p}order_refunds_state ON {p}order_refunds (state);
"""


def _varchar(column: str, width: int) -> str:
    return f"VARCHAR({width})"  # characters, whatever the encoding


_TYPES = {
    "r": column_types(RESERVATION_TEXT, _varchar),
    "o": column_types(OPERATION_TEXT, _varchar),
    "i": column_types(ISSUED_CARD_TEXT, _varchar),
    "f": column_types(ORDER_REFUND_TEXT, _varchar),
}


class PostgresTransaction(SQLTransaction[Conn]):
    """``LedgerTransaction`` over one psycopg connection inside a server transaction."""

    @staticmethod
    def _decode(row: DictRow) -> dict[str, Any]:
        return {k: v.astimezone(UTC) if isinstance(v, datetime) else v for k, v in row.items()}

    def execute(self, query: str, params: Sequence[Any] = ()) -> psycopg.Cursor[DictRow]:
        return self._conn.execute(query.encode(), params)

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[DictRow]:
        return self.execute(query, params).fetchall()

    def _write(self, query: str, params: Sequence[Any]) -> int:
        return self.execute(query, params).rowcount


def _where(url: str) -> str:
    """``host:port/db`` of a URL, without the credentials (errors must not carry them)."""
    rest = url.partition("://")[2]
    return rest.rpartition("@")[2].partition("?")[0]


class PostgresStore(SQLStore[Conn, PostgresTransaction]):
    """``LedgerStore`` in two PostgreSQL tables named ``<table_prefix>reservations/operations``."""

    _driver_error = psycopg.Error
    _store_name = "PostgreSQL"

    @staticmethod
    def _is_lock_timeout(exc: BaseException) -> bool:
        # 55P03 lock_not_available (lock_timeout), 57014 query_canceled (statement_timeout)
        return getattr(exc, "sqlstate", None) in {"55P03", "57014"}

    @staticmethod
    def _is_conflict(exc: BaseException) -> bool:
        # 23505 unique_violation, 40001 serialization_failure, 40P01 deadlock_detected
        return getattr(exc, "sqlstate", None) in {"23505", "40001", "40P01"}

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
        super().__init__(table_prefix=table_prefix, locking=locking, pool_size=pool_size)
        self.url = url
        self._lock_timeout_ms = int(lock_timeout_ms)
        self._connect_timeout = connect_timeout
        try:
            self._create_schema()
        except LedgerError as exc:
            if not isinstance(exc.__cause__, psycopg.OperationalError):
                raise
            raise ConfigurationError(
                f"the PostgreSQL ledger at {_where(url)} is not reachable: {exc.__cause__}"
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

    def _reusable(self, conn: Conn) -> bool:
        return (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )

    def _open(self, conn: Conn) -> PostgresTransaction:
        return PostgresTransaction(conn, self.table_prefix)

    def _run(self, conn: Conn, statement: str) -> None:
        conn.execute(statement.encode())

    def _take_lock(self, conn: Conn, lock: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [lock])

    def _commit(self, conn: Conn) -> None:
        conn.execute("COMMIT")

    def _rollback(self, conn: Conn) -> None:
        conn.execute("ROLLBACK")

    def _create_schema(self) -> None:
        # Concurrent CREATE … IF NOT EXISTS can still collide in the catalog: serialise.
        with self._tx("BEGIN", lock=f"fourws-pay schema {self.table_prefix}") as tx:
            tx.execute(_SCHEMA.format(p=self.table_prefix, **_TYPES))

    def card_transaction(self, barcode: str) -> AbstractContextManager[PostgresTransaction]:
        """The advisory lock is taken before anything is read (see the module docstring)."""
        check_lock_key(barcode)
        key = self.table_prefix + barcode if self.locking else None
        return self._tx("BEGIN ISOLATION LEVEL READ COMMITTED", lock=key)

    def transaction(self) -> AbstractContextManager[PostgresTransaction]:
        return self._tx("BEGIN ISOLATION LEVEL READ COMMITTED")

    def snapshot(self) -> AbstractContextManager[PostgresTransaction]:
        return self._tx("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    def drop(self) -> None:
        """Drop this prefix's tables (tests use a throw-away prefix per run)."""
        p = self.table_prefix
        with self._mapped(), self._pool.borrow() as conn:
            conn.execute(
                f"DROP TABLE IF EXISTS {p}operations, {p}reservations, {p}issued_cards, "
                f"{p}order_refunds".encode()
            )


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
    driver_url, from_url = split_options(url, known)
    return PostgresStore(driver_url, **{**from_url, **options})
