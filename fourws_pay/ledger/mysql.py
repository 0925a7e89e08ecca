"""The MariaDB/MySQL ledger: same schema and semantics as SQLite, one InnoDB lock row per card.

Why these choices:

- ``card_transaction(barcode)`` locks the card's row in ``<prefix>card_locks`` with
  ``SELECT … FOR UPDATE`` as the first statement of the transaction. The row is created once,
  in its own autocommit ``INSERT IGNORE`` before the transaction, because creating it inside
  racing transactions makes InnoDB hand out shared duplicate-key locks that then deadlock on
  the upgrade. A row lock (rather than ``GET_LOCK``) is released by COMMIT/ROLLBACK and by a
  dead session, so it can never outlive the transaction it protects.
- Sessions run ``READ COMMITTED``: every statement reads the latest committed data, so what
  is read after the lock includes everything the previous holder committed, and InnoDB takes
  no gap locks, which keeps unrelated inserts from waiting on each other. (``REPEATABLE READ``
  would also work here, because its snapshot starts at the first plain read, after the lock;
  but that is a subtlety a later edit could break by reading before locking.)
- Compare-and-set is ``UPDATE … WHERE id = %s AND state = %s`` with the client flag
  ``FOUND_ROWS``: MariaDB otherwise reports *changed* rows, and a CAS that rewrites identical
  values would look lost.
- ``snapshot()`` is ``REPEATABLE READ`` + ``WITH CONSISTENT SNAPSHOT, READ ONLY``.
- Amounts are text: a ``DECIMAL(p, s)`` column forces one scale on every value (``10.00``
  would come back as ``10.0000000000``), text keeps the Decimal exactly as written. Times are
  ``DATETIME(6)`` holding UTC (microseconds), turned back into aware UTC datetimes.
- Tables use ``utf8mb4_bin`` so that ids and barcodes compare case-sensitively.

Transactions and reads borrow connections from a small pool (``pool_size`` idle ones kept);
after a fork the child opens its own and leaves the parent's alone. ``locking=False`` skips the
card lock; it exists so the contention tests can show that the lock is what prevents
over-reservation. The queries, row mapping, pool and transaction skeleton shared with the
PostgreSQL store live in ``fourws_pay.ledger._sql``; this module holds what is MariaDB's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql
import pymysql.cursors
from pymysql.constants import CLIENT, SERVER_STATUS

from fourws_pay.errors import ConfigurationError
from fourws_pay.ledger._sql import (
    Row,
    SQLStore,
    SQLTransaction,
    check_lock_key,
    column_types,
    param,
    split_options,
)
from fourws_pay.limits import (
    ISSUED_CARD_TEXT,
    LOCK_KEY_MAX,
    OPERATION_TEXT,
    ORDER_REFUND_TEXT,
    RESERVATION_TEXT,
)

_DECIMAL_COLUMNS = frozenset({"amount", "forfeited", "balance_before"})
_KNOWN_CARDS_MAX = 100_000

_TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC"


def _varchar(column: str, width: int) -> str:
    return f"VARCHAR({width})"  # characters: up to 4 bytes each in utf8mb4


_TYPES: dict[str, Any] = {
    "r": column_types(RESERVATION_TEXT, _varchar),
    "o": column_types(OPERATION_TEXT, _varchar),
    "i": column_types(ISSUED_CARD_TEXT, _varchar),
    "f": column_types(ORDER_REFUND_TEXT, _varchar),
    "lock_key": LOCK_KEY_MAX,
}
# Strict: a value too long for its column is an error, never silently cut (the store checks
# first, so this is the second line); the rest is MariaDB's default set, minus what MySQL 8
# no longer knows.
SQL_MODE = "STRICT_TRANS_TABLES,STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS {p}reservations (
    id {r[id]} NOT NULL PRIMARY KEY,
    barcode {r[barcode]} NOT NULL,
    amount VARCHAR(64) NOT NULL,
    currency {r[currency]} NOT NULL,
    decimals INT NOT NULL,
    entity_code {r[entity_code]} NOT NULL,
    order_ref {r[order_ref]} NOT NULL,
    state {r[state]} NOT NULL,
    created_at DATETIME(6) NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    forfeited VARCHAR(64) NOT NULL,
    operation_id {r[operation_id]} NULL,
    updated_at DATETIME(6) NULL,
    KEY {p}reservations_card (barcode, state),
    KEY {p}reservations_state (state, order_ref)
) """
    + _TABLE_OPTIONS,
    """
CREATE TABLE IF NOT EXISTS {p}operations (
    id {o[id]} NOT NULL PRIMARY KEY,
    kind {o[kind]} NOT NULL,
    reservation_id {o[reservation_id]} NOT NULL,
    barcode {o[barcode]} NOT NULL,
    amount VARCHAR(64) NOT NULL,
    currency {o[currency]} NOT NULL,
    entity_code {o[entity_code]} NOT NULL,
    state {o[state]} NOT NULL,
    created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    deadline DATETIME(6) NOT NULL,
    callback_token_hash {o[callback_token_hash]} NOT NULL,
    queue_id {o[queue_id]} NULL,
    balance_before VARCHAR(64) NULL,
    parent_id {o[parent_id]} NULL,
    message {o[message]} NULL,
    callback_id {o[callback_id]} NULL,
    settled_at DATETIME(6) NULL,
    KEY {p}operations_card (barcode, state),
    KEY {p}operations_state (state),
    KEY {p}operations_reservation (reservation_id),
    KEY {p}operations_parent (parent_id)
) """
    + _TABLE_OPTIONS,
    """
CREATE TABLE IF NOT EXISTS {p}issued_cards (
    id {i[id]} NOT NULL PRIMARY KEY,
    order_ref {i[order_ref]} NOT NULL,
    line_id {i[line_id]} NOT NULL,
    line_index INT NOT NULL,
    amount VARCHAR(64) NOT NULL,
    currency {i[currency]} NOT NULL,
    decimals INT NOT NULL,
    item_code {i[item_code]} NOT NULL,
    entity_code {i[entity_code]} NOT NULL,
    state {i[state]} NOT NULL,
    created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    barcode {i[barcode]} NULL,
    start_validity DATETIME(6) NULL,
    end_validity DATETIME(6) NULL,
    generate_op_id {i[generate_op_id]} NULL,
    activate_op_id {i[activate_op_id]} NULL,
    refund_of {i[refund_of]} NULL,
    reclaim_reservation_id {i[reclaim_reservation_id]} NULL,
    delivered_at DATETIME(6) NULL,
    deliveries INT NOT NULL,
    message {i[message]} NULL,
    KEY {p}issued_cards_order (order_ref),
    KEY {p}issued_cards_state (state)
) """
    + _TABLE_OPTIONS,
    """
CREATE TABLE IF NOT EXISTS {p}order_refunds (
    id {f[id]} NOT NULL PRIMARY KEY,
    order_ref {f[order_ref]} NOT NULL,
    refund_key {f[refund_key]} NOT NULL,
    amount VARCHAR(64) NOT NULL,
    currency {f[currency]} NOT NULL,
    decimals INT NOT NULL,
    strategy {f[strategy]} NOT NULL,
    state {f[state]} NOT NULL,
    created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    parts MEDIUMTEXT NOT NULL,
    KEY {p}order_refunds_order (order_ref),
    KEY {p}order_refunds_state (state)
) """
    + _TABLE_OPTIONS,
    """
CREATE TABLE IF NOT EXISTS {p}card_locks (
    barcode VARCHAR({lock_key}) NOT NULL PRIMARY KEY
) """
    + _TABLE_OPTIONS,
)

