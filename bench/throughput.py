"""Checkouts per second on many distinct cards with 1, 2 and 4 worker processes sharing a
PostgreSQL ledger and one served sandbox, vs the same HTTP calls made bare.

A *checkout* here is what a shop's request handler waits for: ``check`` → ``reserve`` →
``capture`` (4WS accepted the consumption into its queue), each on a card no other
checkout uses. Settlement happens in the background on both sides alike: the sandbox (its
own interpreter) works its queue every 50 ms and POSTs each callback to a receiver in the
bench process, which settles the library's captures in the shared ledger
(``payments.callback_app()``) and just answers 200 to the bare side's. After the rounds the
bench checks that every library capture settled.

The bare side replays the client's own requests with one ``httpx.Client`` per worker: GET
giftcard three times (check, reserve's and capture's fresh reads) and the POST
updateGiftcard with the same body shape and callback. For each worker count, rounds of both
sides alternate (``--seconds`` each, all workers started together by a barrier); the figure
is checkouts/s summed over workers, median [min–max] over rounds. Goal: library ≥ 0.8 ×
bare at every worker count. Needs PostgreSQL on 127.0.0.1 (its tables get a unique prefix
and are dropped at the end); loopback only.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import statistics
import time
import uuid
from decimal import Decimal
from typing import Any

import _common
import httpx

NAME = "throughput"
GOAL = 0.8
POSTGRES_URL = os.environ.get(
    "FOURWS_PAY_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test"
)
AMOUNT = Decimal("1.00")
CARDS_PER_SLOT = 4000  # distinct cards per (worker count, worker, side); reused beyond that


def card(slot: int, n: int) -> str:
    return _common.bench_card(slot * CARDS_PER_SLOT + n % CARDS_PER_SLOT)


def worker(
    side_order: list[list[str]],
    slot_of: dict[str, int],
    sandbox_url: str,
    receiver_url: str,
    prefix: str,
    seconds: float,
    barrier: Any,
    results: Any,
) -> None:
    """One worker process: for each round, for each side, wait for the others, then run
    checkouts for ``seconds`` and report how many finished."""
    from fourws_pay import Client, GiftCardPayments, make_plugin_manager
    from fourws_pay.api import wirejson
    from fourws_pay.api.models import GiftCardUpdate
    from fourws_pay.ledger.postgres import PostgresStore
    from fourws_pay.sandbox.sandbox import sandbox_settings

    settings = sandbox_settings(sandbox_url, callback_base_url=f"{receiver_url}/lib")
    client = Client(settings)
    payments = GiftCardPayments(
        client=client,
        store=PostgresStore(POSTGRES_URL, table_prefix=prefix),
        plugin_manager=make_plugin_manager(load_entrypoints=False),
    )
    probe = card(0, 0)
    get = client.core.documents_request(
        "GET", settings.cmd_get_giftcard, {settings.param_giftcard_barcode: probe}
    )
    get_url = str(get.url.copy_with(query=None))
    get_params = dict(get.url.params)
    headers = {k: v for k, v in get.headers.items() if k.lower() != "host"}
    post = client.core.documents_request("POST", settings.cmd_update_giftcard, body={})
    post_url = str(post.url)
    post_headers = {**headers, "Content-Type": settings.update_giftcard_content_type}
    raw = httpx.Client(timeout=30)
    used = {"lib": 0, "bare": 0}

    def lib(barcode: str) -> None:
        decision = payments.check(barcode, amount=AMOUNT, currency="EUR")
        assert decision.ok, decision
        reservation = payments.reserve(
            barcode, amount=AMOUNT, currency="EUR", order_ref=f"T-{uuid.uuid4().hex[:12]}"
        )
        payments.capture(reservation.id)

    def bare(barcode: str) -> None:
        params = {**get_params, settings.param_giftcard_barcode: barcode}
        for _ in range(3):
            response = raw.get(get_url, params=params, headers=headers)
            assert response.json()["success"] is True, response.text
        op_id = f"op_{uuid.uuid4().hex}"
        body = GiftCardUpdate(
            entity_code=settings.entity_code,
            barcode=barcode,
            amount=-AMOUNT,
            callback=f"{receiver_url}/raw/{op_id}",
            payload={"operation_id": op_id},
        ).wire()
        response = raw.post(post_url, content=wirejson.dumps(body).encode(), headers=post_headers)
        assert response.json()["success"] is True, response.text

    sides = {"lib": lib, "bare": bare}
    for _ in range(3):  # warm-up: connections, imports, first statements
        for name, fn in sides.items():
            fn(card(slot_of[name], used[name]))
            used[name] += 1
    for order in side_order:
        for name in order:
            barrier.wait()
            fn, slot = sides[name], slot_of[name]
            done, start = 0, time.perf_counter()
            deadline = start + seconds
            while time.perf_counter() < deadline:
                fn(card(slot, used[name]))
                used[name] += 1
                done += 1
            results.put((name, done, time.perf_counter() - start))
    raw.close()
    payments.close()


class Receiver:
    """Callbacks for both sides: the library's to ``payments.callback_app()`` over the
    shared ledger, the bare side's answered 200 at once."""

    def __init__(self, prefix: str) -> None:
        from fourws_pay import GiftCardPayments, make_plugin_manager
        from fourws_pay.ledger.postgres import PostgresStore
        from fourws_pay.sandbox.sandbox import sandbox_settings
        from fourws_pay.serving import ThreadServer

        self.payments = GiftCardPayments(
            settings=sandbox_settings(),
            store=PostgresStore(POSTGRES_URL, table_prefix=prefix),
            plugin_manager=make_plugin_manager(load_entrypoints=False),
        )
        self.app = self.payments.callback_app()
        self.raw = 0
        self.server = ThreadServer(self.route, name="bench-receiver").start()

    async def route(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/lib/"):
            scope = {**scope, "path": scope["path"][len("/lib") :]}
            await self.app(scope, receive, send)
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        self.raw += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"success": true}'})

    def close(self) -> None:
        self.server.stop()
        self.payments.close()


