"""The App's durable memory, in one SQLite file (stdlib ``sqlite3``).

What must survive a restart, and why:

- **installations**: the auth token Saleor gave on install, per Saleor API URL. Webhooks from
  a URL with no token are rejected, and the token authenticates ``transactionEventReport``.
- **idempotency**: the answer given to an ``idempotencyKey`` of INITIALIZE_SESSION, so a
  re-sent initialize gets the same ``pspReference`` and result.
- **transactions**: per Saleor transaction, the reservation and capture made for it, written
  after each step so that a retry resumes instead of reserving or capturing twice.
- **operations**: which Saleor transaction a 4WS operation (capture/refund) belongs to, so a
  settlement can be reported to the right place.
- **deliveries**: the answer to each ``*_REQUESTED`` delivery, so a retried delivery is not
  acted on twice.
- **reports**: an outbox of ``transactionEventReport`` calls; a row is written before the
  call is made and kept until Saleor acknowledged it.
- **leases**: who is working on a transaction right now, across worker processes.
- **holds**: every reservation made for a Saleor transaction (a partial charge re-holds the
  rest under a new reservation), so an expiry can be reported to the right transaction.
- **actions**: each charge/refund/cancel request Saleor was told is pending (``*_REQUEST``):
  the App finishes it later and reports the outcome, so a request never depends on Saleor
  re-sending it (Saleor's retries of sync webhooks arrive with an empty body).

Every ``pspReference`` the App gives Saleor is chosen and written here *before* money moves,
so an outcome that is only known after the answer was sent can still be reported under the
reference Saleor holds.

The auth token is stored in clear (Saleor needs it back verbatim) and never logged or
returned by ``repr``: protect the file like any credential store.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fourws_pay_saleor.jsonutil import dumps, loads

_SCHEMA = """
CREATE TABLE IF NOT EXISTS installations (
    api_url TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    token TEXT NOT NULL,
    app_id TEXT,
    installed_at TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS idempotency (
    api_url TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (api_url, idem_key)
);
CREATE TABLE IF NOT EXISTS transactions (
    api_url TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    action_type TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    reservation_id TEXT,
    capture_operation_id TEXT,
    state TEXT NOT NULL,
    response TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    psp_reference TEXT,
    channel TEXT,
    authorized TEXT,
    PRIMARY KEY (api_url, transaction_id)
);
CREATE INDEX IF NOT EXISTS transactions_by_reservation ON transactions (reservation_id);
CREATE TABLE IF NOT EXISTS operations (
    operation_id TEXT PRIMARY KEY,
    api_url TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    psp_reference TEXT
);
CREATE TABLE IF NOT EXISTS holds (
    reservation_id TEXT PRIMARY KEY,
    api_url TEXT NOT NULL,
    transaction_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    psp_reference TEXT PRIMARY KEY,
    api_url TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    event TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    state TEXT NOT NULL,
    operation_ids TEXT NOT NULL DEFAULT '[]',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    granted_refund_id TEXT
);
CREATE TABLE IF NOT EXISTS unverified (
    delivery_key TEXT PRIMARY KEY,
    api_url TEXT NOT NULL,
    event TEXT NOT NULL,
    body BLOB NOT NULL,
    signature TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_key TEXT PRIMARY KEY,
    api_url TEXT NOT NULL,
    event TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    api_url TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    psp_reference TEXT NOT NULL,
    type TEXT NOT NULL,
    amount TEXT,
    message TEXT NOT NULL DEFAULT '',
    time TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (api_url, psp_reference, type)
);
CREATE TABLE IF NOT EXISTS leases (
    lease_key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


class TransactionState:
    """Where the App is with one Saleor transaction (strings stored as they are)."""

    STARTED = "started"
    AUTHORIZED = "authorized"
    CHARGE_PENDING = "charge_pending"
    CHARGED = "charged"
    CHARGE_FAILED = "charge_failed"
    PARTIAL = "partially_charged"  # a partial capture used the hold; the rest is re-held
    LAPSED = "lapsed"  # the rest of the authorization expired or could not be kept
    CANCELED = "canceled"
    FAILED = "failed"


@dataclass
class TransactionRecord:
    """What the App did for one Saleor transaction."""

    api_url: str
    transaction_id: str
    action_type: str
    amount: Decimal
    currency: str
    state: str
    created_at: datetime
    updated_at: datetime
    reservation_id: str | None = None  # the hold on what is still authorized
    capture_operation_id: str | None = None  # the capture of a CHARGE session
    response: dict[str, Any] | None = None
    psp_reference: str | None = None  # what Saleor knows the session by
    channel: str | None = None
    authorized: Decimal | None = None  # what Saleor was told is authorized


@dataclass(frozen=True)
class OperationLink:
    """Which Saleor transaction a 4WS operation belongs to."""

    operation_id: str
    api_url: str
    transaction_id: str
    kind: str
    amount: Decimal
    currency: str
    psp_reference: str | None = None

    @property
    def psp(self) -> str:
        """The reference the outcome is reported under (the request Saleor holds)."""
        return self.psp_reference or self.operation_id


class ActionState:
    QUEUED = "queued"  # answered pending; the App still has to act
    POSTING = "posting"  # a refund POST may have begun: look for it before posting again
    WAITING = "waiting"  # acted; the outcome is reported when the operation settles
    DONE = "done"  # the outcome is answered or queued as a report


@dataclass
class ActionRecord:
    """A charge/refund/cancel request, under the ``pspReference`` Saleor was given."""

    psp_reference: str
    api_url: str
    transaction_id: str
    event: str
    amount: Decimal
    currency: str
    state: str
    created_at: datetime
    updated_at: datetime
    operation_ids: list[str] = field(default_factory=list)
    attempts: int = 0
    last_error: str | None = None
    granted_refund_id: str | None = None


@dataclass
class ReportRecord:
    """One pending or sent ``transactionEventReport``."""

    api_url: str
    transaction_id: str
    psp_reference: str
    type: str
    amount: Decimal | None
    time: datetime
    message: str = ""
    state: str = "pending"
    attempts: int = 0
    last_error: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class Installation:
    """A Saleor instance that installed the App. ``token`` never appears in ``repr``."""

    api_url: str
    domain: str
    token: str = field(repr=False)
    app_id: str | None
    installed_at: datetime
    active: bool = True


def connect(path: str, schema: str) -> sqlite3.Connection:
    """One connection of the App's SQLite file, shared by threads (callers hold a lock):
    autocommit (transactions are explicit), WAL so several processes can share the file,
    a 30 s busy timeout, and ``schema`` created if missing."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    conn.row_factory = sqlite3.Row
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(schema)
    return conn


class AppStore:
    """SQLite-backed state of the App; safe to share between threads of one process.

    Several processes may open the same file (WAL mode); cross-process exclusion for one
    Saleor transaction goes through ``try_lease``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        with self._lock:
            self._conn = connect(self.path, _SCHEMA)
            self._migrate()

    def _migrate(self) -> None:
        """Add the columns a store written by an older App lacks."""
        wanted = {
            "installations": [("active", "INTEGER NOT NULL DEFAULT 1")],
            "transactions": [
                ("psp_reference", "TEXT"),
                ("channel", "TEXT"),
                ("authorized", "TEXT"),
            ],
            "operations": [("psp_reference", "TEXT")],
        }
        for table, columns in wanted.items():
            have = {row["name"] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            for name, decl in columns:
                if name not in have:
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")

    def __repr__(self) -> str:
        return f"AppStore({self.path!r})"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _one(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    # -- installations -------------------------------------------------------------------

    def save_installation(
        self, api_url: str, domain: str, token: str, app_id: str | None, at: datetime
    ) -> None:
        """Store (or replace, on re-install) the token of one Saleor instance."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO installations (api_url, domain, token, app_id, installed_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(api_url) DO UPDATE SET"
                " domain=excluded.domain, token=excluded.token, app_id=excluded.app_id,"
                " installed_at=excluded.installed_at, active=1",
                (api_url, domain, token, app_id, at.isoformat()),
            )

    def get_installation(self, api_url: str) -> Installation | None:
        row = self._one("SELECT * FROM installations WHERE api_url = ?", (api_url,))
        if row is None:
            return None
        return Installation(
            api_url=row["api_url"],
            domain=row["domain"],
            token=row["token"],
            app_id=row["app_id"],
            installed_at=datetime.fromisoformat(row["installed_at"]),
            active=bool(row["active"]),
        )

    def set_installation_active(self, api_url: str, active: bool) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE installations SET active = ? WHERE api_url = ?", (int(active), api_url)
            )

    def delete_installation(self, api_url: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM installations WHERE api_url = ?", (api_url,))

    # -- idempotency keys ----------------------------------------------------------------

    def get_idempotent(self, api_url: str, key: str) -> tuple[str, dict[str, Any]] | None:
        """The fingerprint and answer stored for an idempotency key, if any."""
        row = self._one(
            "SELECT fingerprint, response FROM idempotency WHERE api_url = ? AND idem_key = ?",
            (api_url, key),
        )
        if row is None:
            return None
        return row["fingerprint"], loads(row["response"])

    def save_idempotent(
        self,
        api_url: str,
        key: str,
        fingerprint: str,
        transaction_id: str,
        response: dict[str, Any],
        at: datetime,
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
                (api_url, key, fingerprint, transaction_id, dumps(response), at.isoformat()),
            )

    # -- transactions --------------------------------------------------------------------

    def get_transaction(self, api_url: str, transaction_id: str) -> TransactionRecord | None:
        row = self._one(
            "SELECT * FROM transactions WHERE api_url = ? AND transaction_id = ?",
            (api_url, transaction_id),
        )
        return _transaction(row) if row is not None else None

    def find_by_reservation(self, reservation_id: str) -> TransactionRecord | None:
        """The transaction a hold was made for (any hold, not only the current one)."""
        row = self._one(
            "SELECT t.* FROM holds h JOIN transactions t"
            " ON t.api_url = h.api_url AND t.transaction_id = h.transaction_id"
            " WHERE h.reservation_id = ?",
            (reservation_id,),
        )
        if row is None:  # written by an App before the holds table existed
            row = self._one(
                "SELECT * FROM transactions WHERE reservation_id = ?", (reservation_id,)
            )
        return _transaction(row) if row is not None else None

    def save_transaction(self, record: TransactionRecord) -> None:
        """Insert or overwrite the record (callers hold the transaction's lease)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO transactions (api_url, transaction_id, action_type, amount,"
                " currency, reservation_id, capture_operation_id, state, response, created_at,"
                " updated_at, psp_reference, channel, authorized)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(api_url, transaction_id) DO UPDATE SET"
                " action_type=excluded.action_type, amount=excluded.amount,"
                " currency=excluded.currency, reservation_id=excluded.reservation_id,"
                " capture_operation_id=excluded.capture_operation_id, state=excluded.state,"
                " response=excluded.response, updated_at=excluded.updated_at,"
                " psp_reference=excluded.psp_reference, channel=excluded.channel,"
                " authorized=excluded.authorized",
                (
                    record.api_url,
                    record.transaction_id,
                    record.action_type,
                    str(record.amount),
                    record.currency,
                    record.reservation_id,
                    record.capture_operation_id,
                    record.state,
                    dumps(record.response) if record.response is not None else None,
                    record.created_at.isoformat(),
                    record.updated_at.isoformat(),
                    record.psp_reference,
                    record.channel,
                    str(record.authorized) if record.authorized is not None else None,
                ),
            )
            if record.reservation_id is not None:
                conn.execute(
                    "INSERT OR IGNORE INTO holds VALUES (?, ?, ?)",
                    (record.reservation_id, record.api_url, record.transaction_id),
                )

    def holds_of(self, api_url: str, transaction_id: str) -> list[str]:
        """Every reservation made for a transaction, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT reservation_id FROM holds WHERE api_url = ? AND transaction_id = ?"
                " ORDER BY rowid",
                (api_url, transaction_id),
            ).fetchall()
        return [row["reservation_id"] for row in rows]

    def transactions_in_state(self, state: str) -> list[TransactionRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM transactions WHERE state = ? ORDER BY updated_at", (state,)
            ).fetchall()
        return [_transaction(row) for row in rows]

    # -- operations ----------------------------------------------------------------------

    def link_operation(self, link: OperationLink) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO operations VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    link.operation_id,
                    link.api_url,
                    link.transaction_id,
                    link.kind,
                    str(link.amount),
                    link.currency,
                    link.psp_reference,
                ),
            )

    def get_operation_link(self, operation_id: str) -> OperationLink | None:
        row = self._one("SELECT * FROM operations WHERE operation_id = ?", (operation_id,))
        if row is None:
            return None
        return OperationLink(
            operation_id=row["operation_id"],
            api_url=row["api_url"],
            transaction_id=row["transaction_id"],
            kind=row["kind"],
            amount=Decimal(row["amount"]),
            currency=row["currency"],
            psp_reference=row["psp_reference"],
        )

    def operations_for_psp(self, psp_reference: str) -> list[str]:
        """The operations made for a request Saleor knows as ``psp_reference``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT operation_id FROM operations WHERE psp_reference = ? ORDER BY rowid",
                (psp_reference,),
            ).fetchall()
        return [row["operation_id"] for row in rows]

    def transaction_for_psp(self, psp_reference: str) -> TransactionRecord | None:
        row = self._one("SELECT * FROM transactions WHERE psp_reference = ?", (psp_reference,))
        return _transaction(row) if row is not None else None

    def operation_links(self, api_url: str, transaction_id: str) -> list[OperationLink]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM operations WHERE api_url = ? AND transaction_id = ? ORDER BY rowid",
                (api_url, transaction_id),
            ).fetchall()
        return [
            OperationLink(
                operation_id=row["operation_id"],
                api_url=row["api_url"],
                transaction_id=row["transaction_id"],
                kind=row["kind"],
                amount=Decimal(row["amount"]),
                currency=row["currency"],
                psp_reference=row["psp_reference"],
            )
            for row in rows
        ]

    # -- deliveries ----------------------------------------------------------------------

    def get_delivery(self, key: str) -> dict[str, Any] | None:
        row = self._one("SELECT response FROM deliveries WHERE delivery_key = ?", (key,))
        if row is None:
            return None
        result: dict[str, Any] = loads(row["response"])
        return result

    def save_delivery(
        self,
        key: str,
        api_url: str,
        event: str,
        transaction_id: str,
        response: dict[str, Any],
        at: datetime,
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, ?, ?, ?)",
                (key, api_url, event, transaction_id, dumps(response), at.isoformat()),
            )

    # -- report outbox -------------------------------------------------------------------

    def enqueue_report(self, report: ReportRecord, at: datetime) -> bool:
        """Add a report unless the same (psp reference, type) is already queued or sent.

        A row in state ``answered`` records an outcome Saleor already got in a webhook
        response; it keeps the same outcome from being reported a second time.
        """
        with self._tx() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO reports (api_url, transaction_id, psp_reference, type,"
                " amount, message, time, state, attempts, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (
                    report.api_url,
                    report.transaction_id,
                    report.psp_reference,
                    report.type,
                    str(report.amount) if report.amount is not None else None,
                    report.message,
                    report.time.isoformat(),
                    report.state,
                    at.isoformat(),
                    at.isoformat(),
                ),
            )
            return cursor.rowcount == 1

    def reports(self, state: str | None = None) -> list[ReportRecord]:
        sql = "SELECT * FROM reports"
        params: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            params = (state,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY id", params).fetchall()
        return [
            ReportRecord(
                id=row["id"],
                api_url=row["api_url"],
                transaction_id=row["transaction_id"],
                psp_reference=row["psp_reference"],
                type=row["type"],
                amount=Decimal(row["amount"]) if row["amount"] is not None else None,
                message=row["message"],
                time=datetime.fromisoformat(row["time"]),
                state=row["state"],
                attempts=row["attempts"],
                last_error=row["last_error"],
            )
            for row in rows
        ]

    def update_report(
        self, report_id: int, state: str, attempts: int, last_error: str | None, at: datetime
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE reports SET state = ?, attempts = ?, last_error = ?, updated_at = ?"
                " WHERE id = ?",
                (state, attempts, last_error, at.isoformat(), report_id),
            )

    def prune(self, before: datetime) -> int:
        """Forget rows that no longer protect anything, older than ``before``.

        Gone: reports Saleor acknowledged (or got in an answer), deliveries, finished
        actions. A pruned report that fires again is harmless (Saleor answers a repeated
        pspReference/type/amount with ``alreadyProcessed``); keep ``before`` well past
        Saleor's retry window. Returns how many rows went.
        """
        stamp = before.isoformat()
        with self._tx() as conn:
            count = conn.execute(
                "DELETE FROM reports WHERE state IN ('sent', 'answered') AND updated_at < ?",
                (stamp,),
            ).rowcount
            count += conn.execute("DELETE FROM deliveries WHERE created_at < ?", (stamp,)).rowcount
            count += conn.execute(
                "DELETE FROM actions WHERE state = 'done' AND updated_at < ?", (stamp,)
            ).rowcount
        return int(count)

    def requeue_answered(self, api_url: str, psp_reference: str, type_: str, at: datetime) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE reports SET state = 'pending', updated_at = ? WHERE api_url = ?"
                " AND psp_reference = ? AND type = ? AND state = 'answered'",
                (at.isoformat(), api_url, psp_reference, type_),
            )

    def has_report(self, api_url: str, psp_reference: str, type_: str) -> bool:
        """Whether Saleor was told (or will be told) this outcome already."""
        row = self._one(
            "SELECT 1 FROM reports WHERE api_url = ? AND psp_reference = ? AND type = ?",
            (api_url, psp_reference, type_),
        )
        return row is not None

    def finish_action(self, psp_reference: str, at: datetime) -> None:
        """An action's operation reached its outcome (queued as a report)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE actions SET state = 'done', updated_at = ? WHERE psp_reference = ?"
                " AND state = 'waiting'",
                (at.isoformat(), psp_reference),
            )

    def answered_since(self, api_url: str, event: str, since: datetime) -> list[tuple[str, str]]:
        """(transaction id, ``pspReference``) of each answer to an ``event`` delivery since
        ``since``, newest first, each reference once."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT transaction_id, response FROM deliveries WHERE api_url = ? AND event = ?"
                " AND created_at >= ? ORDER BY created_at DESC, rowid DESC",
                (api_url, event, since.isoformat()),
            ).fetchall()
        seen: set[str] = set()
        answers = []
        for row in rows:
            psp = str(loads(row["response"]).get("pspReference") or "")
            if psp and psp not in seen:
                seen.add(psp)
                answers.append((str(row["transaction_id"]), psp))
        return answers

    def rearm_answered(self, api_url: str, event: str, since: datetime, at: datetime) -> int:
        """Queue again the reports of outcomes answered to ``event`` deliveries since ``since``.

        Called when Saleor signals (an empty retry) that it lost an answer: re-sending an
        outcome it did get is harmless, since Saleor answers ``alreadyProcessed``.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT response FROM deliveries WHERE api_url = ? AND event = ?"
                " AND created_at >= ?",
                (api_url, event, since.isoformat()),
            ).fetchall()
        psps = {str(loads(row["response"]).get("pspReference") or "") for row in rows} - {""}
        count = 0
        with self._tx() as conn:
            for psp in psps:
                count += conn.execute(
                    "UPDATE reports SET state = 'pending', updated_at = ?"
                    " WHERE api_url = ? AND psp_reference = ? AND state = 'answered'",
                    (at.isoformat(), api_url, psp),
                ).rowcount
        return int(count)

    # -- requests whose signature could not be checked yet -----------------------------

    def hold_unverified(
        self,
        key: str,
        api_url: str,
        event: str,
        body: bytes,
        signature: str,
        at: datetime,
        limit: int,
    ) -> bool:
        """Keep a request until Saleor's keys can be fetched; False when ``limit`` is full."""
        with self._tx() as conn:
            count = conn.execute("SELECT COUNT(*) FROM unverified").fetchone()[0]
            if count >= limit:
                return False
            conn.execute(
                "INSERT OR IGNORE INTO unverified VALUES (?, ?, ?, ?, ?, ?)",
                (key, api_url, event, body, signature, at.isoformat()),
            )
            return True

    def unverified(self) -> list[tuple[str, str, str, bytes, str]]:
        """(key, api_url, event, body, signature), oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM unverified ORDER BY received_at").fetchall()
        return [
            (r["delivery_key"], r["api_url"], r["event"], bytes(r["body"]), r["signature"])
            for r in rows
        ]

    def drop_unverified(self, key: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM unverified WHERE delivery_key = ?", (key,))

    # -- actions -------------------------------------------------------------------------

    def save_action(self, action: ActionRecord) -> None:
        """Insert or update an action (its request part never changes)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO actions (psp_reference, api_url, transaction_id, event, amount,"
                " currency, state, operation_ids, attempts, last_error, created_at, updated_at,"
                " granted_refund_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(psp_reference) DO UPDATE SET state=excluded.state,"
                " operation_ids=excluded.operation_ids, attempts=excluded.attempts,"
                " last_error=excluded.last_error, updated_at=excluded.updated_at",
                (
                    action.psp_reference,
                    action.api_url,
                    action.transaction_id,
                    action.event,
                    str(action.amount),
                    action.currency,
                    action.state,
                    dumps(action.operation_ids),
                    action.attempts,
                    action.last_error,
                    action.created_at.isoformat(),
                    action.updated_at.isoformat(),
                    action.granted_refund_id,
                ),
            )

    def get_action(self, psp_reference: str) -> ActionRecord | None:
        row = self._one("SELECT * FROM actions WHERE psp_reference = ?", (psp_reference,))
        return _action(row) if row is not None else None

    def actions(self, *states: str) -> list[ActionRecord]:
        """Actions in any of ``states``, oldest first."""
        rows: list[sqlite3.Row] = []
        with self._lock:
            for state in states:
                rows += self._conn.execute(
                    "SELECT * FROM actions WHERE state = ?", (state,)
                ).fetchall()
        return sorted((_action(row) for row in rows), key=lambda a: a.created_at)

    # -- leases --------------------------------------------------------------------------

    def try_lease(self, key: str, owner: str, now: float, ttl: float) -> bool:
        """Take the lease on ``key`` if it is free, expired, or already ours."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT owner, expires_at FROM leases WHERE lease_key = ?", (key,)
            ).fetchone()
            if row is not None and row["owner"] != owner and row["expires_at"] > now:
                return False
            conn.execute(
                "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT(lease_key) DO UPDATE SET"
                " owner=excluded.owner, expires_at=excluded.expires_at",
                (key, owner, now + ttl),
            )
            return True

    def release_lease(self, key: str, owner: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM leases WHERE lease_key = ? AND owner = ?", (key, owner))


def _transaction(row: sqlite3.Row) -> TransactionRecord:
    return TransactionRecord(
        api_url=row["api_url"],
        transaction_id=row["transaction_id"],
        action_type=row["action_type"],
        amount=Decimal(row["amount"]),
        currency=row["currency"],
        reservation_id=row["reservation_id"],
        capture_operation_id=row["capture_operation_id"],
        state=row["state"],
        response=loads(row["response"]) if row["response"] else None,
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        psp_reference=row["psp_reference"],
        channel=row["channel"],
        authorized=Decimal(row["authorized"]) if row["authorized"] is not None else None,
    )


def _action(row: sqlite3.Row) -> ActionRecord:
    return ActionRecord(
        psp_reference=row["psp_reference"],
        api_url=row["api_url"],
        transaction_id=row["transaction_id"],
        event=row["event"],
        amount=Decimal(row["amount"]),
        currency=row["currency"],
        state=row["state"],
        operation_ids=list(loads(row["operation_ids"])),
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        granted_refund_id=row["granted_refund_id"],
    )
