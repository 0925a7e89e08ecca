"""The back office's service: card look-up, the review queue, resolve, the daily report.

Resolve is checked against the races issue 21 names: a late 4WS callback, a reconcile
and a second operator, each between the page being drawn and the button being pressed,
and each must leave the books changed once (``Shop.audit`` against the sandbox's books).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fourws_pay import InvalidInputError, StaleResolveError
from fourws_pay.backoffice import BackOffice
from fourws_pay.payments.models import OperationState, ReservationState
from fourws_pay.sandbox.faults import Fault
from tests.payments.harness import Shop

S = OperationState


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    s = Shop(tmp_path)
    yield s
    s.payments.client.close()
    s.store.close()


def in_review(shop: Shop, card: str, amount: str = "30.00") -> Any:
    """A capture still in 4WS's queue past every window, its callback to be lost: manual
    review. Then 4WS applies it (``shop.sandbox.process_queue()``), and nobody is told."""
    r = shop.payments.reserve(card, amount=amount, currency="EUR", order_ref="ORD-9")
    shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    op = shop.payments.capture(r.id)
    s = shop.payments.settings
    shop.clock.advance(s.callback_timeout + s.reconcile_window + 1)
    shop.payments.reconcile()  # the balance has not moved: proves nothing, review
    assert shop.payments.get_operation(op.id).state is S.MANUAL_REVIEW
    shop.sandbox.process_queue()  # 4WS applies it now; the callback is lost
    return op


def test_a_card_shows_4ws_live_beside_the_ledger(shop: Shop) -> None:
    card = shop.card(amount="100.00")
    held = shop.payments.reserve(card, amount="20.00", currency="EUR", order_ref="ORD-1")
    paid = shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="ORD-2")
    shop.payments.capture(paid.id)
    shop.settle()
    view = BackOffice(shop.payments).find_card(f"  {card} ")
    assert view.live is not None
    assert view.live.amount == Decimal("70.00")
    assert view.held == Decimal("20.00")
    assert [h.id for h in view.holds if h.state is ReservationState.ACTIVE] == [held.id]
    assert [(op.kind.value, op.state.value) for op in view.operations] == [("capture", "succeeded")]
    assert view.masked.endswith(card[-4:])
    assert card not in view.masked
    assert card not in repr(view)


def test_4ws_down_still_shows_the_ledger(shop: Shop) -> None:
    card = shop.card(amount="100.00")
    shop.payments.reserve(card, amount="20.00", currency="EUR", order_ref="ORD-1")
    shop.sandbox.faults.add("get_giftcard", Fault.server_error(503))
    shop.sandbox.faults.add("get_giftcard", Fault.server_error(503))
    shop.sandbox.faults.add("get_giftcard", Fault.server_error(503))
    shop.sandbox.faults.add("get_giftcard", Fault.server_error(503))
    view = BackOffice(shop.payments).find_card(card)
    assert view.live is None
    assert view.live_error is not None
    assert view.held == Decimal("20.00")


@pytest.mark.parametrize("bad", ["", "   ", "x" * 65, None, 12])
def test_a_bad_card_number_is_a_typed_error(shop: Shop, bad: Any) -> None:
    with pytest.raises(InvalidInputError):
        BackOffice(shop.payments).find_card(bad)


def test_resolve_records_who_when_and_why_on_the_card_history(shop: Shop) -> None:
    card = shop.card(amount="100.00")
    op = in_review(shop, card)
    office = BackOffice(shop.payments)
    assert [o.id for o in office.review_queue()] == [op.id]
    done = office.resolve(op.id, applied=True, note="4WS shows -30.00 at 10:02", actor="alice")
    assert done.state is S.SUCCEEDED
    assert done.message == "resolved by operator alice: 4WS shows -30.00 at 10:02"
    [latest, *_] = office.find_card(card).operations
    assert latest.id == op.id
    assert latest.message == done.message
    assert latest.updated_at == shop.clock.now()
    assert office.review_queue() == []
    shop.audit()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"note": " "}, "note"), ({"actor": ""}, "actor"), ({"seen_state": "nonsense"}, "state")],
)
def test_a_resolve_without_note_or_actor_is_refused_and_writes_nothing(
    shop: Shop, kwargs: dict[str, Any], message: str
) -> None:
    op = in_review(shop, shop.card())
    args: dict[str, Any] = {"applied": True, "note": "seen", "actor": "alice"} | kwargs
    with pytest.raises(InvalidInputError, match=message):
        BackOffice(shop.payments).resolve(op.id, **args)
    assert shop.payments.get_operation(op.id).state is S.MANUAL_REVIEW


def test_a_stale_page_resolving_an_operation_a_late_callback_settled_is_refused(
    shop: Shop,
) -> None:
    """The page showed ``manual_review``; 4WS's callback arrived late before the click."""
    card = shop.card(amount="100.00")
    r = shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="ORD-9")
    shop.sandbox.faults.add("update_giftcard", Fault.hang(after_enqueue=True))
    op = shop.payments.capture(r.id)  # 4WS has it queued; the answer was lost: unknown
    s = shop.payments.settings
    shop.clock.advance(s.callback_timeout + s.reconcile_window + 1)
    shop.payments.reconcile()
    assert shop.payments.get_operation(op.id).state is S.MANUAL_REVIEW
    page_showed = shop.payments.get_operation(op.id).state
    shop.settle()  # 4WS applies it and calls back: succeeded
    assert shop.payments.get_operation(op.id).state is S.SUCCEEDED
    with pytest.raises(StaleResolveError) as refused:
        BackOffice(shop.payments).resolve(
            op.id, applied=False, note="4WS shows nothing", actor="bob", seen_state=page_showed
        )
    assert refused.value.state == "succeeded"
    assert shop.payments.get_operation(op.id).state is S.SUCCEEDED  # not turned around
    assert shop.sandbox.balance(card) == Decimal("70.00")
    shop.audit()


