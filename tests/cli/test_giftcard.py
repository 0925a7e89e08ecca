"""``fourws-pay giftcard show|activate|pdf`` against the in-process sandbox."""

from __future__ import annotations

import json
from decimal import Decimal

from fourws_pay.sandbox import Sandbox
from fourws_pay.sandbox.seed import EXAMPLE_CARD, NEVER_ACTIVATED_CARD

from .conftest import Invoke


def test_show_masks_the_barcode_by_default(invoke: Invoke) -> None:
    result = invoke("giftcard", "show", EXAMPLE_CARD)
    assert result.exit_code == 0, result.output
    assert "*********1814" in result.stdout
    assert EXAMPLE_CARD not in result.output
    assert "390.00" in result.stdout


def test_show_json_and_reveal(invoke: Invoke, sandbox: Sandbox) -> None:
    result = invoke("giftcard", "show", EXAMPLE_CARD, "--json", "--reveal")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["barcode"] == EXAMPLE_CARD
    assert Decimal(data["amount"]) == sandbox.balance(EXAMPLE_CARD)
    assert data["active"] is True
    assert data["currency"] == "EUR"


def test_unknown_card_is_one_line_and_exit_code_5(invoke: Invoke) -> None:
    result = invoke("giftcard", "show", "2999999999999")
    assert result.exit_code == 5
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "barcode not found" in result.stderr
    assert "Traceback" not in result.output
    assert "2999999999999" not in result.output


def test_activate_without_waiting_enqueues_the_load(invoke: Invoke, sandbox: Sandbox) -> None:
    result = invoke(
        "giftcard",
        "activate",
        NEVER_ACTIVATED_CARD,
        "--amount",
        "25.00",
        "--currency",
        "EUR",
        "--no-wait",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["state"] == "enqueued"
    assert data["queue_id"]
    assert data["barcode"] == "*********1511"
    assert sandbox.balance(NEVER_ACTIVATED_CARD) == 0
    sandbox.process_queue()
    assert sandbox.balance(NEVER_ACTIVATED_CARD) == Decimal("25.00")
    assert sandbox.card(NEVER_ACTIVATED_CARD).active


def test_activate_refuses_bad_amounts_before_sending(invoke: Invoke, sandbox: Sandbox) -> None:
    for amount, needle in (
        ("-5", "greater than zero"),
        ("1.234", "decimal digits"),
        ("ten", "not a number"),
    ):
        result = invoke(
            "giftcard", "activate", NEVER_ACTIVATED_CARD, "--amount", amount, "--no-wait"
        )
        assert result.exit_code == 2, (amount, result.output)
        assert needle in result.stderr
    assert sandbox.pending() == []


def test_pdf_prints_the_download_url(invoke: Invoke) -> None:
    result = invoke("giftcard", "pdf", EXAMPLE_CARD, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cards"] == 1
    assert data["url"]
    assert "/_sandbox/pdf/" in data["url"]
    plain = invoke("giftcard", "pdf", EXAMPLE_CARD)
    assert plain.stdout.strip().startswith("http")
