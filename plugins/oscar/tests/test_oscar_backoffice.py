"""The "Gift cards" back office in Oscar's dashboard: who may see and do what, resolving an
operation in review (and the races around it), card look-up, lists and the daily report."""

from __future__ import annotations

import csv
import io
import logging
import re
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from oscar.core.loading import get_model

from fourws_pay.payments.models import OperationState
from fourws_pay.sandbox.faults import Fault

S = OperationState
CARD = "7000000000017"
OTHER = "7000000000024"
PAGES = ("queue", "operations", "holds", "find", "report", "report-csv")


def _user(name: str, *perms: str, staff: bool = True) -> Any:
    user = get_model("auth", "User").objects.create_user(
        name, f"{name}@example.com", "pw", is_staff=staff
    )
    for codename in perms:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="fourws_pay_oscar", codename=codename)
        )
    return user


def _client(user: Any, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def office_staff() -> Client:
    """Staff who may see, resolve and reveal."""
    return _client(
        _user("alice", "view_backoffice", "resolve_backoffice", "reveal_giftcard_number")
    )


def _url(name: str, **kwargs: str) -> str:
    return reverse(f"fourws_pay_oscar:backoffice-{name}", kwargs=kwargs or None)


def in_review(payments: Any, sandbox: Any, clock: Any, card: str, amount: str = "30.00") -> Any:
    """A capture 4WS queued whose callback is lost, past every window: manual review. Then
    4WS applies it, and nobody is told (as tests/backoffice/test_service.py::in_review)."""
    r = payments.reserve(card, amount=amount, currency="EUR", order_ref="ORD-9")
    sandbox.faults.add("update_giftcard", Fault.drop_callback())
    op = payments.capture(r.id)
    s = payments.settings
    clock.advance(s.callback_timeout + s.reconcile_window + 1)
    payments.reconcile()
    assert payments.get_operation(op.id).state is S.MANUAL_REVIEW
    sandbox.process_queue()
    return op


def _seen_state(page: str, operation_id: str) -> str:
    form = re.search(rf'data-operation="{operation_id}".*?</form>', page, re.S)
    assert form, page[-3000:]
    found = re.search(r'name="seen_state" value="([a-z_]+)"', form.group(0))
    assert found, form.group(0)
    return found.group(1)


def _messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# -- who ------------------------------------------------------------------------------------


def _every_url(op_id: str) -> list[tuple[str, str]]:
    return [
        ("get", _url("queue")),
        ("get", _url("operations")),
        ("get", _url("holds")),
        ("get", _url("find")),
        ("post", _url("find")),
        ("get", _url("card", operation_id=op_id)),
        ("post", _url("card", operation_id=op_id)),
        ("post", _url("resolve", operation_id=op_id)),
        ("get", _url("report")),
        ("get", _url("report-csv")),
    ]


def test_every_page_refuses_anonymous_non_staff_and_staff_without_the_permission(
    payments, sandbox, clock
):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    op = in_review(payments, sandbox, clock, CARD)
    customer = _client(_user("customer", "view_backoffice", staff=False))
    plain_staff = _client(_user("bob"))  # staff, but not given the back office
    for method, url in _every_url(op.id):
        data = {"barcode": CARD, "reveal": "1", "verdict": "applied", "note": "x"}
        data["seen_state"] = "manual_review"
        anonymous = getattr(Client(), method)(url, data if method == "post" else None)
        assert anonymous.status_code == 302, url
        assert "/login/" in anonymous["Location"], url
        for client in (customer, plain_staff):
            refused = getattr(client, method)(url, data if method == "post" else None)
            assert refused.status_code == 403, (url, refused.status_code)
            assert CARD[-4:] not in refused.content.decode()
    assert payments.get_operation(op.id).state is S.MANUAL_REVIEW  # nobody resolved it


def test_the_dashboard_menu_shows_gift_cards_only_to_back_office_staff(payments):
    viewer = _client(_user("viewer", "view_backoffice"))
    plain = _client(_user("plain"))  # staff, without the back office
    # Oscar's dashboard itself wants staff; the menu lists our entry by our own check
    seen = viewer.get(reverse("dashboard:index")).content.decode()
    assert "Gift cards" in seen
    assert _url("queue") in seen
    not_seen = plain.get(reverse("dashboard:index")).content.decode()
    assert _url("queue") not in not_seen


def test_a_viewer_sees_the_queue_but_gets_no_resolve_form_and_may_not_resolve(
    payments, sandbox, clock
):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    op = in_review(payments, sandbox, clock, CARD)
    viewer = _client(_user("viewer", "view_backoffice"))
    page = viewer.get(_url("queue"))
    assert page.status_code == 200
    html = page.content.decode()
    assert op.id in html
    assert "resolve-form" not in html
    posted = viewer.post(
        _url("resolve", operation_id=op.id),
        {"verdict": "applied", "note": "seen", "seen_state": "manual_review"},
    )
    assert posted.status_code == 403
    assert payments.get_operation(op.id).state is S.MANUAL_REVIEW


def test_a_post_without_django_csrf_token_is_refused(payments, sandbox, clock):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    op = in_review(payments, sandbox, clock, CARD)
    user = _user("carol", "view_backoffice", "resolve_backoffice")
    strict = _client(user, enforce_csrf_checks=True)
    posted = strict.post(
        _url("resolve", operation_id=op.id),
        {"verdict": "applied", "note": "seen", "seen_state": "manual_review"},
    )
    assert posted.status_code == 403
    assert payments.get_operation(op.id).state is S.MANUAL_REVIEW


# -- resolve --------------------------------------------------------------------------------


def test_staff_resolve_from_the_queue_with_a_note_and_their_name_is_written(
    payments, sandbox, clock, office_staff, caplog
):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    op = in_review(payments, sandbox, clock, CARD)
    page = office_staff.get(_url("queue")).content.decode()
    assert op.id in page
    assert "*********0017" in page
    seen = _seen_state(page, op.id)
    assert seen == "manual_review"
    with caplog.at_level(logging.WARNING, logger="fourws_pay"):
        done = office_staff.post(
            _url("resolve", operation_id=op.id),
            {"verdict": "applied", "note": "4WS shows -30.00", "seen_state": seen},
            follow=True,
        )
    assert done.status_code == 200
    assert any("is succeeded now" in m for m in _messages(done)), _messages(done)
    final = payments.get_operation(op.id)
    assert final.state is S.SUCCEEDED
    assert final.message == "resolved by operator alice: 4WS shows -30.00"
    assert op.id not in done.content.decode().split('id="review-queue"')[1]
    assert sandbox.balance(CARD) == Decimal("70.00")
    assert all(CARD not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "data",
    [
        {"verdict": "applied", "note": "   "},
        {"verdict": "", "note": "seen"},
        {"verdict": "maybe", "note": "seen"},
        {"verdict": "applied", "note": "seen", "seen_state": "nonsense"},
    ],
)
def test_a_resolve_without_verdict_or_note_changes_nothing(
    payments, sandbox, clock, office_staff, data
):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    op = in_review(payments, sandbox, clock, CARD)
    posted = office_staff.post(
        _url("resolve", operation_id=op.id), {"seen_state": "manual_review", **data}, follow=True
    )
    assert any("Nothing was changed" in m for m in _messages(posted)), _messages(posted)
    assert payments.get_operation(op.id).state is S.MANUAL_REVIEW


def test_a_late_callback_between_the_page_and_the_click_leaves_the_books_alone(
    payments, sandbox, clock, office_staff
):
    """The queue showed ``manual_review``; 4WS's callback arrives late, before the click:
    "not changed", and the settled capture is not turned around."""
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    r = payments.reserve(CARD, amount="30.00", currency="EUR", order_ref="ORD-9")
    sandbox.faults.add("update_giftcard", Fault.hang(after_enqueue=True))
    op = payments.capture(r.id)  # 4WS has it queued; the answer was lost
    s = payments.settings
    clock.advance(s.callback_timeout + s.reconcile_window + 1)
    payments.reconcile()
    page = office_staff.get(_url("queue")).content.decode()
    seen = _seen_state(page, op.id)
    assert seen == "manual_review"
    sandbox.process_queue()  # 4WS applies it and calls the shop back (the Django view)
    assert payments.get_operation(op.id).state is S.SUCCEEDED
    refused = office_staff.post(
        _url("resolve", operation_id=op.id),
        {"verdict": "not_applied", "note": "4WS shows nothing", "seen_state": seen},
        follow=True,
    )
    assert refused.status_code == 200
    said = _messages(refused)
    assert any(m.startswith("Not changed:") and "succeeded now" in m for m in said), said
    final = payments.get_operation(op.id)
    assert final.state is S.SUCCEEDED
    assert "operator" not in (final.message or "")
    assert sandbox.balance(CARD) == Decimal("70.00")


def test_two_staff_resolving_the_same_operation_change_it_once(payments, sandbox, clock):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    op = in_review(payments, sandbox, clock, CARD)
    perms = ("view_backoffice", "resolve_backoffice")
    alice, bob = _client(_user("alice", *perms)), _client(_user("bob", *perms))
    # both have the queue open, showing the operation in review
    seen_a = _seen_state(alice.get(_url("queue")).content.decode(), op.id)
    seen_b = _seen_state(bob.get(_url("queue")).content.decode(), op.id)
    first = alice.post(
        _url("resolve", operation_id=op.id),
        {"verdict": "applied", "note": "alice saw -30.00", "seen_state": seen_a},
        follow=True,
    )
    second = bob.post(
        _url("resolve", operation_id=op.id),
        {"verdict": "not_applied", "note": "bob saw nothing", "seen_state": seen_b},
        follow=True,
    )
    assert any("is succeeded now" in m for m in _messages(first))
    assert any(m.startswith("Not changed:") for m in _messages(second)), _messages(second)
    final = payments.get_operation(op.id)
    assert final.state is S.SUCCEEDED
    assert final.message == "resolved by operator alice: alice saw -30.00"
    assert sandbox.balance(CARD) == Decimal("70.00")


# -- card look-up -------------------------------------------------------------------------


def test_card_lookup_is_a_post_and_the_page_is_masked(payments, sandbox, clock, office_staff):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    held = payments.reserve(CARD, amount="20.00", currency="EUR", order_ref="ORD-1")
    op = in_review(payments, sandbox, clock, CARD)
    form = office_staff.get(_url("find"))
    assert form.status_code == 200
    assert 'method="post"' in form.content.decode()
    ignored = office_staff.get(_url("find"), {"barcode": CARD}).content.decode()
    assert "Type the card's number above" in ignored  # a GET looks nothing up
    assert "*********0017" not in ignored
    found = office_staff.post(_url("find"), {"barcode": f" {CARD} "})
    assert found.status_code == 200
    html = found.content.decode()
    assert "*********0017" in html
    assert CARD not in html
    assert "70.00 EUR" in html  # 4WS's live balance (the capture was applied)
    assert held.id in html
    assert op.id in html
    assert _url("card", operation_id=op.id) in html  # the card's page by an operation id
    for secret in (op.callback_token_hash, payments.settings.password, "callback_token"):
        if secret:
            assert str(secret) not in html
    by_op = office_staff.get(_url("card", operation_id=op.id))
    assert by_op.status_code == 200
    assert CARD not in by_op.content.decode()
    assert "Show the whole number" in by_op.content.decode()


def test_an_empty_or_unknown_lookup_is_a_message_not_a_traceback(payments, office_staff):
    empty = office_staff.post(_url("find"), {"barcode": ""})
    assert empty.status_code == 400
    assert _messages(empty)
    unknown = office_staff.post(_url("find"), {"barcode": "7999999999999"})
    assert unknown.status_code == 200  # 4WS's refusal is shown beside an empty ledger
    assert "4WS did not answer" in unknown.content.decode()
    missing = office_staff.get(_url("card", operation_id="op_nope"), follow=True)
    assert any("No such operation" in m for m in _messages(missing))


def test_the_whole_number_is_shown_on_a_post_to_permitted_staff_and_logged(
    payments, sandbox, clock, office_staff, caplog
):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    op = in_review(payments, sandbox, clock, CARD)
    url = _url("card", operation_id=op.id)
    with caplog.at_level(logging.WARNING, logger="fourws_pay"):
        shown = office_staff.post(url, {"reveal": "1"})
    assert shown.status_code == 200
    assert CARD in shown.content.decode()
    revealed = [r.getMessage() for r in caplog.records if "revealed" in r.getMessage()]
    assert revealed
    assert "alice" in revealed[0]
    assert "*********0017" in revealed[0]
    assert all(CARD not in r.getMessage() for r in caplog.records)

    viewer = _client(_user("viewer", "view_backoffice"))
    page = viewer.get(url).content.decode()
    assert "Show the whole number" not in page
    refused = viewer.post(url, {"reveal": "1"})
    assert refused.status_code == 403
    assert CARD not in refused.content.decode()


# -- lists and the report --------------------------------------------------------------------


def test_operations_filter_by_state_order_and_last_digits(payments, sandbox, office_staff):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    sandbox.add_giftcard(OTHER, amount=Decimal("100.00"))
    a = payments.reserve(CARD, amount="10.00", currency="EUR", order_ref="ORD-A")
    b = payments.reserve(OTHER, amount="10.00", currency="EUR", order_ref="ORD-B")
    op_a, op_b = payments.capture(a.id), payments.capture(b.id)
    sandbox.process_queue()
    url = _url("operations")

    def listed(**params: str) -> str:
        page = office_staff.get(url, params)
        assert page.status_code == 200
        return page.content.decode()

    everything = listed()
    assert op_a.id in everything
    assert op_b.id in everything
    assert CARD not in everything
    assert OTHER not in everything
    only_b = listed(order="ORD-B")
    assert (op_a.id in only_b, op_b.id in only_b) == (False, True)
    only_a = listed(card="0017")
    assert (op_a.id in only_a, op_b.id in only_a) == (True, False)
    assert op_a.id not in listed(state="failed")
    assert op_a.id in listed(state="succeeded", kind="capture")
    # a whole card number is no filter (it would sit in the URL): refused, nothing listed
    whole = office_staff.get(url, {"card": CARD})
    assert op_a.id not in whole.content.decode()
    assert _messages(whole)
    bad = office_staff.get(url, {"state": "nonsense"})
    assert bad.status_code == 200
    assert _messages(bad)


def test_active_holds_are_listed_masked(payments, sandbox, office_staff):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    held = payments.reserve(CARD, amount="12.50", currency="EUR", order_ref="ORD-H")
    page = office_staff.get(_url("holds")).content.decode()
    assert held.id in page
    assert "ORD-H" in page
    assert "12.50 EUR" in page
    assert "*********0017" in page
    assert CARD not in page


def test_the_daily_report_and_its_csv(payments, sandbox, office_staff):
    sandbox.add_giftcard(CARD, amount=Decimal("100.00"))
    r = payments.reserve(CARD, amount="40.00", currency="EUR", order_ref="O1")
    capture = payments.capture(r.id)
    sandbox.process_queue()
    payments.refund(capture.id, amount="15.00")
    sandbox.process_queue()
    settled = payments.get_operation(capture.id).settled_at
    day = timezone.localtime(settled).date().isoformat()  # the shop's time zone

    page = office_staff.get(_url("report"), {"day": day})
    assert page.status_code == 200
    html = page.content.decode()
    assert re.search(r"<td>EUR</td><td>40.00</td><td>15.00</td><td>25.00</td>", html), html
    assert f"{_url('report-csv')}?day={day}" in html

    download = office_staff.get(_url("report-csv"), {"day": day})
    assert download.status_code == 200
    assert download["Content-Type"].startswith("text/csv")
    assert f'filename="fourws-pay-{day}.csv"' in download["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(download.content.decode())))
    assert rows[0][:5] == ["day", "currency", "captured", "refunded", "net"]
    assert rows[1] == [day, "EUR", "40.00", "15.00", "25.00", "0", "1", "1", "0"]

    bad = office_staff.get(_url("report"), {"day": "yesterday"})
    assert bad.status_code == 400
    assert any("Not a day" in m for m in _messages(bad))
