"""The pytest11 plugin: its fixtures, a shop's checkout test using only them, and that
loading the plugin costs nothing heavy."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from fourws_pay.errors import PaymentRefused

SHOP_TEST = """
from decimal import Decimal

def test_checkout_pays_with_a_gift_card(fourws_sandbox, fourws_payments, fourws_giftcard):
    card = fourws_giftcard("50.00")
    hold = fourws_payments.reserve(card.barcode, amount="30.00", currency="EUR",
                                   order_ref="ORD-1")
    fourws_payments.capture(hold.id)
    fourws_sandbox.process_queue()  # 4WS applies the consumption and calls back
    assert fourws_sandbox.balance(card.barcode) == Decimal("20.00")
    assert fourws_payments.get_reservation(hold.id).state.value == "captured"


def test_two_cards_pay_one_order(fourws_sandbox, fourws_payments, fourws_giftcards):
    first, second = fourws_giftcards("30.00", "50.00")
    order = fourws_payments.reserve_order(
        "ORD-2", cards=[second.barcode, first.barcode], amount="60.00", currency="EUR"
    )
    assert order.share_of(first.barcode) == Decimal("30.00")  # it expires first
    fourws_payments.capture_order("ORD-2")
    fourws_sandbox.process_queue()
    assert fourws_sandbox.balance(first.barcode) == Decimal("0.00")
    assert fourws_sandbox.balance(second.barcode) == Decimal("20.00")
"""


def test_plugin_module_imports_nothing_heavy() -> None:
    """Beyond pytest and fourws_pay itself (loaded anyway), the plugin adds only itself."""
    code = (
        "import sys, pytest, fourws_pay\n"
        "before = set(sys.modules)\n"
        "import fourws_pay.testing.pytest_plugin\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['fourws_pay.testing', 'fourws_pay.testing.pytest_plugin']"


def test_a_shop_checkout_using_only_the_fixtures(tmp_path: Path) -> None:
    (tmp_path / "test_shop.py").write_text(textwrap.dedent(SHOP_TEST))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_fixtures_are_wired_together(
    fourws_sandbox, fourws_client, fourws_settings, fourws_clock
) -> None:
    assert fourws_sandbox.clock is fourws_clock
    assert fourws_client.settings == fourws_settings
    assert fourws_client.get_giftcard("2000000001814").amount == 390


async def test_async_client_fixture(fourws_async_client) -> None:
    card = await fourws_async_client.get_giftcard("2000000001814")
    assert card.amount == 390


def test_giftcard_factory(fourws_giftcard, fourws_client, fourws_clock) -> None:
    card = fourws_giftcard(
        "12.50", partial_usage=False, network_usage=False, entity_code="550", currency="USD"
    )
    got = fourws_client.get_giftcard(card.barcode)
    assert got.amount == Decimal("12.50")
    assert not got.flg_partially_usage
    assert not got.flg_network_usage
    assert got.entity_code == "550"
    assert got.currency == "USD"
    assert got.currency_symbol == "$"
    expired = fourws_client.get_giftcard(fourws_giftcard(expired=True).barcode)
    assert expired.expiration_date < fourws_clock.now()
    later = fourws_client.get_giftcard(fourws_giftcard(starts_in=timedelta(hours=2)).barcode)
    assert later.activation_date > fourws_clock.now()
    blocked = fourws_client.get_giftcard(fourws_giftcard(active=False).barcode)
    assert not blocked.flg_active
    assert card.barcode != fourws_giftcard().barcode


def test_payments_fixture_refuses_and_refunds(
    fourws_sandbox, fourws_payments, fourws_giftcard
) -> None:
    empty = fourws_giftcard("0.00")
    with pytest.raises(PaymentRefused):
        fourws_payments.reserve(empty.barcode, amount="1.00", currency="EUR", order_ref="O-1")
    card = fourws_giftcard("40.00")
    hold = fourws_payments.reserve(card.barcode, amount="40.00", currency="EUR", order_ref="O-2")
    capture = fourws_payments.capture(hold.id)
    fourws_sandbox.process_queue()
    fourws_payments.refund(capture.id, amount="15.00")
    fourws_sandbox.process_queue()
    assert fourws_sandbox.balance(card.barcode) == Decimal("15.00")
    assert fourws_sandbox.total_consumed(card.barcode) == Decimal("40.00")


def test_giftcards_factory_staggers_expiry(fourws_giftcards, fourws_clock) -> None:
    first, second, third = fourws_giftcards("10.00", "20", 30)
    assert first.expiration_date < second.expiration_date < third.expiration_date
    assert [c.amount for c in (first, second, third)] == [Decimal(10), Decimal(20), Decimal(30)]
    together = fourws_giftcards("5.00", "5.00", stagger=None, partial_usage=False)
    assert together[0].expiration_date == together[1].expiration_date
    assert not together[0].partial_usage
    with pytest.raises(TypeError):
        fourws_giftcards()


def test_served_fixture(fourws_served_sandbox) -> None:
    from fourws_pay.api.client import Client

    with Client(fourws_served_sandbox.settings) as client:
        assert client.get_giftcard("2000000001814").amount == 390