def run_config(
    workers: int,
    config_index: int,
    rounds: int,
    seconds: float,
    sandbox_url: str,
    receiver_url: str,
    prefix: str,
) -> dict[str, list[float]]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    orders = [["lib", "bare"] if r % 2 == 0 else ["bare", "lib"] for r in range(rounds)]
    procs = []
    for w in range(workers):
        base = (config_index * 4 + w) * 2
        slot_of = {"lib": base, "bare": base + 1}
        proc = ctx.Process(
            target=worker,
            args=(orders, slot_of, sandbox_url, receiver_url, prefix, seconds, barrier, results),
        )
        proc.start()
        procs.append(proc)

    def next_result() -> Any:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                return results.get(timeout=0.5)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    for p in procs:
                        p.kill()
                    raise RuntimeError("a worker process failed (see its traceback)") from None
        raise RuntimeError("no result from the workers within 120 s")

    rates: dict[str, list[float]] = {"lib": [], "bare": []}
    for order in orders:
        for name in order:
            got = [next_result() for _ in range(workers)]
            assert all(g[0] == name for g in got), got
            rates[name].append(sum(g[1] / g[2] for g in got))
    for proc in procs:
        proc.join(60)
        if proc.exitcode != 0:
            raise RuntimeError(f"a worker failed (exit {proc.exitcode})")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 worker, short rounds (smoke)")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    counts = [1] if args.quick else [int(w) for w in args.workers.split(",")]
    rounds, seconds = (1, 0.3) if args.quick else (args.rounds, args.seconds)
    _common.header(
        f"{NAME}: checkouts/s, {'/'.join(map(str, counts))} worker processes, shared "
        f"PostgreSQL ledger, served sandbox ({rounds} rounds x {seconds:g} s per side)"
    )
    try:
        import psycopg

        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except Exception as exc:
        print(f"PostgreSQL not reachable on 127.0.0.1 ({type(exc).__name__}): skipped")
        _common.result(NAME, "skipped", f">={GOAL}", True, "PostgreSQL not reachable")
        return

    prefix = f"bench_tp_{os.getpid()}_"
    cards = CARDS_PER_SLOT * 2 * 4 * len(counts)
    sandbox = _common.SandboxProcess(cards=cards, worker_interval=0.05)
    receiver = None
    try:
        sandbox_url = sandbox.url
        receiver = Receiver(prefix)
        rows, ratios = [], {}
        for index, workers in enumerate(counts):
            rates = run_config(
                workers, index, rounds, seconds, sandbox_url, receiver.server.url, prefix
            )
            lib, bare = statistics.median(rates["lib"]), statistics.median(rates["bare"])
            ratios[workers] = lib / bare
            for name, label in (("lib", "checkout (payments)"), ("bare", "bare HTTP calls")):
                values = rates[name]
                rows.append(
                    [
                        workers,
                        label,
                        f"{statistics.median(values):.0f} [{min(values):.0f}–{max(values):.0f}]",
                    ]
                )
            print(f"  {workers} worker(s): library/bare {ratios[workers]:.2f}", flush=True)
        _common.table(["workers", "side", "checkouts/s median [min–max]"], rows)

        from fourws_pay.payments.models import OperationState

        store = receiver.payments.store
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            waiting = store.list_operations([OperationState.ENQUEUED])
            if not waiting:
                break
            time.sleep(0.2)
        total = len(store.list_operations())
        settled = len(store.list_operations([OperationState.SUCCEEDED]))
        print(f"settlement: {settled} of {total} library captures succeeded")
        assert settled == total, "some library captures did not settle"
    finally:
        if receiver is not None:
            receiver.close()
        sandbox.stop()
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {prefix}reservations, {prefix}operations".encode())

    worst = min(ratios.values())
    detail = "library/bare checkouts/s: " + ", ".join(
        f"{w} worker{'s' if w > 1 else ''} {r:.2f}" for w, r in ratios.items()
    )
    _common.result(NAME, f"{worst:.2f}", f">={GOAL}", worst >= GOAL, detail)


if __name__ == "__main__":
    main()
