"""Every store keeps a text of exactly its limit whole, and refuses one character more (or a
NUL) with ``InvalidInputError`` before writing anything; the schemas' widths are the numbers
in ``fourws_pay.limits`` (fourws_pay/limits.py), so validation and schema cannot disagree."""

from __future__ import annotations

import re
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from fourws_pay import limits
from fourws_pay.errors import InvalidInputError, LedgerError
from fourws_pay.ledger import LedgerStore
from fourws_pay.payments.models import (
    IssuedCard,
    IssuedCardState,
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)
from tests.services import StoreFactory

NOW = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
CARD = "2000000001814"
TABLES = {
    "reservations": limits.RESERVATION_TEXT,
    "operations": limits.OPERATION_TEXT,
    "issued_cards": limits.ISSUED_CARD_TEXT,
    "order_refunds": limits.ORDER_REFUND_TEXT,
}


def reservation(**changes: Any) -> Reservation:
    base = Reservation(
        id="res_1",
        barcode=CARD,
        amount=Decimal("10.00"),
        currency="EUR",
        decimals=2,
        entity_code="440",
        order_ref="ORD-1",
        state=ReservationState.ACTIVE,
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=15),
        updated_at=NOW,
    )
    return replace(base, **changes)


def operation(**changes: Any) -> Operation:
    base = Operation(
        id="op_1",
        kind=OperationKind.CAPTURE,
        reservation_id="res_1",
        barcode=CARD,
        amount=Decimal("10.00"),
        currency="EUR",
        entity_code="440",
        state=OperationState.SENDING,
        created_at=NOW,
        updated_at=NOW,
        deadline=NOW + timedelta(minutes=5),
        callback_token_hash="ab" * 32,
    )
    return replace(base, **changes)


def sold(**changes: Any) -> IssuedCard:
    base = IssuedCard(
        id="iss_1",
        order_ref="ORD-1",
        line_id="L1",
        line_index=0,
        amount=Decimal("25.00"),
        currency="EUR",
        decimals=2,
        item_code="GIFTCARD_IVA_TAGLIO_100",
        entity_code="440",
        state=IssuedCardState.REQUESTED,
        created_at=NOW,
        updated_at=NOW,
    )
    return replace(base, **changes)


# (record kind, field, limit): the texts a caller or 4WS chooses; our own enums and the
# fixed-width hash are covered by the schema test below.
CASES = [
    ("reservation", "order_ref", limits.ORDER_REF_MAX),
    ("reservation", "barcode", limits.BARCODE_MAX),
    ("reservation", "entity_code", limits.ENTITY_CODE_MAX),
    ("reservation", "id", limits.ID_MAX),
    ("operation", "id", limits.ID_MAX),
    ("operation", "queue_id", limits.EXTERNAL_ID_MAX),
    ("operation", "callback_id", limits.EXTERNAL_ID_MAX),
    ("issued_card", "order_ref", limits.ORDER_REF_MAX),
    ("issued_card", "line_id", limits.LINE_ID_MAX),
    ("issued_card", "item_code", limits.ITEM_CODE_MAX),
    ("issued_card", "id", limits.ID_MAX),
    ("issued_card", "barcode", limits.BARCODE_MAX),
]
MAKERS = {"reservation": reservation, "operation": operation, "issued_card": sold}


def _insert(tx: Any, kind: str, record: Any) -> None:
    getattr(tx, f"insert_{kind}")(record)


def _get(store: LedgerStore, kind: str, record_id: str) -> Any:
    return getattr(store, f"get_{kind}")(record_id)


def _text(n: int, tail: str = "") -> str:
    """``n`` characters, non-ASCII ones included (a limit counts characters, not bytes)."""
    body = ("Ø7é" * n)[: n - len(tail)]
    return body + tail


def test_every_text_field_of_every_record_has_a_width() -> None:
    """A new text field cannot be added without a width (enums are stored as text too)."""
    records = {"reservations": Reservation, "operations": Operation, "issued_cards": IssuedCard}
    for table, record in records.items():
        texts = {f.name for f in fields(record) if re.search(r"\bstr\b|State|Kind", str(f.type))}
        assert texts == set(TABLES[table]), table


