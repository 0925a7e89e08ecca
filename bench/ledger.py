"""Reserve+release pairs per second per ledger store, vs raw driver transactions.

A *pair* is the store work the provider does for one reserve and one release:

1. ``card_transaction``: active reservations of the card, its holding operations, its
   settlements since the read, insert the reservation;
2. ``card_transaction``: get the reservation, its operations, compare-and-set it released.

The baseline runs the same statements with the bare driver on the same schema and the same
per-card lock (SQLite ``BEGIN IMMEDIATE`` in WAL/NORMAL; PostgreSQL
``pg_advisory_xact_lock``; MariaDB ``SELECT … FOR UPDATE`` on a lock row; Redis ``SET NX``
lock + pipelined MULTI), with no dataclasses, no enum or Decimal conversion; its release
UPDATE sets only ``state`` and ``updated_at`` (the store's compare-and-set rewrites the
row). Rounds of both alternate; the figure is the median of the per-round rates. Stores
whose service is not reachable on 127.0.0.1 are reported as skipped. Goal: store >= 0.5 x
raw, for every store.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import _common

from fourws_pay.ledger import LedgerStore, open_store
from fourws_pay.ledger.sqlite import SCHEMA
from fourws_pay.payments.core import HOLDING_OPERATION_STATES
from fourws_pay.payments.models import OperationState, Reservation, ReservationState

NAME = "ledger"
GOAL = 0.5
ROUNDS = 8  # per side, alternating
ROUND_SECONDS = 0.3
BARCODE = "7000000003003"
POSTGRES_URL = os.environ.get(
    "FOURWS_PAY_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test"
)
MYSQL_URL = os.environ.get("FOURWS_PAY_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("FOURWS_PAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

HOLDING = sorted(s.value for s in HOLDING_OPERATION_STATES)
ACTIVE, RELEASED = ReservationState.ACTIVE.value, ReservationState.RELEASED.value
SUCCEEDED = OperationState.SUCCEEDED.value
RES_COLUMNS = (
    "id,barcode,amount,currency,decimals,entity_code,order_ref,state,created_at,expires_at,"
    "forfeited,operation_id,updated_at"
)
Pair = Callable[[int], None]


# ------------------------------------------------------------------------- the store side


def store_pair(store: LedgerStore) -> Pair:
    def pair(n: int) -> None:
        now = datetime.now(UTC)
        with store.card_transaction(BARCODE) as tx:
            tx.reservations_for_card(BARCODE, [ReservationState.ACTIVE])
            tx.operations_for_card(BARCODE, HOLDING_OPERATION_STATES)
            tx.operations_settled_since(BARCODE, now - timedelta(seconds=1))
            reservation = Reservation(
                id=f"res_{uuid.uuid4().hex}",
                barcode=BARCODE,
                amount=Decimal("10.00"),
                currency="EUR",
                decimals=2,
                entity_code="440",
                order_ref=f"B-{n}",
                state=ReservationState.ACTIVE,
                created_at=now,
                expires_at=now + timedelta(minutes=15),
            )
            tx.insert_reservation(reservation)
        with store.card_transaction(BARCODE) as tx:
            current = tx.get_reservation(reservation.id)
            assert current is not None
            tx.captures_of_reservation(current.id)
            done = tx.update_reservation(
                current.with_state(ReservationState.RELEASED, datetime.now(UTC)),
                ReservationState.ACTIVE,
            )
            assert done

    return pair


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


# --------------------------------------------------------------------- raw SQL baselines


def sql_pair(
    execute: Callable[[str, tuple[Any, ...]], list[Any]],
    begin: Callable[[], object],
    commit: Callable[[], object],
    mark: str,
    res: str,
    ops: str,
    when: Callable[[datetime], Any],
) -> Pair:
    """The pair's statements for a DB-API driver (``mark`` is its placeholder)."""
    holding = ",".join([mark] * len(HOLDING))
    q_active = f"SELECT * FROM {res} WHERE barcode = {mark} AND state = {mark}"
    q_holding = f"SELECT * FROM {ops} WHERE barcode = {mark} AND state IN ({holding})"
    q_settled = (
        f"SELECT * FROM {ops} WHERE barcode = {mark} AND state = {mark} AND settled_at >= {mark}"
    )
    q_insert = f"INSERT INTO {res} ({RES_COLUMNS}) VALUES ({','.join([mark] * 13)})"
    q_get = f"SELECT * FROM {res} WHERE id = {mark}"
    q_ops = f"SELECT * FROM {ops} WHERE reservation_id = {mark} AND kind = {mark}"
    q_release = (
        f"UPDATE {res} SET state = {mark}, updated_at = {mark} WHERE id = {mark} AND state = {mark}"
    )

    def pair(n: int) -> None:
        now = datetime.now(UTC)
        rid = f"res_{uuid.uuid4().hex}"
        begin()
        execute(q_active, (BARCODE, ACTIVE))
        execute(q_holding, (BARCODE, *HOLDING))
        execute(q_settled, (BARCODE, SUCCEEDED, when(now - timedelta(seconds=1))))
        expires = when(now + timedelta(minutes=15))
        row = (rid, BARCODE, "10.00", "EUR", 2, "440", f"B-{n}", ACTIVE, when(now), expires)
        execute(q_insert, (*row, "0", None, None))
        commit()
        begin()
        execute(q_get, (rid,))
        execute(q_ops, (rid, "capture"))
        execute(q_release, (RELEASED, when(datetime.now(UTC)), rid, ACTIVE))
        commit()

    return pair


