"""check() with the cache off against the served sandbox, vs raw httpx GET of the same URL.

Both sides talk to one uvicorn sandbox on loopback over their own keep-alive connection, in
interleaved rounds so that noise (other jobs on the machine) hits both alike. The ratio of
medians is what ``check()`` adds on top of the HTTP round trip: request building, parsing
into a ``GiftCard``, the ledger snapshot read (SQLite) and the rules. Goal: ratio <= 1.10.

A third side, ``Client.get_giftcard()`` alone, is timed too (not part of the ratio) to split
the overhead between the 4WS client and the payments layer.

The RESULT uses the sandbox served on a thread of the bench process
(``start_in_thread``), as the tests do. That server shares the GIL with the client, so
client-side CPU work after a response can wait for the server thread's own tail work;
the same comparison with the sandbox in its own process (as 4WS would be) is printed as
well and named in the DETAIL line.
"""

from __future__ import annotations

import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import _common
import httpx

from fourws_pay import Client, GiftCardPayments, SQLiteStore, make_plugin_manager
from fourws_pay.sandbox.server import start_in_thread

NAME = "check_overhead"
GOAL = 1.10
ROUNDS = 16
PER_ROUND = 40  # 640 calls per side
BARCODE = "7000000001001"


def measure(settings: Any) -> dict[str, list[int]]:
    """Interleaved timings (ns) of check(), raw GET and Client.get_giftcard()."""
    settings = settings.model_copy(update={"check_cache_ttl": 0})
    with tempfile.TemporaryDirectory() as tmp:
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
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        raw = httpx.Client(timeout=10)

        def lib() -> None:
            decision = payments.check(BARCODE, amount=Decimal("10.00"), currency="EUR")
            assert decision.ok, decision

        def bare() -> None:
            response = raw.get(url, params=params, headers=headers)
            assert response.status_code == 200
            assert b'"success"' in response.content

        def read() -> None:  # diagnosis: the 4WS client alone (build, send, parse GiftCard)
            client.get_giftcard(BARCODE)

        times: dict[str, list[int]] = {"lib": [], "raw": [], "read": []}
        sides = [(lib, times["lib"]), (read, times["read"]), (bare, times["raw"])]
        for _ in range(30):  # warm the connections and code paths
            for fn, _out in sides:
                fn()
        clock = time.perf_counter_ns
        for n in range(ROUNDS):
            for fn, out in sides if n % 2 else sides[::-1]:
                for _ in range(PER_ROUND):
                    t0 = clock()
                    fn()
                    out.append(clock() - t0)
        raw.close()
        payments.close()
    return times


def summarise(where: str, times: dict[str, list[int]]) -> tuple[list[list[str]], float, str]:
    med = {k: _common.median(v) / 1e3 for k, v in times.items()}
    tail = {k: _common.p95(v) / 1e3 for k, v in times.items()}
    ratio = med["lib"] / med["raw"]
    labels = {
        "lib": "check() cache off",
        "raw": "raw httpx GET",
        "read": "(diagnosis) Client.get_giftcard()",
    }
    rows = [
        [where, labels[k], str(len(times[k])), f"{med[k]:.0f}", f"{tail[k]:.0f}"]
        for k in ("lib", "raw", "read")
    ]
    split = (
        f"{where}: check() {med['lib']:.0f} µs vs raw GET {med['raw']:.0f} µs = {ratio:.2f}; "
        f"of the {med['lib'] - med['raw']:.0f} µs extra, the 4WS client "
        f"{med['read'] - med['raw']:.0f} µs, payments (ledger snapshot, rules) "
        f"{med['lib'] - med['read']:.0f} µs"
    )
    return rows, ratio, split


def main() -> None:
    _common.header("check() overhead vs raw httpx GET (served sandbox, cache off)")
    with start_in_thread(worker_interval=3600) as served:
        served.sandbox.add_giftcard(BARCODE, amount=Decimal("500.00"))
        in_thread = measure(served.settings)
    with _common.SandboxProcess() as process:
        process.add_giftcard(BARCODE, "500.00")
        own_process = measure(process.settings)
    rows, ratio, split = summarise("server thread", in_thread)
    rows2, ratio2, split2 = summarise("server process", own_process)
    _common.table(["sandbox", "side", "n", "median µs", "p95 µs"], rows + rows2)
    print(split)
    print(split2)
    _common.result(
        NAME,
        f"{ratio:.2f}",
        f"<={GOAL}",
        ratio <= GOAL,
        f"check() / raw GET medians: {ratio:.2f} with the sandbox on a thread of the bench "
        f"process, {ratio2:.2f} with it in its own process (n={len(in_thread['lib'])} each)",
    )


if __name__ == "__main__":
    main()
