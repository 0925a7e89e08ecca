"""Order refund plans (``OrderRefund``) obey the store contract on every ledger kind: exact
round trips (parts with exact amounts), compare-and-set on the state, duplicate ids refused
with the whole transaction rolled back, and listings by order and state."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from fourws_pay.errors import LedgerError
from fourws_pay.ledger import LedgerStore
from fourws_pay.payments.models import (
    OrderRefund,
    OrderRefundPart,
    OrderRefundState,
    RefundStrategy,
)
from fourws_pay.payments.states import order_refund_lock_key

NOW = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)


def plan(key: str = "k1", order_ref: str = "ORD-1") -> OrderRefund:
    return OrderRefund(
        id=f"ordref_{order_ref}_{key}",
        order_ref=order_ref,
        refund_key=key,
        amount=Decimal("40.10"),
        currency="EUR",
        decimals=2,
        strategy=RefundStrategy.PRO_RATA,
        state=OrderRefundState.OPEN,
        created_at=NOW,
        updated_at=NOW,
        parts=(
            OrderRefundPart("op_c2", Decimal("30.07"), "op_r2"),
            OrderRefundPart("op_c1", Decimal("10.03"), "op_r1"),
        ),
    )


def test_round_trip_and_compare_and_set(any_store: LedgerStore) -> None:
    refund = plan()
    with any_store.card_transaction(order_refund_lock_key(refund.order_ref)) as tx:
        tx.insert_order_refund(refund)
        assert tx.get_order_refund(refund.id) == refund  # its own write, seen
    with any_store.snapshot() as tx:
        stored = tx.get_order_refund(refund.id)
    assert stored == refund
    assert stored is not None
    assert stored.parts[0].amount == Decimal("30.07")
    posted = replace(refund, state=OrderRefundState.POSTED, updated_at=NOW + timedelta(1))
    with any_store.card_transaction(order_refund_lock_key(refund.order_ref)) as tx:
        assert tx.update_order_refund(posted, OrderRefundState.OPEN)
        assert not tx.update_order_refund(posted, OrderRefundState.OPEN)  # the loser
    assert any_store.list_order_refunds(order_ref="ORD-1") == [posted]


def test_duplicate_id_refused_and_rolled_back(any_store: LedgerStore) -> None:
    refund = plan()
    with any_store.card_transaction(order_refund_lock_key(refund.order_ref)) as tx:
        tx.insert_order_refund(refund)
    with (
        pytest.raises(LedgerError),
        any_store.card_transaction(order_refund_lock_key(refund.order_ref)) as tx,
    ):
        tx.insert_order_refund(plan("k2"))
        tx.insert_order_refund(refund)
    assert [r.id for r in any_store.list_order_refunds()] == [refund.id]


def test_listings_by_order_and_state(any_store: LedgerStore) -> None:
    plans = [plan("a"), plan("b"), plan("a", order_ref="ORD-2")]
    for refund in plans:
        with any_store.card_transaction(order_refund_lock_key(refund.order_ref)) as tx:
            tx.insert_order_refund(refund)
    with any_store.card_transaction(order_refund_lock_key("ORD-1")) as tx:
        assert tx.update_order_refund(
            replace(plans[1], state=OrderRefundState.POSTED), OrderRefundState.OPEN
        )
        assert [r.id for r in tx.order_refunds_for_order("ORD-1")] == [p.id for p in plans[:2]]
    assert [r.id for r in any_store.list_order_refunds(order_ref="ORD-1")] == [
        p.id for p in plans[:2]
    ]
    assert [r.id for r in any_store.list_order_refunds([OrderRefundState.OPEN])] == [
        plans[0].id,
        plans[2].id,
    ]
    assert any_store.list_order_refunds([]) == []
    assert len(any_store.list_order_refunds()) == 3
