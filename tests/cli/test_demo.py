"""``fourws-pay demo``: the whole story, reconciled, on the embedded or a served sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from fourws_pay.cli import demo_world
from fourws_pay.cli.main import app
from fourws_pay.payments import OperationKind
from fourws_pay.sandbox.server import ServedSandbox

from .conftest import Invoke

EXPECTED_REFUSALS = [
    "expired",
    "inactive",
    "insufficient_balance",
    "partial_usage_not_allowed",
    "currency_mismatch",
]


def refusals(timeline: list[dict]) -> list[str]:
    return [s["outcome"].split(" ")[1] for s in timeline if s["step"] == "refuse"]


def test_demo_tells_the_whole_story_and_reconciles() -> None:
    result = CliRunner().invoke(app, ["demo", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["reconciled"] is True
    steps = [s["step"] for s in report["timeline"]]
    for step in (
        "generate",
        "callback",
        "activate",
        "check",
        "reserve",
        "capture",
        "settle",
        "balance",
        "refund",
        "reconcile",
    ):
        assert step in steps
    assert all(s["ok"] for s in report["timeline"])
    assert refusals(report["timeline"]) == EXPECTED_REFUSALS
    main = report["cards"][0]
    assert (main["original"], main["captured"], main["refunded"]) == ("100.00", "60.00", "10.00")
    assert Decimal(main["fourws_balance"]) == Decimal(main["sandbox_balance"]) == Decimal(50)
    kinds = [r["kind"] for r in report["sandbox_ledger"]]
    assert kinds == ["activation", "consumption", "recredit"]
    # One order paid with two sold cards (30 and 20): the smaller pays first, 15 refunded.
    assert [s["step"] for s in report["timeline"]].count("refund order") == 1
    pair = report["cards"][1:3]
    assert [(c["original"], c["captured"]) for c in pair] == [
        ("30.00", "20.00"),
        ("20.00", "20.00"),
    ]
    assert sum(Decimal(c["refunded"]) for c in pair) == Decimal("15.00")
    assert sum(Decimal(c["fourws_balance"]) for c in pair) == Decimal("25.00")
    assert all(c["barcode"].startswith("*********") for c in report["cards"])


def test_demo_table_output() -> None:
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith("reconciled: OK")
    assert "Balances: expected = original - captured + refunded" in result.stdout
    assert "FAILED" not in result.stdout
    assert "MISMATCH" not in result.stdout


def test_demo_exits_1_when_balances_do_not_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    settle = demo_world.EmbeddedWorld.wait_settled
    spent: list[str] = []

    def with_a_till_spend(self: demo_world.EmbeddedWorld, operation_id: str):  # type: ignore[no-untyped-def]
        operation = self.payments.get_operation(operation_id)
        if operation.kind is OperationKind.CAPTURE and not spent:
            spent.append(operation.barcode)  # the first card's, once: 1.00 spent in a shop
            self.sandbox.spend_in_shop(operation.barcode, Decimal("1.00"))
        return settle(self, operation_id)

    monkeypatch.setattr(demo_world.EmbeddedWorld, "wait_settled", with_a_till_spend)
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 1
    assert "reconciled: MISMATCH" in result.stdout
    spent.clear()
    report = json.loads(CliRunner().invoke(app, ["demo", "--json"]).stdout)
    assert report["reconciled"] is False
    assert report["cards"][0]["expected"] == "50.00"
    assert report["cards"][0]["fourws_balance"] == "49.00"


def test_demo_against_a_served_sandbox(served: ServedSandbox, invoke_served: Invoke) -> None:
    result = invoke_served("demo", "--against", served.url, "--timeout", "20", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["world"] == f"served sandbox at {served.url}"
    assert report["reconciled"] is True
    assert report["ok"] is True
    assert refusals(report["timeline"]) == EXPECTED_REFUSALS


def test_the_console_script_runs_the_demo_in_a_few_seconds() -> None:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "from fourws_pay.cli.main import run; run()", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("reconciled: OK")
    assert done.stderr == ""
    assert elapsed < 15  # a few seconds, with interpreter start-up, on a busy CI box