Connection: TypeAlias = "pymysql.connections.Connection[pymysql.cursors.DictCursor]"


class MySQLTransaction(SQLTransaction[Connection]):
    """``LedgerTransaction`` over one PyMySQL connection inside a server transaction."""

    @staticmethod
    def _param(value: Any) -> Any:
        """Amounts as text (see the module docstring), times as naive UTC for ``DATETIME``."""
        if isinstance(value, Decimal):
            return str(value)
        value = param(value)
        return value.replace(tzinfo=None) if isinstance(value, datetime) else value

    @staticmethod
    def _decode(row: Row) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, datetime):
                value = value.replace(tzinfo=UTC)
            elif key in _DECIMAL_COLUMNS and value is not None:
                value = Decimal(value)
            values[key] = value
        return values

    def _execute(self, query: str, params: Sequence[Any] = ()) -> pymysql.cursors.DictCursor:
        cur = self._conn.cursor()
        cur.execute(query, tuple(params))
        return cur

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._execute(query, params) as cur:
            return list(cur.fetchall())

    def _write(self, query: str, params: Sequence[Any]) -> int:
        """Matched rows, thanks to ``CLIENT.FOUND_ROWS`` (see the module docstring)."""
        with self._execute(query, params) as cur:
            return cur.rowcount


