"""What the App remembers of the Saleor orders it sells gift cards for (one SQLite table).

A row is written when ``ORDER_FULLY_PAID`` arrives, *before* the App answers Saleor, so
an order whose webhook was acknowledged is never forgotten: the maintenance pass issues
every sale still ``received`` (the App crashed between the answer and the issuing, or 4WS
was down). The cards themselves live in the payments ledger (``IssuedCard``, keyed by
order, line and index), which is what makes issuing exactly once; this table only holds
what the ledger does not: which Saleor sent the order, the buyer's e-mail and the order
number for delivery, the gift-card lines as Saleor priced them, and whether the order's
private metadata shows the cards' current state.

Kept in its own table and class, beside ``AppStore`` in the same file: a sale is its own
aggregate, and nothing of it is read inside a payment transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fourws_pay_saleor.jsonutil import dumps, loads
from fourws_pay_saleor.store import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sales (
    order_id TEXT PRIMARY KEY,
    api_url TEXT NOT NULL,
    number TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL DEFAULT '',
    channel TEXT NOT NULL DEFAULT '',
    lines TEXT NOT NULL,
    state TEXT NOT NULL,
    metadata_version INTEGER NOT NULL DEFAULT 0,
    metadata_written INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""

RECEIVED = "received"  # recorded, cards not yet asked of the ledger
ISSUED = "issued"  # every line's cards are in the ledger; the ledger's pump does the rest
REFUSED = "refused"  # the ledger refused a line (InvalidInputError): staff must look


@dataclass(frozen=True)
class SaleLine:
    """A gift-card line of a Saleor order: ``quantity`` cards of ``amount`` each."""

    line_id: str
    quantity: int
    amount: Decimal
    currency: str
    item_code: str | None = None  # the product type's own 4WS item, else the settings'


@dataclass(frozen=True)
class Sale:
    """A Saleor order with gift-card lines, as the App recorded it."""

    order_id: str
    api_url: str
    number: str
    email: str
    channel: str
    lines: tuple[SaleLine, ...]
    state: str
    metadata_version: int = 0
    metadata_written: int = 0

    @property
    def metadata_due(self) -> bool:
        """The order's private metadata may not show the cards' latest state."""
        return self.metadata_written < self.metadata_version


def _lines_json(lines: tuple[SaleLine, ...]) -> str:
    return dumps(
        [
            {
                "line_id": line.line_id,
                "quantity": line.quantity,
                "amount": str(line.amount),
                "currency": line.currency,
                "item_code": line.item_code,
            }
            for line in lines
        ]
    )


def _lines_from_json(text: str) -> tuple[SaleLine, ...]:
    raw: list[dict[str, Any]] = loads(text)
    return tuple(
        SaleLine(
            line_id=str(item["line_id"]),
            quantity=int(item["quantity"]),
            amount=Decimal(str(item["amount"])),
            currency=str(item["currency"]),
            item_code=item.get("item_code"),
        )
        for item in raw
    )


class SaleStore:
    """The ``sales`` table; safe to share between threads (the delivery hook runs on one)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._conn = connect(self.path, _SCHEMA)

    def __repr__(self) -> str:
        return f"SaleStore({self.path!r})"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def record(self, sale: Sale, at: datetime) -> bool:
        """Keep a newly paid order; False when it was recorded before (a redelivery).

        The first recording wins: a redelivered webhook cannot change the lines (what was
        paid does not change once the order is fully paid)."""
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO sales (order_id, api_url, number, email, channel, lines,"
                " state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sale.order_id,
                    sale.api_url,
                    sale.number,
                    sale.email,
                    sale.channel,
                    _lines_json(sale.lines),
                    RECEIVED,
                    at.isoformat(),
                    at.isoformat(),
                ),
            )
            return cursor.rowcount == 1

    def get(self, order_id: str) -> Sale | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM sales WHERE order_id = ?", (order_id,)
            ).fetchone()
        return None if row is None else _sale(row)

    def in_state(self, state: str) -> list[Sale]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM sales WHERE state = ? ORDER BY created_at", (state,)
            ).fetchall()
        return [_sale(row) for row in rows]

    def metadata_due(self) -> list[Sale]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM sales WHERE metadata_written < metadata_version ORDER BY updated_at"
            ).fetchall()
        return [_sale(row) for row in rows]

    def mark_issued(self, order_id: str, at: datetime) -> None:
        self._set(
            "UPDATE sales SET state = ?, updated_at = ? WHERE order_id = ?",
            (ISSUED, at.isoformat(), order_id),
        )

    def refuse(self, order_id: str, error: str, at: datetime) -> None:
        self._set(
            "UPDATE sales SET state = ?, last_error = ?, updated_at = ? WHERE order_id = ?",
            (REFUSED, error[:500], at.isoformat(), order_id),
        )

    def note_error(self, order_id: str, error: str, at: datetime) -> None:
        self._set(
            "UPDATE sales SET last_error = ?, updated_at = ? WHERE order_id = ?",
            (error[:500], at.isoformat(), order_id),
        )

    def touch(self, order_id: str, at: datetime) -> bool:
        """The cards of the order changed: its metadata is due again. False: not a sale."""
        return self._set(
            "UPDATE sales SET metadata_version = metadata_version + 1, updated_at = ?"
            " WHERE order_id = ?",
            (at.isoformat(), order_id),
        )

    def metadata_written(self, order_id: str, version: int, at: datetime) -> None:
        """Metadata showing the cards as of ``version`` reached Saleor (never goes back)."""
        self._set(
            "UPDATE sales SET metadata_written = MAX(metadata_written, ?), last_error = NULL,"
            " updated_at = ? WHERE order_id = ?",
            (version, at.isoformat(), order_id),
        )

    def _set(self, sql: str, params: tuple[Any, ...]) -> bool:
        with self._lock:
            return self._conn.execute(sql, params).rowcount == 1


def _sale(row: sqlite3.Row) -> Sale:
    return Sale(
        order_id=row["order_id"],
        api_url=row["api_url"],
        number=row["number"],
        email=row["email"],
        channel=row["channel"],
        lines=_lines_from_json(row["lines"]),
        state=row["state"],
        metadata_version=row["metadata_version"],
        metadata_written=row["metadata_written"],
    )
