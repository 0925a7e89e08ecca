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

Query plans must not grow with the history, which is almost all settled rows. After
``ANALYZE`` the planner knows only averages (a default build keeps no histograms), so it
would full-scan ``operations`` for the two look-ups whose answer is a few rows hidden among
many: ``list_operations(states)`` names its index (``INDEXED BY operations_state``: the
states asked for, in flight or unknown, are rare, whatever the average per state says), and
``children_of`` uses a partial index over non-NULL ``parent_id`` (the NULL of every capture
would otherwise look like one value covering most of the table). The schema statements are
``IF [NOT] EXISTS``, so an existing file upgrades when it is opened.

``locking=False`` exists only so the contention test can show that the lock is what
prevents over-reservation: it runs each statement in autocommit instead.
"""

from __future__ import annotations

import functools
import operator
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fourws_pay.errors import ConfigurationError, LedgerClosedError
from fourws_pay.ledger._errors import mapped_errors
from fourws_pay.ledger._sql import Row, SQLTransaction, check_lock_key, column_types, param
from fourws_pay.limits import ISSUED_CARD_TEXT, OPERATION_TEXT, ORDER_REFUND_TEXT, RESERVATION_TEXT
from fourws_pay.payments.models import (
    IssuedCard,
    IssuedCardState,
    Operation,
    OperationKind,
    OperationState,
    OrderRefund,
    OrderRefundState,
    RefundStrategy,
    Reservation,
    ReservationState,
    refund_parts_json,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reservations (
    id {r[id]} PRIMARY KEY,
    barcode {r[barcode]} NOT NULL,
    amount TEXT NOT NULL,
    currency {r[currency]} NOT NULL,
    decimals INTEGER NOT NULL,
    entity_code {r[entity_code]} NOT NULL,
    order_ref {r[order_ref]} NOT NULL,
    state {r[state]} NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    forfeited TEXT NOT NULL,
    operation_id {r[operation_id]},
    updated_at TEXT
);
CREATE INDEX IF NOT EXISTS reservations_card ON reservations (barcode, state);
CREATE INDEX IF NOT EXISTS reservations_state ON reservations (state, order_ref);
CREATE TABLE IF NOT EXISTS operations (
    id {o[id]} PRIMARY KEY,
    kind {o[kind]} NOT NULL,
    reservation_id {o[reservation_id]} NOT NULL,
    barcode {o[barcode]} NOT NULL,
    amount TEXT NOT NULL,
    currency {o[currency]} NOT NULL,
    entity_code {o[entity_code]} NOT NULL,
    state {o[state]} NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deadline TEXT NOT NULL,
    callback_token_hash {o[callback_token_hash]} NOT NULL,
    queue_id {o[queue_id]},
    balance_before TEXT,
    parent_id {o[parent_id]},
    message {o[message]},
    callback_id {o[callback_id]},
    settled_at TEXT
);
CREATE INDEX IF NOT EXISTS operations_card ON operations (barcode, state);
CREATE INDEX IF NOT EXISTS operations_state ON operations (state);
CREATE INDEX IF NOT EXISTS operations_reservation ON operations (reservation_id);
DROP INDEX IF EXISTS operations_parent;
CREATE INDEX IF NOT EXISTS operations_child ON operations (parent_id) WHERE parent_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS issued_cards (
    id {i[id]} PRIMARY KEY,
    order_ref {i[order_ref]} NOT NULL,
    line_id {i[line_id]} NOT NULL,
    line_index INTEGER NOT NULL,
    amount TEXT NOT NULL,
    currency {i[currency]} NOT NULL,
    decimals INTEGER NOT NULL,
    item_code {i[item_code]} NOT NULL,
    entity_code {i[entity_code]} NOT NULL,
    state {i[state]} NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    barcode {i[barcode]},
    start_validity TEXT,
    end_validity TEXT,
    generate_op_id {i[generate_op_id]},
    activate_op_id {i[activate_op_id]},
    refund_of {i[refund_of]},
    reclaim_reservation_id {i[reclaim_reservation_id]},
    delivered_at TEXT,
    deliveries INTEGER NOT NULL,
    message {i[message]}
);
CREATE INDEX IF NOT EXISTS issued_cards_order ON issued_cards (order_ref);
CREATE INDEX IF NOT EXISTS issued_cards_state ON issued_cards (state);
CREATE TABLE IF NOT EXISTS order_refunds (
    id {f[id]} PRIMARY KEY,
    order_ref {f[order_ref]} NOT NULL,
    refund_key {f[refund_key]} NOT NULL,
    amount TEXT NOT NULL,
    currency {f[currency]} NOT NULL,
    decimals INTEGER NOT NULL,
    strategy {f[strategy]} NOT NULL,
    state {f[state]} NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    parts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS order_refunds_order ON order_refunds (order_ref);
CREATE INDEX IF NOT EXISTS order_refunds_state ON order_refunds (state);
"""


def _text(column: str, width: int) -> str:
    """SQLite's TEXT has no width: a CHECK keeps the one in ``fourws_pay.limits``."""
    return f"TEXT CHECK (length({column}) <= {width})"


SCHEMA = _SCHEMA.format(
    r=column_types(RESERVATION_TEXT, _text),
    o=column_types(OPERATION_TEXT, _text),
    i=column_types(ISSUED_CARD_TEXT, _text),
    f=column_types(ORDER_REFUND_TEXT, _text),
)


