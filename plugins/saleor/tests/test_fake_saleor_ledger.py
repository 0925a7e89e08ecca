"""The fake's transaction ledger computes what saleor/payment/transaction_item_calculations.py
computes; these cases are taken from that module's rules, so the App's tests measure against
Saleor's arithmetic and not against the fake's own idea of it."""

from __future__ import annotations

from decimal import Decimal

from fake_saleor import Event, SaleorTransaction

D = Decimal


def tx(*events: Event) -> dict[str, Decimal]:
    return SaleorTransaction("t", events=list(events)).amounts()


def test_charges_move_amounts_out_of_authorized() -> None:
    got = tx(Event("AUTHORIZATION_SUCCESS", "a", D(50)), Event("CHARGE_SUCCESS", "c1", D(20)))
    assert (got["authorized"], got["charged"]) == (D(30), D(20))


def test_an_adjustment_overwrites_the_authorized_total_and_hides_older_ones() -> None:
    got = tx(
        Event("AUTHORIZATION_SUCCESS", "a", D(50)),
        Event("AUTHORIZATION_ADJUSTMENT", "a", D(30)),
        Event("CHARGE_SUCCESS", "c", D(20)),
    )
    assert got["authorized"] == D(10)


def test_a_request_is_pending_until_its_reference_has_an_outcome() -> None:
    pending = tx(Event("AUTHORIZATION_SUCCESS", "a", D(50)), Event("CHARGE_REQUEST", "c", D(20)))
    assert (pending["charge_pending"], pending["authorized"]) == (D(20), D(30))
    done = tx(
        Event("AUTHORIZATION_SUCCESS", "a", D(50)),
        Event("CHARGE_REQUEST", "c", D(20)),
        Event("CHARGE_SUCCESS", "c", D(20)),
    )
    assert (done["charge_pending"], done["charged"], done["authorized"]) == (D(0), D(20), D(30))


def test_a_newer_failure_cancels_a_success_and_reversals_turn_amounts_back() -> None:
    assert tx(Event("CHARGE_SUCCESS", "c", D(20)), Event("CHARGE_FAILURE", "c", D(20)))[
        "charged"
    ] == D(0)
    got = tx(
        Event("CHARGE_SUCCESS", "c", D(20)),
        Event("REFUND_SUCCESS", "r", D(5)),
        Event("REFUND_REVERSE", "r", D(5)),
        Event("CHARGE_BACK", "c", D(20)),
    )
    assert (got["charged"], got["refunded"]) == (D(0), D(0))


def test_events_not_included_in_calculations_count_for_nothing() -> None:
    got = tx(Event("REFUND_FAILURE", "", D(10), include=False), Event("CHARGE_SUCCESS", "c", D(9)))
    assert (got["charged"], got["refunded"]) == (D(9), D(0))
