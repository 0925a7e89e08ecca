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
from decimal import Decimal
from enum import Enum
from typing import Any, TypeAlias
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import pymysql
import pymysql.cursors
from pymysql.constants import CLIENT, SERVER_STATUS

from fourws_pay.errors import ConfigurationError
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)

_RES_COLUMNS = tuple(f.name for f in fields(Reservation))
_OP_COLUMNS = tuple(f.name for f in fields(Operation))
_DECIMAL_COLUMNS = frozenset({"amount", "forfeited", "balance_before"})
_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
_KNOWN_CARDS_MAX = 100_000

_TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS {p}reservations (
    id VARCHAR(191) NOT NULL PRIMARY KEY,
    barcode VARCHAR(191) NOT NULL,
    amount VARCHAR(64) NOT NULL,
    currency VARCHAR(16) NOT NULL,
    decimals INT NOT NULL,
    entity_code VARCHAR(191) NOT NULL,
    order_ref VARCHAR(191) NOT NULL,
    state VARCHAR(32) NOT NULL,
    created_at DATETIME(6) NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    forfeited VARCHAR(64) NOT NULL,
    operation_id VARCHAR(191) NULL,
    updated_at DATETIME(6) NULL,
    KEY {p}reservations_card (barcode, state),
    KEY {p}reservations_state (state, order_ref)
) """
    + _TABLE_OPTIONS,
    """
CREATE TABLE IF NOT EXISTS {p}operations (
    id VARCHAR(191) NOT NULL PRIMARY KEY,
    kind VARCHAR(32) NOT NULL,
    reservation_id VARCHAR(191) NOT NULL,
    barcode VARCHAR(191) NOT NULL,
    amount VARCHAR(64) NOT NULL,
    currency VARCHAR(16) NOT NULL,
    entity_code VARCHAR(191) NOT NULL,
    state VARCHAR(32) NOT NULL,
    created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    deadline DATETIME(6) NOT NULL,
    callback_token_hash VARCHAR(255) NOT NULL,
    queue_id VARCHAR(191) NULL,
    balance_before VARCHAR(64) NULL,
    parent_id VARCHAR(191) NULL,
    message TEXT NULL,
    callback_id VARCHAR(191) NULL,
    settled_at DATETIME(6) NULL,
    KEY {p}operations_card (barcode, state),
    KEY {p}operations_state (state),
    KEY {p}operations_reservation (reservation_id),
    KEY {p}operations_parent (parent_id)
) """
    + _TABLE_OPTIONS,
    """