def _decimal_or_none(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _time_or_none(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


# Columns stored as text that come back as Decimal or datetime (see the module docstring).
_DECODERS: dict[str, Any] = {
    **dict.fromkeys(("amount", "forfeited", "balance_before"), _decimal_or_none),
    **dict.fromkeys(
        (
            "created_at",
            "expires_at",
            "updated_at",
            "deadline",
            "settled_at",
            "start_validity",
            "end_validity",
            "delivered_at",
        ),
        _time_or_none,
    ),
}


def _is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: the busy timeout ran out waiting for another writer."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc)


def _ts(value: datetime) -> str:
    """Fixed-width ISO-8601 in UTC (``2026-06-01T12:00:00.000000+00:00``): compares as text."""
    if value.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    Decimal: str,
    datetime: _ts,
    **{
        enum: operator.attrgetter("value")
        for enum in (
            ReservationState,
            OperationState,
            OperationKind,
            IssuedCardState,
            OrderRefundState,
            RefundStrategy,
        )
    },
    tuple: refund_parts_json,
}


@functools.lru_cache(maxsize=256)
def _qmark(query: str) -> str:
    """The shared statements speak ``%s``; sqlite3 speaks ``?`` (none has a literal ``%``)."""
    return query.replace("%s", "?")


class SQLiteTransaction(SQLTransaction[sqlite3.Connection]):
    """``LedgerTransaction`` over one SQLite connection: the shared SQL statements, with
    SQLite's placeholders and its text encodings of amounts and times."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn, prefix="")

    @staticmethod
    def _param(value: Any) -> Any:
        """Amounts as exact Decimal text, times as fixed-width UTC text, enums as text.

        Dispatched on the exact type first: this runs for every column of every write."""
        kind = type(value)
        if kind is str or kind is int or value is None:
            return value
        encode = _ENCODERS.get(kind)
        if encode is not None:
            return encode(value)
        if isinstance(value, Decimal):  # subclasses
            return str(value)
        if isinstance(value, datetime):
            return _ts(value)
        return param(value)

    @staticmethod
    def _decode(row: Row) -> dict[str, Any]:
        for key, decode in _DECODERS.items():
            if key in row:
                row[key] = decode(row[key])
        return row

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = self._conn.cursor()
        cursor.row_factory = None  # plain tuples: cheaper than sqlite3.Row, then one dict
        cursor.execute(_qmark(query), tuple(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _write(self, query: str, params: Sequence[Any]) -> int:
        return self._conn.execute(_qmark(query), tuple(params)).rowcount

    def _operations_by_state(self) -> str:
        """Named, because after ``ANALYZE`` the planner would rather scan (module docstring)."""
        return f"{self._ops} INDEXED BY operations_state"


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
        # close() waits for the calls in flight (a connection closed under a running
        # statement can crash the process) and refuses new ones afterwards.
        self._gate = threading.Condition()
        self._in_flight = 0
        self._closed = False
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

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        with self._gate:
            if self._closed:
                raise LedgerClosedError("the SQLite ledger is closed")
            self._in_flight += 1
        try:
            with mapped_errors(
                sqlite3.Error,
                store="SQLite",
                is_lock_timeout=_is_busy,
                is_conflict=lambda exc: isinstance(exc, sqlite3.IntegrityError),
            ):
                yield
        finally:
            with self._gate:
                self._in_flight -= 1
                self._gate.notify_all()

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

    def card_transaction(self, barcode: str) -> AbstractContextManager[SQLiteTransaction]:
        """``BEGIN IMMEDIATE``: the write lock is taken before anything is read."""
        check_lock_key(barcode)
        return self._tx("BEGIN IMMEDIATE")

    def transaction(self) -> AbstractContextManager[SQLiteTransaction]:
        return self._tx("BEGIN IMMEDIATE")

    def snapshot(self) -> AbstractContextManager[SQLiteTransaction]:
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
        with self._mapped():
            return SQLiteTransaction(self._conn())._list_reservations(states, order_ref)

    def list_operations(
        self,
        states: Iterable[OperationState] | None = None,
        kind: OperationKind | None = None,
    ) -> list[Operation]:
        with self._mapped():
            return SQLiteTransaction(self._conn())._list_operations(states, kind)

    def get_issued_card(self, card_id: str) -> IssuedCard | None:
        with self._mapped():
            return SQLiteTransaction(self._conn()).get_issued_card(card_id)

    def list_issued_cards(
        self, states: Iterable[IssuedCardState] | None = None, order_ref: str | None = None
    ) -> list[IssuedCard]:
        with self._mapped():
            return SQLiteTransaction(self._conn())._list_issued_cards(states, order_ref)

    def list_order_refunds(
        self, states: Iterable[OrderRefundState] | None = None, order_ref: str | None = None
    ) -> list[OrderRefund]:
        with self._mapped():
            return SQLiteTransaction(self._conn())._list_order_refunds(states, order_ref)

    def close(self) -> None:
        """Wait for the calls in flight, then close every connection; later calls raise."""
        with self._gate:
            self._closed = True
            self._gate.wait_for(lambda: self._in_flight == 0)
        with self._all_lock:
            for conn in self._all:
                with suppress(sqlite3.ProgrammingError):
                    conn.close()
            self._all.clear()
        self._local = threading.local()