def test_the_compare_and_set_refuses_a_resolve_that_loses_a_race_after_its_checks(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the service's own check and the core's write a second operator resolves:
    the core's compare-and-set under the card lock refuses the first; one change only."""
    card = shop.card(amount="100.00")
    op = in_review(shop, card)
    office = BackOffice(shop.payments)
    second = shop.new_provider()
    real_resolve = shop.payments.resolve

    def raced(*args: Any, **kwargs: Any) -> Any:
        second.resolve(op.id, applied=True, note="carol saw it", actor="carol")
        return real_resolve(*args, **kwargs)

    monkeypatch.setattr(shop.payments, "resolve", raced)
    with pytest.raises(StaleResolveError, match="succeeded now"):
        office.resolve(op.id, applied=False, note="dave saw nothing", actor="dave")
    final = shop.payments.get_operation(op.id)
    assert final.state is S.SUCCEEDED
    assert final.message == "resolved by operator carol: carol saw it"
    shop.audit()


def test_a_re_run_resolve_is_refused_and_changes_nothing(shop: Shop) -> None:
    card = shop.card(amount="100.00")
    op = in_review(shop, card)
    office = BackOffice(shop.payments)
    office.resolve(op.id, applied=True, note="seen", actor="alice")
    with pytest.raises(StaleResolveError):
        office.resolve(op.id, applied=True, note="seen", actor="alice")
    with pytest.raises(StaleResolveError):
        office.resolve(op.id, applied=False, note="no", actor="alice", seen_state=None)
    assert shop.payments.get_operation(op.id).state is S.SUCCEEDED
    shop.audit()


def test_lists_filter_by_state_kind_order_and_card(shop: Shop) -> None:
    one, two = shop.card("7000000000001"), shop.card("7000000000002")
    a = shop.payments.reserve(one, amount="10.00", currency="EUR", order_ref="ORD-A")
    b = shop.payments.reserve(two, amount="10.00", currency="EUR", order_ref="ORD-B")
    shop.payments.capture(a.id)
    shop.payments.capture(b.id)
    shop.settle()
    office = BackOffice(shop.payments)
    assert len(office.operations(["succeeded"])) == 2
    assert [op.barcode for op in office.operations(order_ref="ORD-B")] == [two]
    assert [op.barcode for op in office.operations(card_suffix="0001")] == [one]
    assert office.operations(["failed"]) == []
    assert office.operations(kind="refund") == []
    with pytest.raises(InvalidInputError):
        office.operations(["no-such-state"])
    with pytest.raises(InvalidInputError):
        office.operations(kind="spend")
    assert office.active_holds() == []


def test_the_daily_report_counts_what_settled_that_day_per_currency(shop: Shop) -> None:
    eur = shop.card("7000000000001", amount="100.00")
    usd = shop.card("7000000000002", amount="100.00", currency="USD")
    day = shop.clock.now().date()
    e = shop.payments.reserve(eur, amount="40.00", currency="EUR", order_ref="O1")
    u = shop.payments.reserve(usd, amount="25.00", currency="USD", order_ref="O2")
    capture = shop.payments.capture(e.id)
    shop.payments.capture(u.id)
    shop.settle()
    shop.payments.refund(capture.id, amount="15.00")
    shop.settle()
    pending = shop.payments.reserve(eur, amount="5.00", currency="EUR", order_ref="O3")
    shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    shop.payments.capture(pending.id)  # not settled: not in the totals
    office = BackOffice(shop.payments)
    report = office.daily_report(day)
    rows = {r.currency: r for r in report.rows}
    assert (rows["EUR"].captured, rows["EUR"].refunded, rows["EUR"].net) == (
        Decimal("40.00"),
        Decimal("15.00"),
        Decimal("25.00"),
    )
    assert (rows["USD"].captured, rows["USD"].captures) == (Decimal("25.00"), 1)
    assert office.daily_report(day + timedelta(days=1)).rows == ()
    csv_text = office.report_csv(report)
    assert csv_text.splitlines()[0].startswith("day,currency,captured,refunded,net")
    assert f"{day.isoformat()},EUR,40.00,15.00,25.00,0,1,1,0" in csv_text.splitlines()
    with pytest.raises(InvalidInputError):
        office.daily_report("2026-01-01")  # type: ignore[arg-type]


def test_the_report_day_follows_its_time_zone(shop: Shop) -> None:
    from zoneinfo import ZoneInfo

    card = shop.card(amount="100.00")
    r = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    shop.payments.capture(r.id)
    shop.settle()
    settled = shop.payments.list_operations()[0].settled_at
    assert settled is not None
    office = BackOffice(shop.payments)
    tokyo = ZoneInfo("Asia/Tokyo")
    local_day = settled.astimezone(tokyo).date()
    assert office.daily_report(local_day, tokyo).rows[0].captured == Decimal("10.00")
    utc_day = settled.astimezone(UTC).date()
    if utc_day != local_day:
        assert office.daily_report(utc_day, tokyo).rows == ()
    assert isinstance(date.today(), date)
