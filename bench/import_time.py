"""Wall time of ``import fourws_pay`` vs ``import httpx``, each in a fresh interpreter.

Runs alternate (httpx, fourws_pay, bare interpreter) so that a busy machine slows all alike;
the ratio is of the medians of whole process wall times (startup included, as a shop's
worker pays it). ``python -c pass`` is shown for scale only. httpx imports rich/pygments
itself when ``rich`` is installed (``httpx._main``), which is part of the baseline. Then the
top cumulative ``-X importtime`` entries under ``fourws_pay`` say where the import goes.
Goal: ratio <= 1.5.

``import fourws_pay`` alone is cheap because the public names load on first use (PEP 562),
so the table also shows what a shop really pays: ``from fourws_pay import Client,
GiftCardPayments`` (httpx + pydantic + our client and payments modules), with its own ratio.
"""

from __future__ import annotations

import subprocess
import sys
import time

import _common

NAME = "import_time"
GOAL = 1.5
RUNS = 17
TOP = 8


def wall(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=_common.ROOT)
    return time.perf_counter() - t0


def importtime(module: str) -> dict[str, tuple[int, int]]:
    """``-X importtime`` of ``import module``: {name: (cumulative µs, self µs)}."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        check=True,
        cwd=_common.ROOT,
        capture_output=True,
        text=True,
    )
    rows: dict[str, tuple[int, int]] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, cumulative, name = (p.strip() for p in line.split(":", 1)[1].split("|"))
        if own.isdigit():
            # A module can be listed twice (its package entered via it): keep the larger figures.
            old = rows.get(name, (0, 0))
            rows[name] = (max(old[0], int(cumulative)), max(old[1], int(own)))
    return rows


def own_modules(
    rows: dict[str, tuple[int, int]], limit: int, by_self: bool = False
) -> list[list[str]]:
    mine = sorted(
        ((c, s, name) for name, (c, s) in rows.items() if name.startswith("fourws_pay")),
        key=lambda row: row[1] if by_self else row[0],
        reverse=True,
    )
    return [[name, f"{c / 1e3:.1f}", f"{s / 1e3:.1f}"] for c, s, name in mine[:limit]]


def beyond_httpx(
    ours: dict[str, tuple[int, int]], theirs: dict[str, tuple[int, int]], limit: int
) -> list[list[str]]:
    """Top-level packages that ``import fourws_pay`` loads and ``import httpx`` does not,
    by the sum of their modules' self times."""
    totals: dict[str, int] = {}
    for name, (_, own) in ours.items():
        if name not in theirs:
            top = name.split(".")[0]
            totals[top] = totals.get(top, 0) + own
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:limit]
    return [[top, f"{us / 1e3:.1f}"] for top, us in ranked]


def main() -> None:
    _common.header("import time: import fourws_pay vs import httpx (fresh interpreters)")
    real_use = "from fourws_pay import Client, GiftCardPayments"
    sides: dict[str, list[float]] = {
        "import httpx": [],
        "import fourws_pay": [],
        real_use: [],
        "pass": [],
    }
    for code in sides:  # warm the file cache
        wall(code)
    for n in range(RUNS):
        order = list(sides) if n % 2 else list(sides)[::-1]
        for code in order:
            sides[code].append(wall(code))
    med = {code: _common.median(times) * 1e3 for code, times in sides.items()}
    ratio = med["import fourws_pay"] / med["import httpx"]
    _common.table(
        ["python -c", "runs", "median ms", "min ms"],
        [[code, len(t), f"{med[code]:.0f}", f"{min(t) * 1e3:.0f}"] for code, t in sides.items()],
    )
    print(f"ratio fourws_pay/httpx: {ratio:.2f}  (goal <= {GOAL})")
    real_ratio = med[real_use] / med["import httpx"]
    print(f"ratio real use/httpx: {real_ratio:.2f}  (the client and payments loaded)")
    ours, theirs = importtime("fourws_pay.payments.service"), importtime("httpx")
    print(f"top {TOP} fourws_pay modules by cumulative -X importtime (one run):")
    _common.table(["module", "cumulative ms", "self ms"], own_modules(ours, TOP))
    print("fourws_pay modules by their own (self) time:")
    _common.table(["module", "cumulative ms", "self ms"], own_modules(ours, 5, by_self=True))
    print("what import fourws_pay loads beyond import httpx, by package (sum of self times):")
    _common.table(["package", "self ms"], beyond_httpx(ours, theirs, TOP))
    _common.result(
        NAME,
        f"{ratio:.2f}",
        f"<={GOAL}",
        ratio <= GOAL,
        f"import fourws_pay {med['import fourws_pay']:.0f} ms vs import httpx "
        f"{med['import httpx']:.0f} ms (bare interpreter {med['pass']:.0f} ms); real use "
        f"(Client + GiftCardPayments) {med[real_use]:.0f} ms = {real_ratio:.2f}x httpx, medians",
    )


if __name__ == "__main__":
    main()
