"""Workers for the contention tests (importable by spawned processes)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from fourws_pay import (
    Client,
    GiftCardPayments,
    PaymentRefused,
    Settings,
    make_plugin_manager,
    open_store,
)
from fourws_pay.payments import core

WIDEN_SECONDS = 0.01


def widen_race_window() -> None:
    """Make the read-then-write window long enough that unlocked writers interleave.

    Applied to locked and unlocked runs alike, so the lock is the only difference.
    """
    original = core.PaymentsCore.held

    def slow_held(self: Any, *args: Any, **kwargs: Any) -> Decimal:
        value: Decimal = original(self, *args, **kwargs)
        time.sleep(WIDEN_SECONDS)
        return value

    core.PaymentsCore.held = slow_held  # type: ignore[method-assign]


def reserve_many(
    settings: dict[str, Any],
    ledger_url: str,
    ledger_options: dict[str, Any],
    locking: bool,
    barcode: str,
    threads: int,
    attempts: int,
    amount: str,
) -> int:
    """Reserve ``amount`` ``attempts`` times on each of ``threads`` threads; release every
    other success. Returns how many reservations succeeded."""
    widen_race_window()
    store = open_store(ledger_url, **ledger_options, locking=locking)
    payments = GiftCardPayments(
        client=Client(Settings(**settings)),
        store=store,
        plugin_manager=make_plugin_manager(load_entrypoints=False),
    )
    won = 0
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(n: int) -> None:
        nonlocal won
        start.wait()
        for i in range(attempts):
            try:
                r = payments.reserve(barcode, amount=amount, currency="EUR", order_ref=f"T{n}-{i}")
            except PaymentRefused:
                continue
            with lock:
                won += 1
            if i % 2:
                payments.release(r.id)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    payments.close()
    return won
