"""Many concurrent async checkouts on SQLite, and ``aclose()`` while they run.

Run by test_aclose_under_load.py as ``python -m tests.payments.aclose_child <dir> <rounds>``:
a segfault (a connection closed under a running statement) shows there as a negative
return code. Each round prints nothing; at the end one JSON line reports what the calls
that were cut short raised. Exit code 3: a call failed otherwise than with
``LedgerClosedError`` , the store answered after close, or a
ledger thread was still running after ``aclose()`` returned).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections import Counter
from pathlib import Path

from fourws_pay import AsyncGiftCardPayments, LedgerClosedError, make_plugin_manager
from tests.payments.harness import Shop

CALLS = 48


async def _round(shop: Shop, cards: list[str], seen: Counter[str]) -> None:
    payments = AsyncGiftCardPayments(
        settings=shop.settings(),
        client=shop.sandbox.async_client(),
        store=type(shop.store)(shop.store.path),
        clock=shop.clock,
        plugin_manager=make_plugin_manager(load_entrypoints=False),
        ledger_threads=8,
    )

    async def one(i: int) -> None:
        card = cards[i % len(cards)]
        await payments.reserve(card, amount="0.01", currency="EUR", order_ref=f"L-{i}")
        await payments.list_reservations()

    tasks = [asyncio.ensure_future(one(i)) for i in range(CALLS)]
    # Close mid-flight: once the first checkout is through, the others are at every step.
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    await payments.aclose()
    # aclose() drained its own work: no ledger thread of this provider is left running.
    running = [t for t in threading.enumerate() if t.name.startswith("fourws-pay-ledger")]
    if running:
        seen["ledger_threads_after_aclose"] += len(running)
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        seen[type(result).__name__ if isinstance(result, BaseException) else "ok"] += 1
    try:
        payments.store.list_reservations()
    except LedgerClosedError:
        seen["refused_after_close"] += 1


def main() -> None:
    tmp, rounds = Path(sys.argv[1]), int(sys.argv[2])
    shop = Shop(tmp)
    cards = [shop.card(barcode=f"70000000000{n:02d}", amount="1000.00") for n in range(8)]
    seen: Counter[str] = Counter()
    for _ in range(rounds):
        asyncio.run(_round(shop, cards, seen))
    print(json.dumps(seen))
    allowed = {"ok", "LedgerClosedError", "CardBusyError", "refused_after_close"}
    sys.exit(0 if set(seen) <= allowed and seen["refused_after_close"] == rounds else 3)


if __name__ == "__main__":
    main()
