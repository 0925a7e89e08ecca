"""check() answered from its TTL cache: the cost of a decision with no 4WS call.

In-process sandbox, SQLite ledger in a temp dir, a ManualClock that never moves (so the
cache entry never expires). One warm call fills the cache; then 10,000 calls are timed one
by one with ``perf_counter_ns``. A hit still opens a ledger snapshot (the holds on the card
change between calls, the cache only saves the 4WS read), so this measures the rules + the
SQLite reads. Goal: median <= 20 µs. With ``--profile`` the top functions of a cProfile run
are printed (the bench never changes library code; it says where the time goes).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import _common

from fourws_pay import GiftCardPayments, SQLiteStore, make_plugin_manager
from fourws_pay.clock import ManualClock
from fourws_pay.payments.rules import evaluate
from fourws_pay.sandbox import Sandbox

NAME = "check_cached"
GOAL_US = 20.0
CALLS = 10_000
BARCODE = "7000000002002"


def top_functions(payments: GiftCardPayments, calls: int, limit: int) -> str:
    amount = Decimal("10.00")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        payments.check(BARCODE, amount=amount, currency="EUR")
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    return out.getvalue()


def timed(fn: Callable[[], object], calls: int = 3_000) -> float:
    """Median µs of ``fn``."""
    tick = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        t0 = tick()
        fn()
        samples.append(tick() - t0)
    return _common.median(samples) / 1e3


def phases(payments: GiftCardPayments) -> list[list[str]]:
    """The parts of a cache hit, each timed alone (private names: this is a diagnosis)."""
    core = payments.core
    hit = core.cards.get(BARCODE)
    assert hit is not None
    assert hit.held is not None, "a cache hit carries the held amount: no ledger query"
    now = payments.clock.now()

    def ledger() -> None:
        with payments.store.snapshot() as tx:
            core.held(tx, BARCODE, now, hit.read_at)

    def rules() -> None:
        request = core._request(Decimal("10.00"), "EUR", now, True)
        evaluate(hit.card, request, held=Decimal(0), barcode=BARCODE)

    return [
        ["  (not on a hit) ledger snapshot + held()", f"{timed(ledger):.1f}"],
        ["  of which: rules.evaluate()", f"{timed(rules):.1f}"],
        ["  of which: cache lookup", f"{timed(lambda: core.cards.get(BARCODE)):.1f}"],
    ]


def main() -> None:
    _common.header("check() cache hit (in-process sandbox, SQLite ledger)")
    clock = ManualClock()
    sandbox = Sandbox(clock=clock)
    sandbox.add_giftcard(BARCODE, amount=Decimal("500.00"))
    settings = sandbox.settings.model_copy(update={"check_cache_ttl": 3600.0})
    with tempfile.TemporaryDirectory() as tmp:
        payments = GiftCardPayments(
            client=sandbox.client(settings),
            store=SQLiteStore(Path(tmp) / "ledger.db"),
            clock=clock,
            plugin_manager=make_plugin_manager(load_entrypoints=False),
        )
        amount = Decimal("10.00")
        assert payments.check(BARCODE, amount=amount, currency="EUR").ok
        gets = len(sandbox.requests_to("get_giftcard"))
        for _ in range(200):  # warm the code paths
            payments.check(BARCODE, amount=amount, currency="EUR")
        samples: list[int] = []
        tick = time.perf_counter_ns
        for _ in range(CALLS):
            t0 = tick()
            payments.check(BARCODE, amount=amount, currency="EUR")
            samples.append(tick() - t0)
        assert len(sandbox.requests_to("get_giftcard")) == gets, "a timed call missed the cache"
        med = _common.median(samples) / 1e3
        parts = phases(payments)
        want_profile = med > GOAL_US or "--profile" in sys.argv
        profile = top_functions(payments, 2_000, 8) if want_profile else None
        payments.close()

    tail = _common.p95(samples) / 1e3
    print(f"{len(samples)} hits; p95 {tail:.1f} µs; min {min(samples) / 1e3:.1f} µs")
    _common.table(["measure", "median µs"], [["check() cache hit", f"{med:.1f}"], *parts])
    if profile is not None:
        print("goal missed or --profile: cProfile of 2,000 hits, top functions by own time")
        print(profile.strip())
    _common.result(
        NAME,
        f"{med:.1f}µs",
        f"<={GOAL_US:.0f}µs",
        med <= GOAL_US,
        f"median {med:.1f} µs, p95 {tail:.1f} µs over {len(samples)} hits",
    )


if __name__ == "__main__":
    main()
