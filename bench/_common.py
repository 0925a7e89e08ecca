"""Shared bits of the bench scripts: statistics, the printed table and the RESULT line.

Every bench prints a short table, then ``DETAIL <name> <text>`` (one line for the combined
README table) and ends with ``RESULT <name> <value> <goal> pass|fail``; ``run_all.py`` reads
those two lines. Ratios are always against a baseline measured in the same run, so a busy
machine slows both sides alike; the load average is printed so a reader can judge the noise.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` from the repo root imports the checkout
    sys.path.insert(0, str(ROOT))


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain aligned table on stdout."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def header(title: str) -> None:
    print(f"== {title}   (load average {load_average()}, {os.cpu_count()} cores)")


def result(name: str, value: str, goal: str, ok: bool, detail: str) -> None:
    """The two machine-read closing lines."""
    print(f"DETAIL {name} {detail}")
    print(f"RESULT {name} {value} {goal} {'pass' if ok else 'fail'}")
    sys.stdout.flush()


_SERVE = """
import sys
from decimal import Decimal
from fourws_pay.sandbox import Sandbox
from fourws_pay.sandbox.ean import make_ean13
from fourws_pay.sandbox.server import serve
sb = Sandbox(seed="demo")
for n in range(int(sys.argv[1])):
    sb.add_giftcard(make_ean13(sys.argv[2], n), amount=Decimal("50.00"))
def ready(served):
    print(served.url, flush=True)
serve(sandbox=sb, port=0, worker_interval=float(sys.argv[3]), log_level="warning", on_ready=ready)
"""

CARD_PREFIX = "61"


def bench_card(n: int) -> str:
    """The ``n``-th of the cards a ``SandboxProcess(cards=...)`` was seeded with."""
    from fourws_pay.sandbox.ean import make_ean13

    return make_ean13(CARD_PREFIX, n)


class SandboxProcess:
    """A served sandbox in its own interpreter (so it does not share the bench's GIL).

    ``url`` is where it listens; ``cards`` cards of 50.00 are on its books from the start
    (``bench_card(n)``), more are added through its control API. Its queue worker runs every
    ``worker_interval`` seconds (by default never: the bench triggers processing). Stopped
    (this process only, by its own handle) on exit.
    """

    def __init__(self, *, cards: int = 0, worker_interval: float = 3600) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(cards), CARD_PREFIX, str(worker_interval)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"sandbox process did not start: {self.url!r}")

    @property
    def settings(self) -> object:
        from fourws_pay.sandbox.sandbox import sandbox_settings

        return sandbox_settings(self.url)

    def add_giftcard(self, barcode: str, amount: str) -> None:
        import httpx

        response = httpx.post(
            f"{self.url}/_sandbox/cards", json={"barcode": barcode, "amount": amount}, timeout=10
        )
        response.raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
