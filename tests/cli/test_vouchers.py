"""``fourws-pay vouchers list``: all pages, the interval and "last" feeds, table and JSON."""

from __future__ import annotations

import json

from fourws_pay.sandbox import Sandbox
from fourws_pay.sandbox.seed import LOYALTY_CARD

from .conftest import Invoke


def test_lists_every_page_of_a_customers_vouchers(invoke: Invoke, sandbox: Sandbox) -> None:
    expected, _ = sandbox.customer_vouchers(LOYALTY_CARD)
    assert len(expected) > 20  # more than one page of 20
    result = invoke("vouchers", "list", LOYALTY_CARD, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [v["id"] for v in data] == [v["id"] for v in expected]
    assert all(v["barcode"].startswith("*") for v in data)
    assert data[0]["amount"] == "330.18"


def test_reveal_and_limit(invoke: Invoke) -> None:
    data = json.loads(
        invoke("vouchers", "list", LOYALTY_CARD, "--json", "--reveal", "--limit", "3").stdout
    )
    assert len(data) == 3
    assert data[0]["barcode"] == "7000000000000017"
    assert data[0]["card_barcode"] == LOYALTY_CARD


def test_table_output(invoke: Invoke) -> None:
    result = invoke("vouchers", "list", LOYALTY_CARD)
    assert result.exit_code == 0, result.output
    assert "25 vouchers" in result.stdout
    assert "330.18 EUR" in result.stdout
    assert LOYALTY_CARD not in result.stdout


def test_interval_uses_activation_dates(invoke: Invoke, sandbox: Sandbox) -> None:
    result = invoke(
        "vouchers", "list", LOYALTY_CARD, "--from", "2021-03-20", "--to", "2021-04-30", "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data) == 6  # 2021-03-24 .. 2021-04-27 in the documented example
    assert all("2021-03-20" <= v["valid_from"][:10] <= "2021-04-30" for v in data)


def test_last_feed_is_relative_to_now(invoke: Invoke) -> None:
    # The sandbox clock is 2026-01-01 12:00; the seed made one voucher a day for a week.
    result = invoke("vouchers", "list", "--last", "3d", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 2  # created after 2025-12-29 12:00
    everything = json.loads(invoke("vouchers", "list", "--last", "2000-01-01", "--json").stdout)
    assert len(everything) == 25
    other_card = json.loads(
        invoke("vouchers", "list", "0000000000000", "--last", "2000-01-01", "--json").stdout
    )
    assert other_card == []


def test_bad_option_combinations_exit_2(invoke: Invoke) -> None:
    for args in (
        ["vouchers", "list"],
        ["vouchers", "list", LOYALTY_CARD, "--to", "2021-01-01"],
        ["vouchers", "list", "--last", "1d", "--from", "2021-01-01"],
        ["vouchers", "list", "--last", "yesterday"],
    ):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
