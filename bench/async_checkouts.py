"""``AsyncGiftCardPayments``: 100 concurrent checkouts on distinct cards in one process, vs
the same HTTP calls made with a bare ``httpx.AsyncClient``.

A *checkout* is ``check`` → ``reserve`` → ``capture`` (4WS accepted the consumption into its
queue); the served sandbox runs in its own interpreter with its queue idle, so both sides
see the same server. The bare side sends, per checkout, the client's own requests: GET
giftcard three times (check, reserve's and capture's fresh reads) and the POST
updateGiftcard with the same body shape. A round starts ``--concurrency`` checkouts at once
(``asyncio.gather``) on cards not used before and ends when all finished; rounds of the two
sides alternate. The figure is checkouts/s, median [min–max] over rounds, per ledger store
(SQLite, the default, and PostgreSQL when reachable on 127.0.0.1). Goal: library ≥ 0.7 ×
bare for every store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import _common
import httpx

from fourws_pay import AsyncClient, AsyncGiftCardPayments, make_plugin_manager
from fourws_pay.api import wirejson
from fourws_pay.api.models import GiftCardUpdate
from fourws_pay.ledger import LedgerStore, SQLiteStore
from fourws_pay.payments.models import OperationState

NAME = "async_checkouts"
GOAL = 0.7
AMOUNT = Decimal("1.00")
POSTGRES_URL = os.environ.get(
    "FOURWS_PAY_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test"
)


class Cards:
    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> list[str]:
        out = [_common.bench_card(self.next + i) for i in range(n)]
        self.next += n
        return out


async def measure(
    sandbox: _common.SandboxProcess,
    store: LedgerStore,
    cards: Cards,
    concurrency: int,
    rounds: int,
) -> dict[str, list[float]]:
    settings: Any = sandbox.settings
    client = AsyncClient(settings)
    payments = AsyncGiftCardPayments(
        client=client, store=store, plugin_manager=make_plugin_manager(load_entrypoints=False)
    )
    get = client.core.documents_request(
        "GET", settings.cmd_get_giftcard, {settings.param_giftcard_barcode: "0"}
    )
    get_url = str(get.url.copy_with(query=None))
    get_params = dict(get.url.params)
    headers = {k: v for k, v in get.headers.items() if k.lower() != "host"}
    post = client.core.documents_request("POST", settings.cmd_update_giftcard, body={})
    post_url = str(post.url)
    post_headers = {**headers, "Content-Type": settings.update_giftcard_content_type}
    raw = httpx.AsyncClient(timeout=60)
    captures: list[str] = []

    async def lib(barcode: str) -> None:
        decision = await payments.check(barcode, amount=AMOUNT, currency="EUR")
        assert decision.ok, decision
        reservation = await payments.reserve(
            barcode, amount=AMOUNT, currency="EUR", order_ref=f"A-{uuid.uuid4().hex[:12]}"
        )
        operation = await payments.capture(reservation.id)
        captures.append(operation.id)

    async def bare(barcode: str) -> None:
        params = {**get_params, settings.param_giftcard_barcode: barcode}
        for _ in range(3):
            response = await raw.get(get_url, params=params, headers=headers)
            assert response.json()["success"] is True, response.text
        op_id = f"op_{uuid.uuid4().hex}"
        body = GiftCardUpdate(
            entity_code=settings.entity_code,
            barcode=barcode,
            amount=-AMOUNT,
            callback=f"{settings.callback_base_url}/{op_id}/t",
            payload={"operation_id": op_id},
        ).wire()
        response = await raw.post(
            post_url, content=wirejson.dumps(body).encode(), headers=post_headers
        )
        assert response.json()["success"] is True, response.text

    sides: dict[str, Callable[[str], Awaitable[None]]] = {"lib": lib, "bare": bare}
    rates: dict[str, list[float]] = {"lib": [], "bare": []}
    for fn in sides.values():  # warm-up round, not counted
        await asyncio.gather(*(fn(c) for c in cards.take(concurrency)))
    for r in range(rounds):
        for name in ("lib", "bare") if r % 2 == 0 else ("bare", "lib"):
            batch = cards.take(concurrency)
            t0 = time.perf_counter()
            await asyncio.gather(*(sides[name](c) for c in batch))
            rates[name].append(concurrency / (time.perf_counter() - t0))
    pending = await asyncio.to_thread(store.list_operations, [OperationState.ENQUEUED])
    assert len(pending) == len(captures), (len(pending), len(captures))
    await raw.aclose()
    await payments.aclose()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small, short (smoke test)")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    concurrency, rounds = (10, 1) if args.quick else (args.concurrency, args.rounds)
    stores = args.stores.split(",")
    _common.header(
        f"{NAME}: {concurrency} concurrent checkouts in one process, AsyncGiftCardPayments "
        f"vs bare httpx.AsyncClient ({rounds} rounds per side)"
    )
    cards_needed = (rounds + 1) * 2 * concurrency * len(stores)
    results: dict[str, dict[str, list[float]]] = {}
    with (
        _common.SandboxProcess(cards=cards_needed) as sandbox,
        tempfile.TemporaryDirectory() as tmp,
    ):
        cards = Cards()
        for kind in stores:
            store: LedgerStore
            if kind == "sqlite":
                store = SQLiteStore(Path(tmp) / "ledger.db")
            else:
                try:
                    from fourws_pay.ledger.postgres import PostgresStore

                    prefix = f"bench_async_{os.getpid()}_"
                    store = PostgresStore(POSTGRES_URL, table_prefix=prefix, pool_size=16)
                except Exception as exc:
                    print(f"postgres: skipped ({type(exc).__name__}: not reachable)")
                    continue
            try:
                results[kind] = asyncio.run(measure(sandbox, store, cards, concurrency, rounds))
            finally:
                if kind == "postgres":
                    import psycopg

                    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                        tables = f"{prefix}reservations, {prefix}operations"
                        conn.execute(f"DROP TABLE IF EXISTS {tables}".encode())
    rows, ratios = [], {}
    for kind, rates in results.items():
        lib, bare = statistics.median(rates["lib"]), statistics.median(rates["bare"])
        ratios[kind] = lib / bare
        for name, label in (("lib", "AsyncGiftCardPayments"), ("bare", "bare httpx.AsyncClient")):
            values = rates[name]
            rows.append(
                [
                    kind,
                    label,
                    f"{statistics.median(values):.0f} [{min(values):.0f}–{max(values):.0f}]",
                ]
            )
    _common.table(["ledger", "side", "checkouts/s median [min–max]"], rows)
    worst = min(ratios.values())
    detail = f"library/bare checkouts/s with {concurrency} concurrent: " + ", ".join(
        f"{kind} {ratio:.2f}" for kind, ratio in ratios.items()
    )
    _common.result(NAME, f"{worst:.2f}", f">={GOAL}", worst >= GOAL, detail)


if __name__ == "__main__":
    main()
