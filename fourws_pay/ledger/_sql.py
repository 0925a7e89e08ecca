"""What the server-backed SQL ledgers (PostgreSQL, MariaDB/MySQL) share.

Both stores keep the same tables, speak the ``%s`` parameter style and differ only in a
few dialect details, which their subclasses supply:

- how a value goes to the driver and comes back (``_param``/``_decode``: enums as text,
  times as aware UTC, amounts as exact Decimals, however the column stores them);
- how a statement runs and how many rows it matched (``_rows``/``_write``);
- how a transaction begins, takes its lock, commits and rolls back (``_tx`` hooks).

Compare-and-set is ``UPDATE … WHERE id = %s AND state = %s`` and counts as won only when the
driver reports exactly one matched row; each store's module docstring says why that is sound
for its server. Listings order by ``created_at, id`` so that equal timestamps still give a
stable order.

SQLite shares the statements (``SQLTransaction``), with its own hooks for the ``?``
placeholder and its text encodings; its store is its own (one connection per thread, no
server, ``BEGIN IMMEDIATE`` as the card lock), so it does not use ``SQLStore``.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import fields
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fourws_pay.errors import ConfigurationError
from fourws_pay.ledger._errors import mapped_errors
from fourws_pay.limits import (
    ID_MAX,
    ISSUED_CARD_TEXT,
    LOCK_KEY_MAX,
    OPERATION_TEXT,
    ORDER_REF_MAX,
    ORDER_REFUND_TEXT,
    RESERVATION_TEXT,
    check_record,
    check_text,
)
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
    refund_parts_from_json,
    refund_parts_json,
)

Row = dict[str, Any]
RES_COLUMNS = tuple(f.name for f in fields(Reservation))
OP_COLUMNS = tuple(f.name for f in fields(Operation))
CARD_COLUMNS = tuple(f.name for f in fields(IssuedCard))
REFUND_COLUMNS = tuple(f.name for f in fields(OrderRefund))
_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
TEXT_WIDTHS: dict[type, dict[str, int]] = {
    Reservation: RESERVATION_TEXT,
    Operation: OPERATION_TEXT,
    IssuedCard: ISSUED_CARD_TEXT,
    OrderRefund: ORDER_REFUND_TEXT,
}


def column_types(widths: dict[str, int], text_type: Callable[[str, int], str]) -> dict[str, str]:
    """The SQL type of each text column, from its width in ``fourws_pay.limits``: a schema
    template names ``{r[order_ref]}`` and never writes a width of its own."""
    return {column: text_type(column, width) for column, width in widths.items()}


def storable(value: str, limit: int) -> bool:
    """Could a column of this width hold ``value``? A look-up of a value no record can have
    answers "none" without asking the database (PostgreSQL would fail on a NUL)."""
    return len(value) <= limit and "\x00" not in value


def check_lock_key(key: str) -> None:
    """What ``card_transaction`` locks must fit the lock tables (a barcode or a lock key)."""
    check_text("card key", key, LOCK_KEY_MAX)


class _Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closeable)
T = TypeVar("T", bound="SQLTransaction[Any]")


def check_prefix(table_prefix: str) -> None:
    """Table names are built into SQL text, so the prefix must be a plain identifier."""
    if not _PREFIX.match(table_prefix):
        raise ConfigurationError(
            "table_prefix must be letters, digits and underscores (at most 40), "
            f"not starting with a digit: {table_prefix!r}"
        )


def param(value: Any) -> Any:
    """Enums as their text; times as aware UTC (a naive time is a bug, not a guess)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):  # an order refund's parts: one text column
        return refund_parts_json(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("ledger times must be timezone-aware")
        return value.astimezone(UTC)
    return value


def marks(values: Iterable[Any]) -> tuple[str, list[Any]]:
    """Placeholders for an ``IN (…)`` list; an empty list becomes ``IN (NULL)`` (matches none)."""
    items = list(values)
    return ",".join(["%s"] * len(items)) or "NULL", items


@functools.lru_cache(maxsize=64)
def _insert_statement(table: str, columns: tuple[str, ...]) -> str:
    return (
        f"INSERT INTO {table} ({','.join(columns)}) "  # noqa: S608
        f"VALUES ({','.join(['%s'] * len(columns))})"
    )


@functools.lru_cache(maxsize=64)
def _update_statement(table: str, columns: tuple[str, ...]) -> str:
    """Compare-and-set: every column but the id, if the stored state is still the expected."""
    sets = ",".join(f"{c} = %s" for c in columns[1:])
    return f"UPDATE {table} SET {sets} WHERE id = %s AND state = %s"  # noqa: S608


class SQLTransaction(Generic[C]):
    """``LedgerTransaction`` over one driver connection; subclasses supply the dialect hooks."""

    def __init__(self, conn: C, prefix: str) -> None:
        self._conn = conn
        self._res = f"{prefix}reservations"
        self._ops = f"{prefix}operations"
        self._cards = f"{prefix}issued_cards"
        self._refunds = f"{prefix}order_refunds"

    # Dialect hooks.

    @staticmethod
    def _param(value: Any) -> Any:
        return param(value)

    @staticmethod
    def _decode(row: Row) -> dict[str, Any]:
        raise NotImplementedError

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    def _write(self, query: str, params: Sequence[Any]) -> int:
        """Run a write and return the number of rows it matched (the CAS verdict)."""
        raise NotImplementedError

    # Row <-> dataclass mapping.

    def _row(
        self, obj: Reservation | Operation | IssuedCard | OrderRefund, columns: Sequence[str]
    ) -> list[Any]:
        """The values to write; a text the schema cannot keep whole is refused here, before
        the statement runs (``InvalidInputError``; the transaction then rolls back)."""
        check_record(obj, TEXT_WIDTHS[type(obj)])
        return [self._param(getattr(obj, c)) for c in columns]

    def _reservation(self, row: Row) -> Reservation:
        values = self._decode(row)
        values["state"] = ReservationState(values["state"])
        return Reservation(**values)

    def _operation(self, row: Row) -> Operation:
        values = self._decode(row)
        values["state"] = OperationState(values["state"])
        values["kind"] = OperationKind(values["kind"])
        return Operation(**values)

    def _issued_card(self, row: Row) -> IssuedCard:
        values = self._decode(row)
        values["state"] = IssuedCardState(values["state"])
        return IssuedCard(**values)

    def _order_refund(self, row: Row) -> OrderRefund:
        values = self._decode(row)
        values["state"] = OrderRefundState(values["state"])
        values["strategy"] = RefundStrategy(values["strategy"])
        values["parts"] = refund_parts_from_json(values["parts"])
        return OrderRefund(**values)

    # LedgerTransaction.

    def reservations_for_card(
        self, barcode: str, states: Iterable[ReservationState]
    ) -> list[Reservation]:
        in_marks, values = marks(s.value for s in states)
        rows = self._rows(
            f"SELECT * FROM {self._res} WHERE barcode = %s AND state IN ({in_marks})"  # noqa: S608
            " ORDER BY created_at, id",
            [barcode, *values],
        )
        return [self._reservation(r) for r in rows]

    def operations_for_card(
        self, barcode: str, states: Iterable[OperationState]
    ) -> list[Operation]:
        in_marks, values = marks(s.value for s in states)
        rows = self._rows(
            f"SELECT * FROM {self._ops} WHERE barcode = %s AND state IN ({in_marks})"  # noqa: S608
            " ORDER BY created_at, id",
            [barcode, *values],
        )
        return [self._operation(r) for r in rows]

    def operations_settled_since(self, barcode: str, since: datetime) -> list[Operation]:
        rows = self._rows(
            f"SELECT * FROM {self._ops} WHERE barcode = %s AND state = %s"  # noqa: S608
            " AND settled_at >= %s ORDER BY created_at, id",
            [barcode, OperationState.SUCCEEDED.value, self._param(since)],
        )
        return [self._operation(r) for r in rows]

    def get_reservation(self, reservation_id: str) -> Reservation | None:
        if not storable(reservation_id, ID_MAX):
            return None
        rows = self._rows(f"SELECT * FROM {self._res} WHERE id = %s", [reservation_id])  # noqa: S608
        return self._reservation(rows[0]) if rows else None

    def get_operation(self, operation_id: str) -> Operation | None:
        if not storable(operation_id, ID_MAX):
            return None
        rows = self._rows(f"SELECT * FROM {self._ops} WHERE id = %s", [operation_id])  # noqa: S608
        return self._operation(rows[0]) if rows else None

    def captures_of_reservation(self, reservation_id: str) -> list[Operation]:
        rows = self._rows(
            f"SELECT * FROM {self._ops} WHERE reservation_id = %s AND kind = %s"  # noqa: S608
            " ORDER BY created_at, id",
            [reservation_id, OperationKind.CAPTURE.value],
        )
        return [self._operation(r) for r in rows]

    def children_of(self, operation_id: str, kind: OperationKind) -> list[Operation]:
        rows = self._rows(
            f"SELECT * FROM {self._ops} WHERE parent_id = %s AND kind = %s"  # noqa: S608
            " ORDER BY created_at, id",
            [operation_id, kind.value],
        )
        return [self._operation(r) for r in rows]

    def _insert(self, table: str, columns: tuple[str, ...], values: list[Any]) -> None:
        self._write(_insert_statement(table, columns), values)

    def _update(
        self, table: str, columns: tuple[str, ...], values: list[Any], expected: str
    ) -> bool:
        query = _update_statement(table, columns)
        return self._write(query, [*values[1:], values[0], expected]) == 1

    def insert_reservation(self, reservation: Reservation) -> None:
        self._insert(self._res, RES_COLUMNS, self._row(reservation, RES_COLUMNS))

    def insert_operation(self, operation: Operation) -> None:
        self._insert(self._ops, OP_COLUMNS, self._row(operation, OP_COLUMNS))

    def update_reservation(self, reservation: Reservation, expected: ReservationState) -> bool:
        values = self._row(reservation, RES_COLUMNS)
        return self._update(self._res, RES_COLUMNS, values, expected.value)

    def update_operation(self, operation: Operation, expected: OperationState) -> bool:
        values = self._row(operation, OP_COLUMNS)
        return self._update(self._ops, OP_COLUMNS, values, expected.value)

    def get_issued_card(self, card_id: str) -> IssuedCard | None:
        if not storable(card_id, ID_MAX):
            return None
        rows = self._rows(f"SELECT * FROM {self._cards} WHERE id = %s", [card_id])  # noqa: S608
        return self._issued_card(rows[0]) if rows else None

    def issued_cards_for_order(self, order_ref: str) -> list[IssuedCard]:
        return self._list_issued_cards(None, order_ref)

    def insert_issued_card(self, card: IssuedCard) -> None:
        self._insert(self._cards, CARD_COLUMNS, self._row(card, CARD_COLUMNS))

    def update_issued_card(self, card: IssuedCard, expected: IssuedCardState) -> bool:
        values = self._row(card, CARD_COLUMNS)
        return self._update(self._cards, CARD_COLUMNS, values, expected.value)

    def get_order_refund(self, refund_id: str) -> OrderRefund | None:
        rows = self._rows(f"SELECT * FROM {self._refunds} WHERE id = %s", [refund_id])  # noqa: S608
        return self._order_refund(rows[0]) if rows else None

    def order_refunds_for_order(self, order_ref: str) -> list[OrderRefund]:
        return self._list_order_refunds(None, order_ref)

    def insert_order_refund(self, refund: OrderRefund) -> None:
        self._insert(self._refunds, REFUND_COLUMNS, self._row(refund, REFUND_COLUMNS))

    def update_order_refund(self, refund: OrderRefund, expected: OrderRefundState) -> bool:
        values = self._row(refund, REFUND_COLUMNS)
        return self._update(self._refunds, REFUND_COLUMNS, values, expected.value)

    # Listings (used by the store outside any transaction).

    def _by_state_and_order(
        self, table: str, states: Iterable[Enum] | None, order_ref: str | None, order_by: str
    ) -> list[Row]:
        """Rows of ``table`` in ``states`` and/or of ``order_ref`` (both optional)."""
        if order_ref is not None and not storable(order_ref, ORDER_REF_MAX):
            return []
        query = f"SELECT * FROM {table} WHERE TRUE"  # noqa: S608
        params: list[Any] = []
        if states is not None:
            in_marks, values = marks(s.value for s in states)
            query += f" AND state IN ({in_marks})"
            params += values
        if order_ref is not None:
            query += " AND order_ref = %s"
            params.append(order_ref)
        return self._rows(f"{query} ORDER BY {order_by}", params)

    def _list_issued_cards(
        self, states: Iterable[IssuedCardState] | None, order_ref: str | None
    ) -> list[IssuedCard]:
        rows = self._by_state_and_order(
            self._cards, states, order_ref, "created_at, line_id, line_index"
        )
        return [self._issued_card(r) for r in rows]

    def _list_order_refunds(
        self, states: Iterable[OrderRefundState] | None, order_ref: str | None
    ) -> list[OrderRefund]:
        rows = self._by_state_and_order(self._refunds, states, order_ref, "created_at, id")
        return [self._order_refund(r) for r in rows]

    def _list_reservations(
        self, states: Iterable[ReservationState] | None, order_ref: str | None
    ) -> list[Reservation]:
        rows = self._by_state_and_order(self._res, states, order_ref, "created_at, id")
        return [self._reservation(r) for r in rows]

    def _operations_by_state(self) -> str:
        """The table as named in a listing by state (a dialect may name the index to use)."""
        return self._ops

    def _list_operations(
        self, states: Iterable[OperationState] | None, kind: OperationKind | None
    ) -> list[Operation]:
        query = f"SELECT * FROM {self._ops} WHERE TRUE"  # noqa: S608
        params: list[Any] = []
        if states is not None:
            in_marks, values = marks(s.value for s in states)
            query = f"SELECT * FROM {self._operations_by_state()} WHERE state IN ({in_marks})"  # noqa: S608
            params += values
        if kind is not None:
            query += " AND kind = %s"
            params.append(kind.value)
        rows = self._rows(query + " ORDER BY created_at, id", params)
        return [self._operation(r) for r in rows]


class Pool(Generic[C]):
    """Idle connections kept for reuse: a transaction or a read borrows one, then returns it.

    A pool (rather than one connection per thread) keeps the number of server sessions bounded
    when a host's threads come and go. After a fork the child starts with an empty pool and
    never closes the parent's connections (closing sends the server a goodbye, e.g. MySQL's
    ``COM_QUIT``, on the socket the parent still shares, which would end the parent's sessions).
    """

    def __init__(
        self,
        connect: Callable[[], C],
        *,
        reusable: Callable[[C], bool],
        errors: type[Exception],
        max_idle: int,
    ) -> None:
        self._connect = connect
        self._reusable = reusable
        self._errors = errors
        self._max_idle = max_idle
        self._idle: list[C] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _mine(self) -> list[C]:
        if self._pid != os.getpid():
            self._idle, self._pid = [], os.getpid()
        return self._idle

    @contextmanager
    def borrow(self) -> Iterator[C]:
        owner = os.getpid()
        with self._lock:
            idle = self._mine()
            conn = idle.pop() if idle else None
        if conn is None or not self._reusable(conn):
            conn = self._connect()
        try:
            yield conn
        finally:
            if os.getpid() == owner:
                with self._lock:
                    keep = self._reusable(conn) and len(self._mine()) < self._max_idle
                    if keep:
                        self._idle.append(conn)
                if not keep:
                    with suppress(self._errors):
                        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._mine(), []
        for conn in idle:
            with suppress(self._errors):
                conn.close()


class SQLStore(Generic[C, T]):
    """``LedgerStore`` skeleton: pooled connections, non-nesting transactions, plain reads.

    A subclass connects, says whether an idle connection may be reused, opens its transaction
    class over a connection, and takes its lock (``_take_lock``; ``_prepare_lock`` runs before
    the transaction begins, for work that must not happen inside it).
    """

    _driver_error: type[Exception] = Exception
    _store_name = "SQL"

    # Which driver errors mean a lock wait timed out, or a refused commit (see _errors).

    @staticmethod
    def _is_lock_timeout(exc: BaseException) -> bool:
        return False

    @staticmethod
    def _is_conflict(exc: BaseException) -> bool:
        return False

    def _mapped(self) -> AbstractContextManager[None]:
        return mapped_errors(
            self._driver_error,
            store=self._store_name,
            is_lock_timeout=self._is_lock_timeout,
            is_conflict=self._is_conflict,
        )

    def __init__(self, *, table_prefix: str, locking: bool, pool_size: int) -> None:
        check_prefix(table_prefix)
        self.table_prefix = table_prefix
        self.locking = locking
        self._local = threading.local()
        self._pool: Pool[C] = Pool(
            self._connect, reusable=self._reusable, errors=self._driver_error, max_idle=pool_size
        )

    # Dialect hooks.

    def _connect(self) -> C:
        raise NotImplementedError

    def _reusable(self, conn: C) -> bool:
        raise NotImplementedError

    def _open(self, conn: C) -> T:
        raise NotImplementedError

    def _run(self, conn: C, statement: str) -> None:
        raise NotImplementedError

    def _prepare_lock(self, conn: C, lock: str) -> None:
        """Runs in autocommit before the transaction begins; nothing by default."""

    def _take_lock(self, conn: C, lock: str) -> None:
        raise NotImplementedError

    def _commit(self, conn: C) -> None:
        raise NotImplementedError

    def _rollback(self, conn: C) -> None:
        raise NotImplementedError

    # Transactions and reads.

    @contextmanager
    def _tx(self, *begin: str, lock: str | None = None) -> Iterator[T]:
        """Begin with ``begin``, take ``lock`` first thing inside, commit or roll back."""
        if getattr(self._local, "depth", 0) and self._local.pid == os.getpid():
            raise RuntimeError("ledger transactions do not nest")
        self._local.depth, self._local.pid = 1, os.getpid()
        try:
            with self._mapped(), self._pool.borrow() as conn:
                if lock is not None:
                    self._prepare_lock(conn, lock)
                for statement in begin:
                    self._run(conn, statement)
                try:
                    if lock is not None:
                        self._take_lock(conn, lock)
                    yield self._open(conn)
                except BaseException:
                    with suppress(self._driver_error):
                        self._rollback(conn)
                    raise
                self._commit(conn)
        finally:
            self._local.depth = 0

    @contextmanager
    def _reader(self) -> Iterator[T]:
        """Plain autocommit reads on a borrowed connection (no transaction)."""
        with self._mapped(), self._pool.borrow() as conn:
            yield self._open(conn)

    def get_reservation(self, reservation_id: str) -> Reservation | None:
        with self._reader() as reader:
            return reader.get_reservation(reservation_id)

    def get_operation(self, operation_id: str) -> Operation | None:
        with self._reader() as reader:
            return reader.get_operation(operation_id)

    def list_reservations(
        self, states: Iterable[ReservationState] | None = None, order_ref: str | None = None
    ) -> list[Reservation]:
        with self._reader() as reader:
            return reader._list_reservations(states, order_ref)

    def list_operations(
        self,
        states: Iterable[OperationState] | None = None,
        kind: OperationKind | None = None,
    ) -> list[Operation]:
        with self._reader() as reader:
            return reader._list_operations(states, kind)

    def get_issued_card(self, card_id: str) -> IssuedCard | None:
        with self._reader() as reader:
            return reader.get_issued_card(card_id)

    def list_issued_cards(
        self, states: Iterable[IssuedCardState] | None = None, order_ref: str | None = None
    ) -> list[IssuedCard]:
        with self._reader() as reader:
            return reader._list_issued_cards(states, order_ref)

    def list_order_refunds(
        self, states: Iterable[OrderRefundState] | None = None, order_ref: str | None = None
    ) -> list[OrderRefund]:
        with self._reader() as reader:
            return reader._list_order_refunds(states, order_ref)

    def close(self) -> None:
        """Close the idle connections (a later call opens new ones)."""
        self._pool.close()


def split_options(url: str, known: dict[str, Callable[[str], Any]]) -> tuple[str, dict[str, Any]]:
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
