"""How ledger cost grows with history: checkout latency, ``sweep`` and ``reconcile``.

A shop's ledger only grows: every checkout leaves a reservation and a capture behind. This
bench builds ledgers with 10^3, 10^5 and 10^6 *historical rows* (reservations + operations,
bulk-inserted with one SQL statement each: 80 % captured with a succeeded capture, 10 %
released, 10 % expired, three reservations per card, timestamps in the past) plus the same
small *live* set (active holds expiring in an hour, enqueued captures not yet due), then, in
alternating rounds over the sizes (so a busy machine slows every size alike):

- **checkout**: ``reserve`` → ``capture`` → the in-process sandbox works its queue and its
  callback settles the capture (``succeeded``), on a fresh card each time;
- **sweep** and **reconcile** (nothing is due, so they only look at what is live).

The baseline of each ratio is the 10^3 ledger measured in the same run. Goal: checkout at
10^6 rows ≤ 1.2 × at 10^3; sweep and reconcile follow the live rows, not the history (also
shown: the 10^3 ledger with 10 × the live rows). Noise: per-round medians, printed as
median [min–max] over rounds. The query plans of the statements the flows run are checked
for full-table scans (SQLite ``EXPLAIN QUERY PLAN``, PostgreSQL ``EXPLAIN``).

``--quick`` (sizes 10^2/10^3/10^4, fewer rounds) is for the smoke test; ``--sizes`` and
``--stores`` choose. PostgreSQL tables get a unique prefix and are dropped at the end; it is
skipped, with a reason, when not reachable on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import _common

from fourws_pay import CallbackRejected, GiftCardPayments, make_plugin_manager
from fourws_pay.ledger import LedgerStore, SQLiteStore
from fourws_pay.payments.models import OperationState
from fourws_pay.sandbox import Sandbox
from fourws_pay.sandbox.ean import make_ean13

NAME = "ledger_growth"
GOAL = 1.2
POSTGRES_URL = os.environ.get(
    "FOURWS_PAY_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test"
)
ANALYZE_SQLITE = "--sqlite-analyze" in __import__("sys").argv
LIVE = 50  # active holds + enqueued captures, the same in every ledger

# One historical checkout n: reservation 'res_h<n>' on card n // 3; 80 % captured (with a
# succeeded capture 'op_h<n>'), 10 % released, 10 % expired. Rows per checkout: 1.8.
ROWS_PER_CHECKOUT = 1.8

SQLITE_TS = "strftime('%Y-%m-%dT%H:%M:%S.000000+00:00', {secs}, 'unixepoch')"
EPOCH = 1_735_689_600  # 2025-01-01, history is one second apart from there


def _sqlite_history(first: int, last: int) -> list[str]:
    at = SQLITE_TS.format(secs=f"{EPOCH} + n")
    later = SQLITE_TS.format(secs=f"{EPOCH} + n + 60")
    seq = (
        f"WITH RECURSIVE seq(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM seq"
        f" WHERE n < {last})"
    )
    state = "CASE n % 10 WHEN 8 THEN 'released' WHEN 9 THEN 'expired' ELSE 'captured' END"
    return [
        f"""{seq} INSERT INTO reservations SELECT 'res_h' || n, '9' || printf('%012d', n / 3),
        '10.00', 'EUR', 2, '440', 'H-' || n, {state}, {at}, {later}, '0.00',
        CASE WHEN n % 10 < 8 THEN 'op_h' || n END, {later} FROM seq""",
        f"""{seq} INSERT INTO operations SELECT 'op_h' || n, 'capture', 'res_h' || n,
        '9' || printf('%012d', n / 3), '10.00', 'EUR', '440', 'succeeded', {at}, {later},
        {later}, printf('%064d', n), 'q' || n, '100.00', NULL, NULL, 'cb' || n, {later}
        FROM seq WHERE n % 10 < 8""",
    ]


def _sqlite_live(tag: str, count: int) -> list[str]:
    soon = "strftime('%Y-%m-%dT%H:%M:%S.000000+00:00', 'now', '+1 hour')"
    now = "strftime('%Y-%m-%dT%H:%M:%S.000000+00:00', 'now')"
    seq = f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {count})"
    return [
        f"""{seq} INSERT INTO reservations SELECT 'res_{tag}a' || n, '8' || printf('%012d', n),
        '5.00', 'EUR', 2, '440', 'L-' || n, 'active', {now}, {soon}, '0.00', NULL, NULL
        FROM seq""",
        f"""{seq} INSERT INTO reservations SELECT 'res_{tag}c' || n, '7' || printf('%012d', n),
        '5.00', 'EUR', 2, '440', 'C-' || n, 'active', {now}, {soon}, '0.00',
        'op_{tag}c' || n, NULL FROM seq""",
        f"""{seq} INSERT INTO operations SELECT 'op_{tag}c' || n, 'capture', 'res_{tag}c' || n,
        '7' || printf('%012d', n), '5.00', 'EUR', '440', 'enqueued', {now}, {now}, {soon},
        printf('%064d', n), 'q' || n, '100.00', NULL, NULL, NULL, NULL FROM seq""",
    ]


def _pg_history(p: str, first: int, last: int) -> list[str]:
    at = f"to_timestamp({EPOCH} + n)"
    later = f"to_timestamp({EPOCH} + n + 60)"
    seq = f"generate_series({first}, {last}) AS n"
    state = "CASE n % 10 WHEN 8 THEN 'released' WHEN 9 THEN 'expired' ELSE 'captured' END"
    card = "'9' || lpad((n / 3)::text, 12, '0')"
    return [
        f"""INSERT INTO {p}reservations SELECT 'res_h' || n, {card}, 10.00, 'EUR', 2, '440',
        'H-' || n, {state}, {at}, {later}, 0.00,
        CASE WHEN n % 10 < 8 THEN 'op_h' || n END, {later} FROM {seq}""",
        f"""INSERT INTO {p}operations SELECT 'op_h' || n, 'capture', 'res_h' || n, {card},
        10.00, 'EUR', '440', 'succeeded', {at}, {later}, {later}, lpad(n::text, 64, '0'),
        'q' || n, 100.00, NULL, NULL, 'cb' || n, {later} FROM {seq} WHERE n % 10 < 8""",
    ]


def _pg_live(p: str, tag: str, count: int) -> list[str]:
    soon, seq = "now() + interval '1 hour'", f"generate_series(1, {count}) AS n"
    return [
        f"""INSERT INTO {p}reservations SELECT 'res_{tag}a' || n, '8' || lpad(n::text, 12, '0'),
        5.00, 'EUR', 2, '440', 'L-' || n, 'active', now(), {soon}, 0.00, NULL, NULL
        FROM {seq}""",
        f"""INSERT INTO {p}reservations SELECT 'res_{tag}c' || n, '7' || lpad(n::text, 12, '0'),
        5.00, 'EUR', 2, '440', 'C-' || n, 'active', now(), {soon}, 0.00, 'op_{tag}c' || n,
        NULL FROM {seq}""",
        f"""INSERT INTO {p}operations SELECT 'op_{tag}c' || n, 'capture', 'res_{tag}c' || n,
        '7' || lpad(n::text, 12, '0'), 5.00, 'EUR', '440', 'enqueued', now(), now(), {soon},
        lpad(n::text, 64, '0'), 'q' || n, 100.00, NULL, NULL, NULL, NULL FROM {seq}""",
    ]


# The shapes of every statement the checkout, sweep and reconcile flows run (see
# fourws_pay/ledger/_sql.py and sqlite.py); their plans must not scan a whole table.
QUERIES = {
    "reservations_for_card": "SELECT * FROM {r} WHERE barcode = '9000000000001'"
    " AND state IN ('active') ORDER BY created_at, id",
    "operations_for_card": "SELECT * FROM {o} WHERE barcode = '9000000000001'"
    " AND state IN ('prepared','sending','enqueued','unknown') ORDER BY created_at, id",
    "operations_settled_since": "SELECT * FROM {o} WHERE barcode = '9000000000001'"
    " AND state = 'succeeded' AND settled_at >= '2025-01-02T00:00:00.000000+00:00'"
    " ORDER BY created_at, id",
    "get_reservation": "SELECT * FROM {r} WHERE id = 'res_h5'",
    "get_operation": "SELECT * FROM {o} WHERE id = 'op_h5'",
    "operations_for_reservation": "SELECT * FROM {o} WHERE reservation_id = 'res_h5'"
    " AND kind = 'capture' ORDER BY created_at, id",
    "children_of": "SELECT * FROM {o} WHERE parent_id = 'op_h5' AND kind = 'refund'"
    " ORDER BY created_at, id",
    "list_reservations(active) [sweep]": "SELECT * FROM {r} WHERE state IN ('active')"
    " ORDER BY created_at, id",
    "list_operations(in flight) [reconcile]": "SELECT * FROM {o}"
    " WHERE state IN ('prepared','sending','enqueued') ORDER BY created_at, id",
    "list_operations(unknown) [reconcile]": "SELECT * FROM {o} WHERE state IN ('unknown')"
    " ORDER BY created_at, id",
}


@dataclass
class Ledger:
    """One ledger of a given history size, with its provider and in-process sandbox."""

    rows: int
    store: LedgerStore
    payments: GiftCardPayments
    sandbox: Sandbox
    cards: Iterator[str]
    times: dict[str, list[float]] = field(default_factory=dict)

    def record(self, what: str, seconds: float) -> None:
        self.times.setdefault(what, []).append(seconds)


def _provider(store: LedgerStore) -> tuple[GiftCardPayments, Sandbox]:
    sandbox = Sandbox()
    payments = GiftCardPayments(
        client=sandbox.client(),
        store=store,
        plugin_manager=make_plugin_manager(load_entrypoints=False),
    )

    def deliver(url: str, body: bytes) -> int:
        try:
            return payments.handle_callback(urlsplit(url).path, body).status_code
        except CallbackRejected as exc:
            return exc.status_code

    sandbox.set_callback_handler(deliver)
    return payments, sandbox


def _fresh_cards(sandbox: Sandbox, prefix: str) -> Iterator[str]:
    n = 0
    while True:
        n += 1
        barcode = make_ean13(prefix, n)
        sandbox.add_giftcard(barcode, amount=Decimal("50.00"))
        yield barcode


def checkout(ledger: Ledger) -> float:
    card = next(ledger.cards)
    payments = ledger.payments
    t0 = time.perf_counter()
    reservation = payments.reserve(card, amount="10.00", currency="EUR", order_ref=card)
    operation = payments.capture(reservation.id)
    ledger.sandbox.run_until_idle()
    took = time.perf_counter() - t0
    assert payments.get_operation(operation.id).state is OperationState.SUCCEEDED
    return took


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- stores


class SQLiteKind:
    name = "sqlite"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def make(self, rows: int, live: int, tag: str) -> LedgerStore:
        path = self.tmp / f"ledger-{tag}.db"
        store = SQLiteStore(path)  # creates the schema
        checkouts = max(1, round(rows / ROWS_PER_CHECKOUT))
        conn = sqlite3.connect(path)
        with conn:
            for sql in [*_sqlite_history(1, checkouts), *_sqlite_live(tag, live)]:
                conn.execute(sql)
        if ANALYZE_SQLITE:
            conn.execute("ANALYZE")
        conn.close()
        return store

    def plans(self, store: LedgerStore) -> dict[str, str]:
        conn = sqlite3.connect(store.path)  # type: ignore[attr-defined]
        out = {}
        for name, sql in QUERIES.items():
            rows = conn.execute(
                "EXPLAIN QUERY PLAN " + sql.format(r="reservations", o="operations")
            ).fetchall()
            out[name] = "; ".join(str(r[-1]) for r in rows)
        conn.close()
        return out

    @staticmethod
    def full_scan(plan: str) -> bool:
        return (
            any(part.startswith("SCAN ") and "USING" not in part for part in plan.split("; "))
            and "SCAN CONSTANT" not in plan
        )

    def count(self, store: LedgerStore) -> int:
        conn = sqlite3.connect(store.path)  # type: ignore[attr-defined]
        n = sum(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("reservations", "operations")
        )
        conn.close()
        return int(n)

    def cleanup(self) -> None:
        pass


class PostgresKind:
    name = "postgres"

    def __init__(self) -> None:
        import psycopg

        self.psycopg = psycopg
        self.prefixes: list[str] = []

    def make(self, rows: int, live: int, tag: str) -> LedgerStore:
        from fourws_pay.ledger.postgres import PostgresStore

        prefix = f"bench_{os.getpid()}_{tag}_"
        self.prefixes.append(prefix)
        store = PostgresStore(POSTGRES_URL, table_prefix=prefix)
        checkouts = max(1, round(rows / ROWS_PER_CHECKOUT))
        with self.psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for sql in [*_pg_history(prefix, 1, checkouts), *_pg_live(prefix, tag, live)]:
                conn.execute(sql.encode())
            conn.execute(f"ANALYZE {prefix}reservations".encode())
            conn.execute(f"ANALYZE {prefix}operations".encode())
        store.prefix = prefix  # type: ignore[attr-defined]
        return store

    def plans(self, store: LedgerStore) -> dict[str, str]:
        p = store.prefix  # type: ignore[attr-defined]
        out = {}
        with self.psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for name, sql in QUERIES.items():
                rows = conn.execute(
                    ("EXPLAIN " + sql.format(r=f"{p}reservations", o=f"{p}operations")).encode()
                ).fetchall()
                out[name] = "; ".join(
                    r[0].strip().replace("->  ", "")
                    for r in rows
                    if "Scan" in r[0] or "Sort" in r[0]
                )
        return out

    @staticmethod
    def full_scan(plan: str) -> bool:
        return "Seq Scan" in plan

    def count(self, store: LedgerStore) -> int:
        p = store.prefix  # type: ignore[attr-defined]
        with self.psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            return sum(
                conn.execute(f"SELECT count(*) FROM {p}{t}".encode()).fetchone()[0]  # type: ignore[index]
                for t in ("reservations", "operations")
            )

    def cleanup(self) -> None:
        with self.psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for p in self.prefixes:
                conn.execute(f"DROP TABLE IF EXISTS {p}reservations, {p}operations".encode())


@contextmanager
def kinds(names: list[str], tmp: Path) -> Iterator[list[Any]]:
    out: list[Any] = []
    for name in names:
        if name == "sqlite":
            out.append(SQLiteKind(tmp))
        elif name == "postgres":
            try:
                import psycopg

                psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
            except Exception as exc:
                print(f"postgres: skipped ({type(exc).__name__}: not reachable at 127.0.0.1)")
                continue
            out.append(PostgresKind())
    try:
        yield out
    finally:
        for kind in out:
            kind.cleanup()


def spread(values: list[float], scale: float) -> str:
    return (
        f"{statistics.median(values) * scale:.2f} "
        f"[{min(values) * scale:.2f}–{max(values) * scale:.2f}]"
    )


def run_kind(kind: Any, sizes: list[int], rounds: int, per_round: int) -> dict[str, Any]:
    print(
        f"\n{kind.name}: seeding {', '.join(f'{s:,}' for s in sizes)} historical rows "
        f"(+{3 * LIVE} live) and {sizes[0]:,} (+{30 * LIVE} live)"
    )
    t0 = time.perf_counter()
    ledgers: list[Ledger] = []
    for n, rows in enumerate(sizes):
        store = kind.make(rows, LIVE, f"s{n}")
        payments, sandbox = _provider(store)
        ledgers.append(Ledger(rows, store, payments, sandbox, _fresh_cards(sandbox, f"6{n}")))
    store = kind.make(sizes[0], 10 * LIVE, "live")
    payments, sandbox = _provider(store)
    more_live = Ledger(sizes[0], store, payments, sandbox, _fresh_cards(sandbox, "59"))
    print(
        f"  seeded in {time.perf_counter() - t0:.1f} s; rows: "
        + ", ".join(f"{kind.count(x.store):,}" for x in [*ledgers, more_live])
    )

    scans = []
    for name, plan in kind.plans(ledgers[-1].store).items():
        if kind.full_scan(plan):
            scans.append(f"{name}: {plan}")
    print(
        "  query plans at the largest size: "
        + ("no full-table scan" if not scans else "FULL SCANS: " + " | ".join(scans))
    )

    for ledger in [*ledgers, more_live]:  # warm-up: connections, caches, first plans
        for _ in range(3):
            checkout(ledger)
        ledger.payments.sweep()
        ledger.payments.reconcile()
    for r in range(rounds):
        order = ledgers if r % 2 else ledgers[::-1]
        for ledger in order:
            per = [checkout(ledger) for _ in range(per_round)]
            ledger.record("checkout", statistics.median(per))
            ledger.record("sweep", timed(ledger.payments.sweep))
            ledger.record("reconcile", timed(ledger.payments.reconcile))
        more_live.record("sweep", timed(more_live.payments.sweep))
        more_live.record("reconcile", timed(more_live.payments.reconcile))

    rows_out = []
    for ledger in ledgers:
        rows_out.append(
            [
                f"{ledger.rows:,}",
                3 * LIVE,
                spread(ledger.times["checkout"], 1e3),
                spread(ledger.times["sweep"], 1e3),
                spread(ledger.times["reconcile"], 1e3),
            ]
        )
    rows_out.append(
        [
            f"{more_live.rows:,}",
            30 * LIVE,
            "—",
            spread(more_live.times["sweep"], 1e3),
            spread(more_live.times["reconcile"], 1e3),
        ]
    )
    _common.table(
        ["history rows", "live rows", "checkout ms", "sweep ms", "reconcile ms"], rows_out
    )
    med = {
        w: [statistics.median(x.times[w]) for x in ledgers]
        for w in ("checkout", "sweep", "reconcile")
    }
    ratio = {w: v[-1] / v[0] for w, v in med.items()}
    live_ratio = {
        w: statistics.median(more_live.times[w]) / med[w][0] for w in ("sweep", "reconcile")
    }
    print(
        f"  largest/smallest history: checkout {ratio['checkout']:.2f}x, sweep "
        f"{ratio['sweep']:.2f}x, reconcile {ratio['reconcile']:.2f}x; "
        f"10x live rows: sweep {live_ratio['sweep']:.1f}x, reconcile {live_ratio['reconcile']:.1f}x"
    )
    for ledger in [*ledgers, more_live]:
        ledger.payments.close()
    return {
        "ratio": ratio,
        "live": live_ratio,
        "scans": scans,
        "checkout_ms": (med["checkout"][0] * 1e3, med["checkout"][-1] * 1e3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--sizes", help="comma-separated history sizes (rows)")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument(
        "--sqlite-analyze",
        action="store_true",
        help="run ANALYZE on the SQLite ledgers (the store never does; PostgreSQL autovacuum does)",
    )
    args = parser.parse_args()
    sizes = [100, 1_000, 10_000] if args.quick else [1_000, 100_000, 1_000_000]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    rounds, per_round = (2, 3) if args.quick else (6, 10)
    _common.header(
        f"{NAME}: checkout, sweep and reconcile vs history "
        f"({rounds} rounds x {per_round} checkouts per size)"
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp, kinds(args.stores.split(","), Path(tmp)) as found:
        for kind in found:
            results[kind.name] = run_kind(kind, sizes, rounds, per_round)
    worst = max(r["ratio"]["checkout"] for r in results.values())
    detail = "; ".join(
        f"{name}: checkout {r['checkout_ms'][0]:.1f}→{r['checkout_ms'][1]:.1f} ms "
        f"({r['ratio']['checkout']:.2f}x), sweep {r['ratio']['sweep']:.2f}x, reconcile "
        f"{r['ratio']['reconcile']:.2f}x from {sizes[0]:,} to {sizes[-1]:,} rows; "
        f"10x live rows: sweep {r['live']['sweep']:.1f}x, reconcile {r['live']['reconcile']:.1f}x"
        + (f"; full scans: {len(r['scans'])}" if r["scans"] else "")
        for name, r in results.items()
    )
    _common.result(NAME, f"{worst:.2f}", f"<={GOAL}", worst <= GOAL, detail)


if __name__ == "__main__":
    main()