def test_text_at_the_limit_round_trips_and_one_more_or_a_nul_is_refused(
    any_store: LedgerStore,
) -> None:
    for n, (kind, name, limit) in enumerate(CASES):
        make = MAKERS[kind]
        key = f"{kind[:3]}_{n}"
        ok = make(**{"id": key, name: _text(limit)}) if name != "id" else make(id=_text(limit))
        lock = ok.barcode if kind != "issued_card" else CARD
        with any_store.card_transaction(lock or CARD) as tx:
            _insert(tx, kind, ok)
        assert _get(any_store, kind, ok.id) == ok, (kind, name)

        for bad in (_text(limit + 1), _text(limit, tail="\x00")):
            witness = reservation(id=f"res_w{n}", order_ref="witness")
            record = make(**{"id": f"{key}_bad", name: bad}) if name != "id" else make(id=bad)
            refused = pytest.raises(InvalidInputError, match=rf"{name}.*({limit}|NUL)")
            with refused, any_store.card_transaction(CARD) as tx:
                tx.insert_reservation(witness)  # written first, in the same transaction
                _insert(tx, kind, record)
            assert _get(any_store, kind, record.id) is None
            assert any_store.get_reservation(witness.id) is None, "a partial write"

            # An update to the over-long text is refused the same way, the record unchanged.
            changed = replace(ok, **{name: bad}) if name != "id" else None
            if changed is not None:
                refused = pytest.raises(InvalidInputError)
                with refused, any_store.card_transaction(CARD) as tx:
                    getattr(tx, f"update_{kind}")(changed, ok.state)
                assert _get(any_store, kind, ok.id) == ok


def test_a_card_key_longer_than_the_lock_tables_keep_is_refused(any_store: LedgerStore) -> None:
    with pytest.raises(InvalidInputError, match="card key"):
        any_store.card_transaction("9" * (limits.LOCK_KEY_MAX + 1))


def test_a_note_is_clipped_never_a_reason_to_refuse() -> None:
    op = operation(message="x" * (limits.MESSAGE_MAX + 50) + "\x00")
    assert op.message is not None
    assert len(op.message) == limits.MESSAGE_MAX
    assert "\x00" not in op.message
    assert sold(message="a\x00b").message == "ab"


def _schema_widths(store: LedgerStore, kind: str, table: str) -> dict[str, int]:
    """Each text column's width as the database itself declares it."""
    if kind == "sqlite":
        import sqlite3

        with sqlite3.connect(store.path) as conn:  # type: ignore[attr-defined]
            (sql,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
            ).fetchone()
        return {c: int(n) for c, n in re.findall(r"length\((\w+)\) <= (\d+)", sql)}
    prefix: str = store.table_prefix  # type: ignore[attr-defined]
    query = (
        "SELECT column_name, character_maximum_length FROM information_schema.columns "
        "WHERE table_name = %s AND character_maximum_length IS NOT NULL"
    )
    with store._pool.borrow() as conn:  # type: ignore[attr-defined]
        if kind == "postgres":
            rows = conn.execute(query, [prefix + table]).fetchall()
        else:
            with conn.cursor() as cur:
                cur.execute(query + " AND table_schema = DATABASE()", [prefix + table])
                rows = cur.fetchall()
    return {
        str(r.get("column_name") or r.get("COLUMN_NAME")): int(
            r.get("character_maximum_length") or r.get("CHARACTER_MAXIMUM_LENGTH")
        )
        for r in rows
    }


def test_schema_widths_are_the_limits(store_factory: StoreFactory) -> None:
    if store_factory.kind == "redis":
        pytest.skip("Redis has no schema: its store checks the same widths (test above)")
    store = store_factory()
    # MariaDB keeps Decimals as text; a refund plan's parts are a document, not a field
    amounts = {"amount", "forfeited", "balance_before", "parts"}
    for table, widths in TABLES.items():
        declared = _schema_widths(store, store_factory.kind, table)
        assert {c: n for c, n in declared.items() if c not in amounts} == widths, table


def test_the_schema_itself_refuses_what_the_store_would_not_write(
    store_factory: StoreFactory,
) -> None:
    """The database's own check (a CHECK, a VARCHAR width) refuses one character more,
    even for a write that skips the store's check."""
    if store_factory.kind == "redis":
        pytest.skip("Redis has no schema")
    store = store_factory()
    from fourws_pay.ledger import _sql

    too_long = reservation(order_ref=_text(limits.ORDER_REF_MAX + 1))
    real = _sql.check_record
    _sql.check_record = lambda record, widths: None  # type: ignore[assignment]
    try:
        with pytest.raises(LedgerError), store.card_transaction(CARD) as tx:
            tx.insert_reservation(too_long)
    finally:
        _sql.check_record = real
    assert store.get_reservation(too_long.id) is None


def test_mariadb_sessions_are_strict_even_on_a_lax_server(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose default sql_mode is not strict would cut a too-long value silently;
    the store's sessions set their own mode."""
    if store_factory.kind != "mysql":
        pytest.skip("MariaDB only")
    import pymysql

    real_connect = pymysql.connect

    def lax(*args: Any, **kwargs: Any) -> Any:
        conn = real_connect(*args, **kwargs)
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = ''")  # what a lax server hands out
        return conn

    monkeypatch.setattr(pymysql, "connect", lax)
    store = store_factory()
    with store._pool.borrow() as conn, conn.cursor() as cur:  # type: ignore[attr-defined]
        cur.execute("SELECT @@SESSION.sql_mode AS mode")
        assert "STRICT_TRANS_TABLES" in cur.fetchone()["mode"]
