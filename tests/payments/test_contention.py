"""Invariant 2 under contention: many processes and threads reserving on one card.

The card (100.00) sits in a served sandbox on loopback; every worker reserves 7.00 again
and again and releases every other success. It runs against every ledger store (SQLite,
PostgreSQL, MariaDB, Redis: see tests/services.py). An auditor thread polls the ledger while they
run, and afterwards a sweep over the reservations' create/release times computes the
largest total ever held at once. With the per-card lock that total never exceeds the
balance; the same run with ``locking=False`` must exceed it, which shows the lock is the
protection (both runs get the same race-widening delay, see ``contention.py``).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest

from fourws_pay.ledger import LedgerStore
from fourws_pay.payments.models import Reservation, ReservationState
from fourws_pay.sandbox.server import ServedSandbox, start_in_thread
from tests.payments.contention import reserve_many
from tests.services import StoreFactory

BARCODE = "7000000000777"
BALANCE = Decimal("100.00")


@pytest.fixture(scope="module")
def served() -> Iterator[ServedSandbox]:
    with start_in_thread() as server:
        yield server


def peak_held(reservations: list[Reservation]) -> Decimal:
    events: list[tuple[object, int, Decimal]] = []
    for r in reservations:
        events.append((r.created_at, 1, r.amount))
        if r.state is ReservationState.RELEASED and r.updated_at is not None:
            events.append((r.updated_at, 0, -r.amount))  # releases first on ties
    total = peak = Decimal(0)
    for _, _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        total += delta
        peak = max(peak, total)
    return peak


class Auditor(threading.Thread):
    def __init__(self, store: LedgerStore, barcode: str) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.barcode = barcode
        self.stop = threading.Event()
        self.peak = Decimal(0)
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            held = sum(
                (
                    r.amount
                    for r in self.store.list_reservations([ReservationState.ACTIVE])
                    if r.barcode == self.barcode
                ),
                Decimal(0),
            )
            self.peak = max(self.peak, held)
            self.samples += 1
            self.stop.wait(0.001)


def run_contention(
    served: ServedSandbox,
    factory: StoreFactory,
    *,
    locking: bool,
    processes: int,
    threads: int,
    attempts: int,
    barcode: str = BARCODE,
) -> tuple[Decimal, Decimal, int]:
    served.sandbox.add_giftcard(barcode, amount=BALANCE)
    auditor = Auditor(factory(), barcode)  # also creates the schema before the workers race
    auditor.start()
    args = (
        served.settings.model_dump(),
        factory.url,
        factory.options,
        locking,
        barcode,
        threads,
        attempts,
        "7.00",
    )
    try:
        if processes == 1:
            won = reserve_many(*args)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(processes) as pool:
                won = sum(pool.starmap(reserve_many, [args] * processes))
    finally:
        auditor.stop.set()
        auditor.join()
    reservations = [r for r in auditor.store.list_reservations() if r.barcode == barcode]
    return peak_held(reservations), auditor.peak, won


@pytest.mark.parametrize(("processes", "threads"), [(1, 8), (4, 4)], ids=["threads", "processes"])
def test_no_oversell_under_contention(
    served: ServedSandbox, store_factory: StoreFactory, processes: int, threads: int
) -> None:
    peak, polled, won = run_contention(
        served, store_factory, locking=True, processes=processes, threads=threads, attempts=6
    )
    assert won >= 14  # the card really was contended for
    assert peak <= BALANCE, f"held {peak} at once on a {BALANCE} card"
    assert polled <= BALANCE
    assert served.sandbox.balance(BARCODE) == BALANCE  # nothing was captured


@pytest.mark.parametrize(("processes", "threads"), [(1, 8), (4, 4)], ids=["threads", "processes"])
def test_same_run_without_the_lock_oversells(
    served: ServedSandbox, store_factory: StoreFactory, processes: int, threads: int
) -> None:
    """Interleaving is up to the scheduler, so up to three rounds may run; one oversell is
    enough to show the lock matters (with the lock, no round may ever oversell)."""
    peaks = []
    for round_ in range(3):
        peak, _, _ = run_contention(
            served,
            store_factory,
            locking=False,
            processes=processes,
            threads=threads,
            attempts=6,
            barcode=f"{BARCODE[:-1]}{round_}",
        )
        peaks.append(peak)
        if peak > BALANCE:
            return
    raise AssertionError(f"no oversell without the lock in 3 rounds: peaks {peaks}")
