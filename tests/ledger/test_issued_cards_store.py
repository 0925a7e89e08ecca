"""The sold-card records (``IssuedCard``) obey the store contract on every ledger kind:
exact round trips, compare-and-set on the state, duplicate ids refused, listings by state and
order, and writes under an order's issuing lock that roll back together with operations."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from fourws_pay.errors import LedgerError
from fourws_pay.ledger import LedgerStore
from fourws_pay.payments.models import IssuedCard, IssuedCardState
from fourws_pay.payments.states import issue_lock_key

NOW = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)


def sold(n: int = 0, order_ref: str = "ORD-1", line: str = "L1") -> IssuedCard:
    return IssuedCard(
        id=f"iss_{order_ref}_{line}_{n}",
        order_ref=order_ref,
        line_id=line,
        line_index=n,
        amount=Decimal("25.50"),
        currency="EUR",
        decimals=2,
        item_code="GIFTCARD_IVA_TAGLIO_100",
        entity_code="440",
        state=IssuedCardState.REQUESTED,
        created_at=NOW,
        updated_at=NOW,
    )


def test_round_trip_and_compare_and_set(any_store: LedgerStore) -> None:
    card = sold()
    with any_store.card_transaction(issue_lock_key(card.order_ref)) as tx:
        tx.insert_issued_card(card)
    assert any_store.get_issued_card(card.id) == card
    generated = replace(
        card,
        state=IssuedCardState.GENERATED,
        barcode="0098260111383",
        start_validity=NOW,
        end_validity=NOW + timedelta(days=365),
        generate_op_id="op_g",
        updated_at=NOW + timedelta(seconds=1),
    )
    with any_store.card_transaction(issue_lock_key(card.order_ref)) as tx:
        assert tx.update_issued_card(generated, IssuedCardState.REQUESTED)
        # the second writer that expected the old state loses
        assert not tx.update_issued_card(generated, IssuedCardState.REQUESTED)
    stored = any_store.get_issued_card(card.id)
    assert stored == generated
    assert stored is not None
    assert stored.barcode == "0098260111383"


def test_duplicate_id_refused_and_rolled_back(any_store: LedgerStore) -> None:
    card = sold()
    with any_store.card_transaction(issue_lock_key(card.order_ref)) as tx:
        tx.insert_issued_card(card)
    with (
        pytest.raises(LedgerError),
        any_store.card_transaction(issue_lock_key(card.order_ref)) as tx,
    ):
        tx.insert_issued_card(sold(1))
        tx.insert_issued_card(card)
    assert any_store.get_issued_card(sold(1).id) is None  # nothing of that transaction


def test_listings_by_order_and_state(any_store: LedgerStore) -> None:
    cards = [sold(0), sold(1), sold(0, line="L2"), sold(0, order_ref="ORD-2")]
    for card in cards:
        with any_store.card_transaction(issue_lock_key(card.order_ref)) as tx:
            tx.insert_issued_card(card)
    with any_store.card_transaction(issue_lock_key("ORD-1")) as tx:
        assert tx.update_issued_card(
            replace(cards[1], state=IssuedCardState.GENERATING), IssuedCardState.REQUESTED
        )
        in_tx = tx.issued_cards_for_order("ORD-1")
        assert [c.id for c in in_tx] == [cards[0].id, cards[1].id, cards[2].id]
        assert in_tx[1].state is IssuedCardState.GENERATING  # its own write, seen
    assert [c.id for c in any_store.list_issued_cards(order_ref="ORD-1")] == [
        c.id for c in cards[:3]
    ]
    assert [c.id for c in any_store.list_issued_cards([IssuedCardState.GENERATING])] == [
        cards[1].id
    ]
    assert any_store.list_issued_cards([]) == []
    assert len(any_store.list_issued_cards()) == 4