CREATE TABLE IF NOT EXISTS {p}card_locks (
    barcode VARCHAR(191) NOT NULL PRIMARY KEY
) """
    + _TABLE_OPTIONS,
)

Row = dict[str, Any]
Connection: TypeAlias = "pymysql.connections.Connection[pymysql.cursors.DictCursor]"


def _param(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("ledger times must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _row(obj: Reservation | Operation, columns: Sequence[str]) -> list[Any]:
    return [_param(getattr(obj, c)) for c in columns]


def _decode(row: Row) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = value.replace(tzinfo=UTC)
        elif key in _DECIMAL_COLUMNS and value is not None:
            value = Decimal(value)
        values[key] = value
    return values


def _reservation(row: Row) -> Reservation:
    values = _decode(row)
    values["state"] = ReservationState(values["state"])
    return Reservation(**values)


def _operation(row: Row) -> Operation:
    values = _decode(row)
    values["state"] = OperationState(values["state"])
    values["kind"] = OperationKind(values["kind"])
    return Operation(**values)


def _marks(values: Iterable[Any]) -> tuple[str, list[Any]]:
    items = list(values)
    return ",".join(["%s"] * len(items)) or "NULL", items


class MySQLTransaction:
    """``LedgerTransaction`` over one PyMySQL connection inside a server transaction."""

    def __init__(self, conn: Connection, prefix: str) -> None:
        self._conn = conn
        self._res = f"{prefix}reservations"
        self._ops = f"{prefix}operations"

    def _execute(self, query: str, params: Sequence[Any] = ()) -> pymysql.cursors.DictCursor:
        cur = self._conn.cursor()
        cur.execute(query, tuple(params))
        return cur

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._execute(query, params) as cur:
            return list(cur.fetchall())

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
        self._execute(query, values).close()

    def _update(self, table: str, columns: Sequence[str], values: list[Any], expected: str) -> bool:
        sets = ",".join(f"{c} = %s" for c in columns[1:])
        query = f"UPDATE {table} SET {sets} WHERE id = %s AND state = %s"  # noqa: S608
        with self._execute(query, [*values[1:], values[0], expected]) as cur:
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


class _Pool:
    """Idle connections kept for reuse: a transaction or a read borrows one, then returns it.

    A pool (rather than one connection per thread) keeps the number of server sessions bounded
    when a host's threads come and go. After a fork the child starts with an empty pool and
    never closes the parent's connections (``COM_QUIT`` on the shared socket would end the
    parent's sessions).
    """

    def __init__(self, connect: Callable[[], Connection], max_idle: int) -> None:
        self._connect = connect
        self._max_idle = max_idle
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _mine(self) -> list[Connection]:
        if self._pid != os.getpid():
            self._idle, self._pid = [], os.getpid()
        return self._idle

    @contextmanager
    def borrow(self) -> Iterator[Connection]:
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
                    with suppress(pymysql.Error):
                        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._mine(), []
        for conn in idle:
            with suppress(pymysql.Error):
                conn.close()


def _reusable(conn: Connection) -> bool:
    status = int(getattr(conn, "server_status", 0))  # not in the type stubs
    return bool(conn.open) and not status & SERVER_STATUS.SERVER_STATUS_IN_TRANS


class MySQLStore:
    """``LedgerStore`` in InnoDB tables named ``<table_prefix>reservations/operations``."""

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
        if not _PREFIX.match(table_prefix):
            raise ConfigurationError(
                "table_prefix must be letters, digits and underscores (at most 40), "
                f"not starting with a digit: {table_prefix!r}"
            )
        self.table_prefix = table_prefix
        self.locking = locking
        self._args = _connect_args(url)
        self._lock_timeout_s = max(1, int(lock_timeout_s))
        self._connect_timeout = connect_timeout
        self._local = threading.local()
        self._pool = _Pool(self._connect, max_idle=pool_size)
        self._known_cards: set[str] = set()
        try:
            with self._pool.borrow() as conn:
                for statement in _SCHEMA:
                    self._execute(conn, statement.format(p=table_prefix))
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
            cur.execute(
                f"SET time_zone = '+00:00', innodb_lock_wait_timeout = {self._lock_timeout_s}"
            )
        return conn

    def _execute(self, conn: Connection, query: str, params: Sequence[Any] = ()) -> int:
        with conn.cursor() as cur:
            return cur.execute(query, tuple(params))

    def _ensure_lock_row(self, conn: Connection, card: str) -> None:
        """Create the card's lock row in its own autocommit statement (see module docstring)."""
        if card in self._known_cards:
            return
        locks = f"{self.table_prefix}card_locks"
        self._execute(conn, f"INSERT IGNORE INTO {locks} (barcode) VALUES (%s)", [card])  # noqa: S608
        if len(self._known_cards) >= _KNOWN_CARDS_MAX:
            self._known_cards.clear()
        self._known_cards.add(card)

    def _lock_card(self, conn: Connection, card: str) -> None:
        locks = f"{self.table_prefix}card_locks"
        lock = f"SELECT barcode FROM {locks} WHERE barcode = %s FOR UPDATE"  # noqa: S608
        if not self._execute(conn, lock, [card]):
            # The row vanished (tables dropped and re-created): create it in this transaction;
            # the new row's insert lock is then the card lock.
            self._execute(conn, f"INSERT INTO {locks} (barcode) VALUES (%s)", [card])  # noqa: S608

    @contextmanager
    def _tx(self, *begin: str, card: str | None = None) -> Iterator[MySQLTransaction]:
        if getattr(self._local, "depth", 0) and self._local.pid == os.getpid():
            raise RuntimeError("ledger transactions do not nest")
        self._local.depth, self._local.pid = 1, os.getpid()
        try:
            with self._pool.borrow() as conn:
                if card is not None:
                    self._ensure_lock_row(conn, card)
                for statement in begin:
                    self._execute(conn, statement)
                try:
                    if card is not None:
                        self._lock_card(conn, card)
                    yield MySQLTransaction(conn, self.table_prefix)
                except BaseException:
                    with suppress(pymysql.Error):
                        conn.rollback()
                    raise
                conn.commit()
        finally:
            self._local.depth = 0

    def card_transaction(self, barcode: str) -> Any:
        """The card's lock row is locked before anything is read (see the module docstring)."""
        return self._tx("START TRANSACTION", card=barcode if self.locking else None)

    def transaction(self) -> Any:
        return self._tx("START TRANSACTION")

    def snapshot(self) -> Any:
        """``SET TRANSACTION`` covers the next transaction only; the session stays RC."""
        return self._tx(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        )

    def _read(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._pool.borrow() as conn:
            return MySQLTransaction(conn, self.table_prefix)._rows(query, params)

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
            self._execute(
                conn, f"DROP TABLE IF EXISTS {p}operations, {p}reservations, {p}card_locks"
            )
        self._known_cards.clear()

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
    driver_url, from_url = _split_options(url, known)
    return MySQLStore(driver_url, **{**from_url, **options})