def _connect_args(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    args: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username) if parts.username else "root",
        "password": unquote(parts.password) if parts.password else "",
        "database": unquote(parts.path.lstrip("/")) or None,
    }
    if "unix_socket" in query:
        args["unix_socket"] = query["unix_socket"]
    if args["database"] is None:
        raise ConfigurationError("the MariaDB ledger URL needs a database: mysql://host/db")
    # PyMySQL otherwise *prefers* TLS and builds a fresh SSL context (about 0.1 s of loading
    # CA certificates) per connection; over loopback or a socket TLS protects nothing.
    ssl = query.get("ssl", "").lower()
    if ssl not in ("", "disabled", "preferred", "required"):
        raise ConfigurationError("ssl= must be disabled, preferred or required")
    local = "unix_socket" in args or args["host"] in ("127.0.0.1", "::1", "localhost")
    if ssl == "disabled" or (ssl == "" and local):
        args["ssl_disabled"] = True
    elif ssl == "required":
        args["ssl_verify_cert"] = True
    return args


class MySQLStore(SQLStore[Connection, MySQLTransaction]):
    """``LedgerStore`` in InnoDB tables named ``<table_prefix>reservations/operations``."""

    _driver_error = pymysql.Error
    _store_name = "MariaDB"

    @staticmethod
    def _is_lock_timeout(exc: BaseException) -> bool:
        return bool(exc.args) and exc.args[0] == 1205  # ER_LOCK_WAIT_TIMEOUT

    @staticmethod
    def _is_conflict(exc: BaseException) -> bool:
        return bool(exc.args) and exc.args[0] in {1062, 1213}  # ER_DUP_ENTRY, ER_LOCK_DEADLOCK

    def __init__(
        self,
        url: str,
        *,
        table_prefix: str = "fourws_",
        locking: bool = True,
        lock_timeout_s: int = 30,
        connect_timeout: float = 10.0,
        pool_size: int = 8,
    ) -> None:
        super().__init__(table_prefix=table_prefix, locking=locking, pool_size=pool_size)
        self._args = _connect_args(url)
        self._lock_timeout_s = max(1, int(lock_timeout_s))
        self._connect_timeout = connect_timeout
        self._known_cards: set[str] = set()
        try:
            with self._pool.borrow() as conn:
                for statement in _SCHEMA:
                    self._execute(conn, statement.format(p=table_prefix, **_TYPES))
        except pymysql.OperationalError as exc:
            where = f"{self._args.get('unix_socket') or self._args['host']}:{self._args['port']}"
            raise ConfigurationError(
                f"the MariaDB ledger at {where} is not reachable: {exc}"
            ) from None

    def _connect(self) -> Connection:
        conn: Connection = pymysql.connect(
            **self._args,
            autocommit=True,
            charset="utf8mb4",
            cursorclass=pymysql.cursors.DictCursor,
            client_flag=CLIENT.FOUND_ROWS,
            connect_timeout=self._connect_timeout,
        )
        with conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cur.execute(f"SET SESSION sql_mode = '{SQL_MODE}'")
            cur.execute(
                f"SET time_zone = '+00:00', innodb_lock_wait_timeout = {self._lock_timeout_s}"
            )
        return conn

    def _reusable(self, conn: Connection) -> bool:
        status = int(getattr(conn, "server_status", 0))  # not in the type stubs
        return bool(conn.open) and not status & SERVER_STATUS.SERVER_STATUS_IN_TRANS

    def _open(self, conn: Connection) -> MySQLTransaction:
        return MySQLTransaction(conn, self.table_prefix)

    def _execute(self, conn: Connection, query: str, params: Sequence[Any] = ()) -> int:
        with conn.cursor() as cur:
            return cur.execute(query, tuple(params))

    def _run(self, conn: Connection, statement: str) -> None:
        self._execute(conn, statement)

    def _prepare_lock(self, conn: Connection, card: str) -> None:
        """Create the card's lock row in its own autocommit statement (see module docstring)."""
        if card in self._known_cards:
            return
        locks = f"{self.table_prefix}card_locks"
        self._execute(conn, f"INSERT IGNORE INTO {locks} (barcode) VALUES (%s)", [card])  # noqa: S608
        if len(self._known_cards) >= _KNOWN_CARDS_MAX:
            self._known_cards.clear()
        self._known_cards.add(card)

    def _take_lock(self, conn: Connection, card: str) -> None:
        locks = f"{self.table_prefix}card_locks"
        lock = f"SELECT barcode FROM {locks} WHERE barcode = %s FOR UPDATE"  # noqa: S608
        if not self._execute(conn, lock, [card]):
            # The row vanished (tables dropped and re-created): create it in this transaction;
            # the new row's insert lock is then the card lock.
            self._execute(conn, f"INSERT INTO {locks} (barcode) VALUES (%s)", [card])  # noqa: S608

    def _commit(self, conn: Connection) -> None:
        conn.commit()

    def _rollback(self, conn: Connection) -> None:
        conn.rollback()

    def card_transaction(self, barcode: str) -> AbstractContextManager[MySQLTransaction]:
        """The card's lock row is locked before anything is read (see the module docstring)."""
        check_lock_key(barcode)
        return self._tx("START TRANSACTION", lock=barcode if self.locking else None)

    def transaction(self) -> AbstractContextManager[MySQLTransaction]:
        return self._tx("START TRANSACTION")

    def snapshot(self) -> AbstractContextManager[MySQLTransaction]:
        """``SET TRANSACTION`` covers the next transaction only; the session stays RC."""
        return self._tx(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        )

    def drop(self) -> None:
        """Drop this prefix's tables (tests use a throw-away prefix per run)."""
        p = self.table_prefix
        with self._mapped(), self._pool.borrow() as conn:
            self._execute(
                conn,
                f"DROP TABLE IF EXISTS {p}operations, {p}reservations, {p}issued_cards, "
                f"{p}order_refunds, {p}card_locks",
            )
        self._known_cards.clear()


def open_store(url: str, **options: Any) -> MySQLStore:
    """Entry point for ``fourws_pay.ledger.open_store`` (``mysql://`` and ``mariadb://``).

    Store options may also come from the URL query:
    ``table_prefix``, ``lock_timeout_s``, ``pool_size``.
    Keyword arguments win over the URL.
    """
    known: dict[str, Callable[[str], Any]] = {
        "table_prefix": str,
        "lock_timeout_s": int,
        "pool_size": int,
    }
    driver_url, from_url = split_options(url, known)
    return MySQLStore(driver_url, **{**from_url, **options})