def raw_sqlite(path: Path) -> tuple[Pair, Callable[[], None]]:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)

    def execute(sql: str, params: tuple[Any, ...]) -> list[Any]:
        return conn.execute(sql, params).fetchall()

    pair = sql_pair(
        execute,
        lambda: conn.execute("BEGIN IMMEDIATE"),
        lambda: conn.execute("COMMIT"),
        "?",
        "reservations",
        "operations",
        stamp,
    )
    return pair, conn.close


def raw_postgres(prefix: str) -> tuple[Pair, Callable[[], None]]:
    import psycopg

    conn = psycopg.connect(POSTGRES_URL, autocommit=True)
    conn.execute("SET TIME ZONE 'UTC'")
    key = prefix + BARCODE

    def execute(sql: str, params: tuple[Any, ...]) -> list[Any]:
        cur = conn.execute(sql.encode(), params)
        return cur.fetchall() if cur.description else []

    def begin() -> None:
        conn.execute(b"BEGIN ISOLATION LEVEL READ COMMITTED")
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])

    pair = sql_pair(
        execute,
        begin,
        lambda: conn.execute(b"COMMIT"),
        "%s",
        f"{prefix}reservations",
        f"{prefix}operations",
        lambda at: at,
    )
    return pair, conn.close


def raw_mysql(prefix: str) -> tuple[Pair, Callable[[], None]]:
    import pymysql
    from pymysql.constants import CLIENT

    from fourws_pay.ledger.mysql import _connect_args

    conn = pymysql.connect(
        **_connect_args(MYSQL_URL), autocommit=True, client_flag=CLIENT.FOUND_ROWS
    )
    cur = conn.cursor()
    cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    cur.execute("SET time_zone = '+00:00'")
    cur.execute(f"INSERT IGNORE INTO {prefix}card_locks (barcode) VALUES (%s)", [BARCODE])
    lock = f"SELECT barcode FROM {prefix}card_locks WHERE barcode = %s FOR UPDATE"

    def execute(sql: str, params: tuple[Any, ...]) -> list[Any]:
        cur.execute(sql, params)
        return list(cur.fetchall())

    def begin() -> None:
        cur.execute("START TRANSACTION")
        cur.execute(lock, [BARCODE])

    pair = sql_pair(
        execute,
        begin,
        conn.commit,
        "%s",
        f"{prefix}reservations",
        f"{prefix}operations",
        lambda at: at.replace(tzinfo=None),
    )
    return pair, conn.close


