"""The growth, throughput and async benches still run, in their tiny ``--quick`` shape, so
they do not rot between the (long, manual) full runs. Only that they finish and report is
checked here; their figures are for README's table, not for a test on a shared machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import POSTGRES_URL, require

ROOT = Path(__file__).resolve().parents[1]


def run_bench(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--quick", *args],
        cwd=ROOT,
        env={**os.environ, "FOURWS_PAY_BENCH_POSTGRES_URL": POSTGRES_URL},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = [line.split() for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 1, done.stdout[-2000:]
    (result,) = results
    assert result[1] == name
    assert result[4] in ("pass", "fail")
    return done.stdout


@pytest.mark.slow
def test_ledger_growth_bench_runs_on_sqlite() -> None:
    out = run_bench("ledger_growth", "--stores", "sqlite")
    assert "query plans at the largest size" in out
    assert "sqlite: checkout" in out


@pytest.mark.slow
@pytest.mark.services
def test_ledger_growth_bench_runs_on_postgres() -> None:
    require("postgres")
    assert "postgres: checkout" in run_bench("ledger_growth", "--stores", "postgres")


@pytest.mark.slow
@pytest.mark.services
def test_throughput_bench_runs() -> None:
    require("postgres")
    out = run_bench("throughput")
    assert "library captures succeeded" in out


@pytest.mark.slow
def test_async_bench_runs_on_sqlite() -> None:
    assert "sqlite" in run_bench("async_checkouts", "--stores", "sqlite")
