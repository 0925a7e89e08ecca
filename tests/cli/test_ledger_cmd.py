"""``fourws-pay reservations list|sweep`` and ``fourws-pay reconcile`` on a shared ledger."""

from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from fourws_pay.clock import ManualClock
from fourws_pay.ledger import open_store
from fourws_pay.payments import GiftCardPayments, OperationState
from fourws_pay.sandbox import Fault, Sandbox
from fourws_pay.sandbox.seed import EXAMPLE_CARD, UPDATE_EXAMPLE_CARD

from .conftest import Invoke


@pytest.fixture
def payments(sandbox: Sandbox, clock: ManualClock, ledger_url: str) -> GiftCardPayments:
    """The shop's provider, writing to the ledger the CLI reads."""
    settings = sandbox.settings.model_copy(update={"ledger_url": ledger_url})
    provider = GiftCardPayments(
        settings=settings,
        client=sandbox.client(settings),
        store=open_store(ledger_url),
        clock=clock,
    )
    sandbox.set_callback_handler(
        lambda url, body: provider.handle_callback(urlsplit(url).path, body).status_code
    )
    yield provider
    provider.close()


def listing(invoke: Invoke, *args: str) -> list[dict]:
    result = invoke("reservations", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_filters_and_masks(invoke: Invoke, payments: GiftCardPayments) -> None:
    first = payments.reserve(
        EXAMPLE_CARD, amount=Decimal("10.00"), currency="EUR", order_ref="ORD-1"
    )
    payments.reserve(UPDATE_EXAMPLE_CARD, amount=Decimal("5.00"), currency="EUR", order_ref="ORD-2")
    everything = listing(invoke)
    assert {r["order_ref"] for r in everything} == {"ORD-1", "ORD-2"}
    assert all(r["card"].startswith("*") for r in everything)
    only = listing(invoke, "--order", "ORD-1")
    assert [r["id"] for r in only] == [first.id]
    assert only[0]["amount"] == "10.00"
    assert only[0]["state"] == "active"
    assert listing(invoke, "--state", "released") == []
    assert listing(invoke, "--order", "ORD-1", "--reveal")[0]["card"] == EXAMPLE_CARD
    table = invoke("reservations", "list")
    assert "2 reservations" in table.stdout
    assert EXAMPLE_CARD not in table.stdout


def test_sweep_expires_holds_past_their_ttl(
    invoke: Invoke, payments: GiftCardPayments, clock: ManualClock
) -> None:
    payments.reserve(EXAMPLE_CARD, amount=Decimal("10.00"), currency="EUR", order_ref="ORD-1")
    result = invoke("reservations", "sweep", "--json")
    assert json.loads(result.stdout) == {"expired": 0}
    clock.advance(payments.settings.reservation_ttl + 1)
    result = invoke("reservations", "sweep", "--json")
    assert json.loads(result.stdout) == {"expired": 1}
    assert [r["state"] for r in listing(invoke)] == ["expired"]
    assert invoke("reservations", "sweep").stdout.strip() == "0 reservation(s) expired"


def test_reconcile_settles_a_capture_whose_callback_was_lost(
    invoke: Invoke, payments: GiftCardPayments, sandbox: Sandbox, clock: ManualClock
) -> None:
    reservation = payments.reserve(
        EXAMPLE_CARD, amount=Decimal("20.00"), currency="EUR", order_ref="ORD-9"
    )
    sandbox.faults.add("update_giftcard", Fault.drop_callback())
    capture = payments.capture(reservation.id)
    sandbox.run_until_idle()  # 4WS applies it, the callback never arrives
    assert payments.get_operation(capture.id).state is OperationState.ENQUEUED
    clock.advance(payments.settings.callback_timeout + 1)
    result = invoke("reconcile", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [op["id"] for op in report["found"]] == [capture.id]
    assert [op["id"] for op in report["succeeded"]] == [capture.id]
    assert report["manual_review"] == []
    assert payments.get_operation(capture.id).state is OperationState.SUCCEEDED


def test_reconcile_lists_what_needs_a_person_and_exits_1(
    invoke: Invoke, payments: GiftCardPayments, sandbox: Sandbox, clock: ManualClock
) -> None:
    reservation = payments.reserve(
        EXAMPLE_CARD, amount=Decimal("20.00"), currency="EUR", order_ref="ORD-7"
    )
    sandbox.faults.add("update_giftcard", Fault.drop_callback())
    capture = payments.capture(reservation.id)
    sandbox.run_until_idle()
    sandbox.spend_in_shop(EXAMPLE_CARD, Decimal("3.00"))  # the balance no longer tells
    clock.advance(payments.settings.reconcile_window + 1)
    result = invoke("reconcile")
    assert result.exit_code == 1
    assert "NEED MANUAL REVIEW" in result.stdout
    assert capture.id in result.stdout
    assert EXAMPLE_CARD not in result.stdout
    again = invoke("reconcile", "--json")
    assert again.exit_code == 1
    assert [op["id"] for op in json.loads(again.stdout)["manual_review"]] == [capture.id]
    # The operator asked 4WS: it was applied. Recording that settles the operation.
    no_note = invoke("resolve", capture.id, "--applied", "--note", "  ")
    assert no_note.exit_code == 2, no_note.output
    done = invoke("resolve", capture.id, "--applied", "--note", "seen in 4WS", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["state"] == "succeeded"
    assert payments.get_reservation(reservation.id).state.value == "captured"
    assert invoke("reconcile").exit_code == 0
    twice = invoke("resolve", capture.id, "--not-applied", "--note", "oops")
    assert twice.exit_code != 0
    assert "not in manual review" in twice.output


def test_reconcile_carries_sold_cards_on_and_masks_their_codes(
    invoke: Invoke, payments: GiftCardPayments, sandbox: Sandbox, clock: ManualClock
) -> None:
    sandbox.faults.add("generate_giftcards", Fault.success_false())  # refused: not enqueued
    payments.issue_cards(
        "SALE-3", "gift", amount=Decimal("15.00"), currency="EUR", item_code="GF440VP15_400_3"
    )
    assert payments.issued_cards("SALE-3")[0].state.value == "requested"
    result = invoke("reconcile", "--json")  # asks 4WS again
    assert result.exit_code == 0, result.output
    (sold,) = json.loads(result.stdout)["sold_cards"]
    assert sold["state"] == "generating"
    table = invoke("reconcile")  # its answer has not come yet: left to its callback
    assert table.exit_code == 0, table.output
    assert "1 sold card(s) carried on: 1 generating" in table.stdout
    sandbox.run_until_idle()  # the barcode comes, the card is loaded and recorded delivered
    (card,) = payments.issued_cards("SALE-3")
    assert card.state.value == "delivered"
    assert card.barcode is not None
    revealed = invoke("reconcile", "--json")
    assert revealed.exit_code == 0, revealed.output
    assert card.barcode not in revealed.stdout  # delivered: nothing left to carry on
    assert len(sandbox.requests_to("generate_giftcards")) == 2


def test_reconcile_with_nothing_to_do(invoke: Invoke, ledger_url: str) -> None:
    open_store(ledger_url).close()  # the shop's ledger exists, with nothing in it
    result = invoke("reconcile")
    assert result.exit_code == 0, result.output
    assert "nothing needs manual review" in result.stdout