def raw_redis(prefix: str) -> tuple[Pair, Callable[[], None]]:
    """Lock with SET NX PX, read the card's live sets and settlements in one pipeline, write
    record + indexes and drop the lock in one MULTI; release: lock, GET, MULTI."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    lock_key = f"{prefix}lock:{BARCODE}"
    live = f"{prefix}card:{BARCODE}:live"
    active, released = f"{prefix}state:{ACTIVE}", f"{prefix}state:{RELEASED}"

    def lock() -> None:
        while not client.set(lock_key, "token", nx=True, px=10_000):
            time.sleep(0.001)

    def pair(n: int) -> None:
        now = datetime.now(UTC)
        rid = f"res_{uuid.uuid4().hex}"
        lock()
        pipe = client.pipeline(transaction=False)
        pipe.smembers(live)
        pipe.zrangebyscore(f"{prefix}card:{BARCODE}:settled", int(now.timestamp() - 1), "+inf")
        ids, _ = pipe.execute()
        if ids:
            client.mget([f"{prefix}r:{i}" for i in ids])
        record = {
            "id": rid,
            "barcode": BARCODE,
            "amount": "10.00",
            "currency": "EUR",
            "decimals": 2,
            "entity_code": "440",
            "order_ref": f"B-{n}",
            "state": ACTIVE,
            "created_at": stamp(now),
            "expires_at": stamp(now + timedelta(minutes=15)),
            "forfeited": "0",
            "operation_id": None,
            "updated_at": None,
        }
        pipe = client.pipeline(transaction=True)
        pipe.set(f"{prefix}r:{rid}", json.dumps(record))
        pipe.sadd(active, rid)
        pipe.sadd(live, rid)
        pipe.delete(lock_key)
        pipe.execute()
        lock()
        stored = json.loads(client.get(f"{prefix}r:{rid}") or "{}")
        assert stored["state"] == ACTIVE
        stored.update(state=RELEASED, updated_at=stamp(datetime.now(UTC)))
        pipe = client.pipeline(transaction=True)
        pipe.set(f"{prefix}r:{rid}", json.dumps(stored))
        pipe.srem(active, rid)
        pipe.sadd(released, rid)
        pipe.srem(live, rid)
        pipe.delete(lock_key)
        pipe.execute()

    def close() -> None:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.close()

    return pair, close


# ---------------------------------------------------------------------------- measuring


def rate(pair: Pair, counter: list[int]) -> float:
    """Pairs per second over one round of about ``ROUND_SECONDS``."""
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + ROUND_SECONDS
    while done < 100_000:
        pair(counter[0])
        counter[0] += 1
        done += 1
        if time.perf_counter() >= deadline:
            break
    return done / (time.perf_counter() - t0)


def compare(lib: Pair, raw: Pair) -> tuple[float, float]:
    counter = [0]
    for _ in range(20):  # warm-up: connections, statement caches
        lib(counter[0])
        raw(counter[0] + 1)
        counter[0] += 2
    lib_rates: list[float] = []
    raw_rates: list[float] = []
    for n in range(ROUNDS):
        sides = ((lib, lib_rates), (raw, raw_rates))
        for fn, out in sides if n % 2 else sides[::-1]:
            out.append(rate(fn, counter))
    return _common.median(lib_rates), _common.median(raw_rates)


def bench_store(kind: str, tmp: Path) -> tuple[float, float] | str:
    """(store pairs/s, raw pairs/s), or why the store was skipped."""
    tag = uuid.uuid4().hex[:10]
    options: dict[str, Any] = {}
    if kind == "sqlite":
        url = f"sqlite:///{tmp / 'store.db'}"
    elif kind == "postgres":
        url, options = POSTGRES_URL, {"table_prefix": f"bench{tag}_"}
    elif kind == "mysql":
        url, options = MYSQL_URL, {"table_prefix": f"bench{tag}_"}
    else:
        url, options = REDIS_URL, {"key_prefix": f"fourws-bench:{tag}:"}
    try:
        store = open_store(url, **options)
    except Exception as exc:  # a service that is not there is a skip, not a failure
        return f"skipped ({type(exc).__name__}: {str(exc)[:60]})"
    schema_holder: Any = None
    close_raw: Callable[[], None] = lambda: None  # noqa: E731
    try:
        if kind == "sqlite":
            raw, close_raw = raw_sqlite(tmp / "raw.db")
        elif kind == "redis":
            raw, close_raw = raw_redis(f"fourws-bench:{tag}raw:")
        else:
            raw_prefix = f"bench{tag}raw_"
            schema_holder = open_store(url, table_prefix=raw_prefix)  # same schema, own tables
            maker = raw_postgres if kind == "postgres" else raw_mysql
            raw, close_raw = maker(raw_prefix)
        return compare(store_pair(store), raw)
    finally:
        close_raw()
        opened: Any
        for opened in (store, schema_holder):
            if opened is not None and kind != "sqlite":
                with suppress(Exception):
                    opened.drop()
            if opened is not None:
                opened.close()


def main() -> None:
    _common.header("ledger: reserve+release pairs/s, store vs raw driver")
    rows = []
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("sqlite", "postgres", "mysql", "redis"):
            outcome = bench_store(kind, Path(tmp))
            if isinstance(outcome, str):
                rows.append([kind, "-", "-", outcome])
                continue
            lib, raw = outcome
            ratios[kind] = lib / raw
            rows.append([kind, f"{lib:.0f}", f"{raw:.0f}", f"{lib / raw:.2f}"])
    _common.table(["store", "store pairs/s", "raw pairs/s", "ratio"], rows)
    worst = min(ratios.values())
    detail = ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
    skipped = [r[0] for r in rows if r[1] == "-"]
    if skipped:
        detail += f" (skipped: {', '.join(skipped)})"
    _common.result(NAME, f"{worst:.2f}", f">={GOAL}", worst >= GOAL, f"store/raw: {detail}")


if __name__ == "__main__":
    main()
