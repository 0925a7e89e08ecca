"""Run every bench and print one markdown table (for README), also saved to
``bench/results/latest.md``.

Each bench runs in its own interpreter (``python bench/<name>.py``), its output is echoed,
and its closing ``DETAIL``/``RESULT`` lines fill one row. A missed goal is a row that says
``fail``; a bench that crashes or prints no RESULT makes the exit status 1.
``python bench/run_all.py check_cached ledger`` runs only those.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import time

import _common

BENCHES = (
    "check_overhead",
    "check_cached",
    "ledger",
    "checkout",
    "contention",
    "import_time",
    "ledger_growth",
    "throughput",
    "async_checkouts",
)
WHAT = {
    "check_overhead": "`check()` cache off, served sandbox / raw `httpx` GET",
    "check_cached": "`check()` cache hit, median",
    "ledger": "reserve+release pairs/s, store / raw driver (worst store)",
    "checkout": "check→reserve→capture→settled / bare HTTP calls",
    "contention": "8 procs × 8 threads on one card: oversells",
    "import_time": "`import fourws_pay` / `import httpx`",
    "ledger_growth": "reserve→capture→settle latency, 10⁶ / 10³ history rows (worst store)",
    "throughput": "checkouts/s, 1/2/4 procs, shared PostgreSQL / bare HTTP (worst)",
    "async_checkouts": "100 concurrent async checkouts/s / bare httpx (worst store)",
}
TIMEOUT = 300


def run(name: str) -> tuple[list[str], float, bool]:
    """(the bench's row cells, seconds taken, whether it produced a RESULT)."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(_common.ROOT / "bench" / f"{name}.py")],
            cwd=_common.ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        output, code = done.stdout, done.returncode
        errors = done.stderr
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout if isinstance(exc.stdout, str) else ""
        code, errors = -1, f"timed out after {TIMEOUT} s"
    took = time.perf_counter() - t0
    print(output, end="")
    if code != 0:
        print(errors[-3000:], file=sys.stderr)
    detail, result = "", None
    for line in output.splitlines():
        if line.startswith(f"DETAIL {name} "):
            detail = line.split(" ", 2)[2]
        elif line.startswith(f"RESULT {name} "):
            result = line.split()[2:]
    if result is None or len(result) != 3:
        return [name, WHAT[name], "—", "—", f"error (exit {code})", "no RESULT line"], took, False
    value, goal, verdict = result
    return [name, WHAT[name], value, goal, verdict, detail], took, True


def main() -> int:
    names = [a for a in sys.argv[1:] if a in BENCHES] or list(BENCHES)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = _common.load_average()
    rows, results_ok, took = [], True, []
    for name in names:
        print(f"\n### {name}", flush=True)
        row, seconds, ok = run(name)
        rows.append(row)
        results_ok &= ok
        took.append(f"{name} {seconds:.0f}s")
    lines = [
        f"Benchmarks of {started}: Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average {load_before} before / "
        f"{_common.load_average()} after (1/5/15 min). Ratios are against a baseline "
        "measured in the same run.",
        "",
        "| bench | measures | result | goal | | details |",
        "|---|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    table = "\n".join(lines) + "\n"
    out = _common.ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.md").write_text(table, encoding="utf-8")
    print("\n" + table)
    print("took: " + ", ".join(took))
    print(f"written to {out / 'latest.md'}")
    return 0 if results_ok else 1


if __name__ == "__main__":
    sys.exit(main())
