"""8 processes x 8 threads reserving on one card: oversell count (must be 0) and throughput.

A served sandbox on loopback holds one 100.00 card; every worker thread tries to reserve
20.00 a bounded number of times and releases each hold it gets (only 5 holds fit, so 64
threads keep the card at its limit). All processes (spawn context) share one SQLite
ledger file and start together on a barrier. An auditor thread samples the sum of active
holds while they run; afterwards a sweep over every reservation's create/release instants
(stamped inside the card lock) computes the largest total held at once. *Oversells* =
sweep instants where the total exceeded the balance + auditor samples that did. Goal: 0.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import _common

from fourws_pay import (
    Client,
    GiftCardPayments,
    PaymentRefused,
    Settings,
    SQLiteStore,
    make_plugin_manager,
)
from fourws_pay.payments.models import Reservation, ReservationState
from fourws_pay.sandbox.server import start_in_thread

NAME = "contention"
PROCESSES = 8
THREADS = 8
ATTEMPTS = 12  # per thread: 768 reserve attempts in all
BARCODE = "7000000005005"
BALANCE = Decimal("100.00")
AMOUNT = "20.00"


def worker(settings: dict[str, Any], ledger: str, start: Any, results: Any) -> None:
    """One process: ``THREADS`` threads, each ``ATTEMPTS`` reserve attempts."""
    payments = GiftCardPayments(
        client=Client(Settings(**settings)),
        store=SQLiteStore(Path(ledger)),
        plugin_manager=make_plugin_manager(load_entrypoints=False),
    )
    counts = {"attempts": 0, "won": 0, "refused": 0, "errors": 0}
    lock = threading.Lock()
    ready = threading.Barrier(THREADS + 1)

    def run(n: int) -> None:
        ready.wait()
        for i in range(ATTEMPTS):
            outcome = "won"
            try:
                r = payments.reserve(BARCODE, amount=AMOUNT, currency="EUR", order_ref=f"C{n}-{i}")
                payments.release(r.id)
            except PaymentRefused:
                outcome = "refused"
            except Exception:  # counted and reported, never hidden
                outcome = "errors"
            with lock:
                counts["attempts"] += 1
                counts[outcome] += 1

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    start.wait(120)  # every process is ready: go together
    began = time.time()
    ready.wait()
    for t in threads:
        t.join()
    results.put({**counts, "began": began, "ended": time.time()})
    payments.close()


def over_balance(reservations: list[Reservation]) -> tuple[int, Decimal]:
    """(instants where the total held exceeded the balance, peak total held)."""
    events: list[tuple[object, int, Decimal]] = []
    for r in reservations:
        events.append((r.created_at, 1, r.amount))
        if r.state is not ReservationState.ACTIVE and r.updated_at is not None:
            events.append((r.updated_at, 0, -r.amount))  # releases first on ties
    total = peak = Decimal(0)
    over = 0
    for _, _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        total += delta
        peak = max(peak, total)
        over += total > BALANCE
    return over, peak


class Auditor(threading.Thread):
    def __init__(self, ledger: Path) -> None:
        super().__init__(daemon=True)
        self.store = SQLiteStore(ledger)
        self.stop = threading.Event()
        self.peak = Decimal(0)
        self.samples = 0
        self.over = 0

    def run(self) -> None:
        while not self.stop.is_set() and self.samples < 100_000:
            active = self.store.list_reservations([ReservationState.ACTIVE])
            held = sum((r.amount for r in active), Decimal(0))
            self.peak = max(self.peak, held)
            self.over += held > BALANCE
            self.samples += 1
            self.stop.wait(0.005)
        self.store.close()


def main() -> None:
    _common.header(f"contention: {PROCESSES} processes x {THREADS} threads on one card")
    ctx = multiprocessing.get_context("spawn")
    with start_in_thread() as served, tempfile.TemporaryDirectory() as tmp:
        served.sandbox.add_giftcard(BARCODE, amount=BALANCE)
        ledger = Path(tmp) / "ledger.db"
        SQLiteStore(ledger).close()  # the schema exists before the workers race
        start = ctx.Barrier(PROCESSES)
        results = ctx.Queue()
        args = (served.settings.model_dump(), str(ledger), start, results)
        procs = [ctx.Process(target=worker, args=args) for _ in range(PROCESSES)]
        for p in procs:
            p.start()
        auditor = Auditor(ledger)
        auditor.start()
        outcomes = [results.get(timeout=180) for _ in procs]
        for p in procs:
            p.join(30)
        auditor.stop.set()
        auditor.join()
        reservations = SQLiteStore(ledger).list_reservations()
        balance_after = served.sandbox.balance(BARCODE)

    swept_over, peak = over_balance(reservations)
    oversells = swept_over + auditor.over
    attempts = sum(o["attempts"] for o in outcomes)
    won = sum(o["won"] for o in outcomes)
    refused = sum(o["refused"] for o in outcomes)
    errors = sum(o["errors"] for o in outcomes)
    elapsed = max(o["ended"] for o in outcomes) - min(o["began"] for o in outcomes)
    _common.table(
        ["measure", "value"],
        [
            ["reserve attempts", attempts],
            ["reservations won (each released)", won],
            ["refused (card fully held)", refused],
            ["other errors", errors],
            ["wall time s", f"{elapsed:.2f}"],
            ["reserve attempts/s", f"{attempts / elapsed:.0f}"],
            ["successful reservations/s", f"{won / elapsed:.0f}"],
            ["peak held (sweep) / balance", f"{peak} / {BALANCE}"],
            ["peak held (auditor samples)", f"{auditor.peak} ({auditor.samples} samples)"],
            ["card balance after (no capture)", balance_after],
            ["oversells", oversells],
        ],
    )
    ok = oversells == 0 and errors == 0 and balance_after == BALANCE and won > 0
    _common.result(
        NAME,
        str(oversells),
        "==0",
        ok,
        f"0 oversell needed: {oversells}; {attempts / elapsed:.0f} attempts/s, "
        f"{won / elapsed:.0f} reservations/s, peak held {peak}/{BALANCE}, {errors} errors",
    )


if __name__ == "__main__":
    main()
