"""check() with the cache off against the served sandbox, vs raw httpx GET of the same URL.

Both sides talk to one uvicorn sandbox on loopback over their own keep-alive connection, in
interleaved rounds so that noise (other jobs on the machine, the GIL shared with the server
thread) hits both alike. The ratio of medians is what ``check()`` adds on top of the HTTP
round trip: request building, parsing into a ``GiftCard``, the ledger snapshot read (SQLite)
and the rules. Goal: ratio <= 1.10.
"""

from __future__ import annotations

import tempfile
import time
from decimal import Decimal
from pathlib import Path

import _common
import httpx

from fourws_pay import Client, GiftCardPayments, SQLiteStore, make_plugin_manager
from fourws_pay.sandbox.server import start_in_thread

NAME = "check_overhead"
GOAL = 1.10
ROUNDS = 20
PER_ROUND = 40  # 800 calls per side
BARCODE = "7000000001001"


def main() -> None:
    _common.header("check() overhead vs raw httpx GET (served sandbox, cache off)")
    with start_in_thread(worker_interval=3600) as served, tempfile.TemporaryDirectory() as tmp:
        served.sandbox.add_giftcard(BARCODE, amount=Decimal("500.00"))
        settings = served.settings.model_copy(update={"check_cache_ttl": 0})
        client = Client(settings)
        payments = GiftCardPayments(
            client=client,
            store=SQLiteStore(Path(tmp) / "ledger.db"),
            plugin_manager=make_plugin_manager(load_entrypoints=False),
        )
        # The exact request the client sends, replayed by a bare httpx.Client.
        request = client.core.documents_request(
            "GET", settings.cmd_get_giftcard, {settings.param_giftcard_barcode: BARCODE}
        )
        url = str(request.url.copy_with(query=None))
        params = dict(request.url.params)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        raw = httpx.Client(timeout=10)

        def lib() -> None:
            decision = payments.check(BARCODE, amount=Decimal("10.00"), currency="EUR")
            assert decision.ok, decision

        def bare() -> None:
            response = raw.get(url, params=params, headers=headers)
            assert response.status_code == 200
            assert b'"success"' in response.content

        for _ in range(30):  # warm both connections and code paths
            lib()
            bare()
        lib_ns: list[int] = []
        raw_ns: list[int] = []
        clock = time.perf_counter_ns
        for n in range(ROUNDS):
            order = ((lib, lib_ns), (bare, raw_ns)) if n % 2 else ((bare, raw_ns), (lib, lib_ns))
            for fn, out in order:
                for _ in range(PER_ROUND):
                    t0 = clock()
                    fn()
                    out.append(clock() - t0)
        raw.close()
        payments.close()

    lib_med, raw_med = _common.median(lib_ns) / 1e3, _common.median(raw_ns) / 1e3
    lib_p95, raw_p95 = _common.p95(lib_ns) / 1e3, _common.p95(raw_ns) / 1e3
    ratio = lib_med / raw_med
    _common.table(
        ["side", "n", "median µs", "p95 µs"],
        [
            ["check() cache off", len(lib_ns), f"{lib_med:.0f}", f"{lib_p95:.0f}"],
            ["raw httpx GET", len(raw_ns), f"{raw_med:.0f}", f"{raw_p95:.0f}"],
        ],
    )
    print(f"ratio of medians: {ratio:.3f}  (goal <= {GOAL})")
    _common.result(
        NAME,
        f"{ratio:.2f}",
        f"<={GOAL}",
        ratio <= GOAL,
        f"check() {lib_med:.0f} µs vs raw GET {raw_med:.0f} µs (medians, n={len(lib_ns)})",
    )


if __name__ == "__main__":
    main()
