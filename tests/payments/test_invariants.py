"""docs/design.md §5: one scenario per money invariant, and proof that each test can fail.

``test_invariant_holds[N]`` runs scenario N against the real provider. Its twin
``test_scenario_fails_without_its_protection[N]`` switches off exactly the protection that
invariant relies on (a monkeypatch of one named seam) and requires the same scenario to fail.
So a test that "cannot fail" would show up here as a failing twin. Invariant 14 (crash
safety) has its own module, ``test_crash_safety.py``, with the same pairing; the contention
side of invariant 2 lives in ``test_contention.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourws_pay import (
    AmbiguousOutcomeError,
    CallbackRejected,
    CurrencyMismatchError,
    InvalidAmountError,
    InvalidInputError,
    OrderAllocationError,
    PaymentRefused,
    ThrottledError,
)
from fourws_pay.api.models import UpdateGiftCardResult
from fourws_pay.ledger.sqlite import SQLiteTransaction
from fourws_pay.payments import (
    base,
    checkout,
    core,
    issuing,
    order_refunds,
    settlement,
    transitions,
)
from fourws_pay.payments.effects import ReadCard
from fourws_pay.payments.models import OperationState, RefusalReason, ReservationState
from fourws_pay.payments.rules import UNIFORM_PUBLIC_MESSAGE
from fourws_pay.payments.throttle import LookupThrottle
from fourws_pay.sandbox.faults import Fault
from tests.payments.harness import Shop, run_stepped


class Context:
    def __init__(self, shop: Shop, caplog: pytest.LogCaptureFixture) -> None:
        self.shop = shop
        self.caplog = caplog


def updates(shop: Shop) -> int:
    return len(shop.sandbox.requests_to("update_giftcard"))


# --------------------------------------------------------------------------- 1


def conservation(ctx: Context) -> None:
    """Σ applied by 4WS = Σ settled in the ledger, through duplicates, early callbacks,
    an ambiguous POST and a capture that 4WS refuses."""
    shop = ctx.shop
    card = shop.card(amount="100.00")
    first = shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="O1")
    shop.sandbox.faults.add("update_giftcard", Fault.duplicate_callback(3))
    shop.payments.capture(first.id)
    shop.settle()
    second = shop.payments.reserve(card, amount="20.00", currency="EUR", order_ref="O2")
    shop.sandbox.faults.add("update_giftcard", Fault.callback_before_response())
    shop.payments.capture(second.id)
    shop.settle()
    third = shop.payments.reserve(card, amount="40.00", currency="EUR", order_ref="O3")
    shop.sandbox.faults.add("update_giftcard", Fault.hang(after_enqueue=True))
    shop.payments.capture(third.id)  # ambiguous: recorded as unknown, not raised
    shop.settle()
    fourth = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O4")
    shop.payments.capture(fourth.id)
    shop.sandbox.spend_in_shop(card, "10.00")  # 4WS will refuse the queued consumption
    shop.settle()
    shop.audit()
    assert shop.sandbox.balance(card) == Decimal("0.00")


def break_conservation(mp: pytest.MonkeyPatch) -> None:
    # Believe every callback says "success".
    original = core.PaymentsCore._parse_callback

    def always_success(body: bytes, operation_id: str, *shape: Any) -> UpdateGiftCardResult:
        return replace_success(original(body, operation_id, *shape))

    mp.setattr(core.PaymentsCore, "_parse_callback", staticmethod(always_success))


def replace_success(result: UpdateGiftCardResult) -> UpdateGiftCardResult:
    return result.model_copy(update={"success": True})


# --------------------------------------------------------------------------- 2


def no_over_reservation(ctx: Context) -> None:
    shop = ctx.shop
    card = shop.card(amount="100.00")
    shop.payments.reserve(card, amount="60.00", currency="EUR", order_ref="O1")
    with pytest.raises(PaymentRefused):
        shop.payments.reserve(card, amount="50.00", currency="EUR", order_ref="O2")
    shop.payments.reserve(card, amount="40.00", currency="EUR", order_ref="O3")
    assert shop.held(card) <= shop.sandbox.balance(card)


def break_no_over_reservation(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(core.PaymentsCore, "held", lambda self, *a, **k: Decimal(0))


# --------------------------------------------------------------------------- 3


def one_post_per_operation(ctx: Context) -> None:
    shop = ctx.shop
    card = shop.card(amount="100.00")
    reservation = shop.payments.reserve(card, amount="25.00", currency="EUR", order_ref="O")
    shop.sandbox.faults.add("update_giftcard", Fault.reset(after_enqueue=True))
    operation = shop.payments.capture(reservation.id)
    assert operation.state is OperationState.UNKNOWN
    again = shop.payments.capture(reservation.id)  # e.g. the shop retries the confirmation
    assert again.id == operation.id
    shop.payments.reconcile()
    assert updates(shop) == 1
    shop.settle()
    shop.audit()
    assert shop.sandbox.balance(card) == Decimal("75.00")


def break_one_post_per_operation(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(SQLiteTransaction, "captures_of_reservation", lambda self, rid: [])
    mp.setattr(core.PaymentsCore, "_blocker", staticmethod(lambda tx, b: None))


# --------------------------------------------------------------------------- 4


def write_ahead(ctx: Context) -> None:
    """When the POST leaves, the ledger already says ``sending`` for that operation."""
    shop = ctx.shop
    client = shop.payments.client
    seen: list[OperationState] = []
    original = client.update_giftcard

    def spy(update: Any) -> Any:
        stored = shop.store.get_operation(update.payload["operation_id"])
        seen.append(stored.state if stored else OperationState.FAILED)
        return original(update)

    client.update_giftcard = spy  # type: ignore[method-assign]
    card = shop.card()
    reservation = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    shop.payments.capture(reservation.id)
    assert seen == [OperationState.SENDING]


def break_write_ahead(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(
        core.PaymentsCore,
        "_mark_sending",
        lambda self, tx, claim, card, now: replace(claim, state=OperationState.SENDING),
    )


# --------------------------------------------------------------------------- 5


def one_way_states(ctx: Context) -> None:
    shop = ctx.shop
    card = shop.card()
    reservation = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    operation = shop.payments.capture(reservation.id)
    shop.settle()
    url = shop.sandbox.callbacks[-1].url
    path = urlsplit(url).path
    duplicate = shop.payments.handle_callback(path, b'{"success": true}')
    assert not duplicate.applied
    conflict = shop.payments.handle_callback(path, b'{"success": false, "message": "x"}')
    assert not conflict.applied
    assert shop.payments.get_operation(operation.id).state is OperationState.SUCCEEDED
    assert shop.payments.get_reservation(reservation.id).state is ReservationState.CAPTURED
    assert shop.recorder.kinds().count("alert") == 1


def break_one_way_states(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(transitions, "may_move", lambda current, target: True)


# --------------------------------------------------------------------------- 6


def bounded_time(ctx: Context) -> None:
    """Lost callbacks and ambiguous POSTs all end terminal or in manual review."""
    shop = ctx.shop
    settings = shop.payments.settings
    applied = shop.card("7000000000011", amount="50.00")
    unapplied = shop.card("7000000000012", amount="50.00")
    murky = shop.card("7000000000013", amount="50.00")
    for n, card in enumerate((applied, unapplied, murky)):
        r = shop.payments.reserve(card, amount="20.00", currency="EUR", order_ref=f"O{n}")
        fault = Fault.drop_callback() if card != unapplied else Fault.server_error(503)
        shop.sandbox.faults.add("update_giftcard", fault)
        with contextlib.suppress(AmbiguousOutcomeError):
            shop.payments.capture(r.id)
    shop.sandbox.spend_in_shop(murky, "7.00")  # muddies the evidence
    shop.settle()
    shop.clock.advance(settings.callback_timeout + settings.reconcile_window + 1)
    # A hold with an operation in flight never expired meanwhile:
    assert shop.held(murky) == Decimal("20.00")
    shop.payments.reconcile()
    states = {op.barcode: op.state for op in shop.store.list_operations()}
    assert states[applied] is OperationState.SUCCEEDED
    # An unchanged balance is no proof that 4WS will not still apply it: manual review.
    assert states[unapplied] is OperationState.MANUAL_REVIEW
    assert states[murky] is OperationState.MANUAL_REVIEW
    assert all(
        op.is_terminal or op.state is OperationState.MANUAL_REVIEW
        for op in shop.store.list_operations()
    )
    shop.audit()
    # The operator asks 4WS and settles what automation could not; the hold is freed.
    (op,) = [o for o in shop.store.list_operations() if o.barcode == unapplied]
    assert shop.held(unapplied) == Decimal("20.00")
    shop.payments.resolve(op.id, applied=False, note="4WS support: never received")
    assert shop.held(unapplied) == Decimal("0")
    shop.audit()


def break_bounded_time(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(core.PaymentsCore, "_judge", lambda self, op, card: op)


# --------------------------------------------------------------------------- 7


def expiry(ctx: Context) -> None:
    shop = ctx.shop
    card = shop.card(amount="100.00")
    shop.payments.reserve(card, amount="100.00", currency="EUR", order_ref="O1", ttl=60)
    shop.clock.advance(60)  # the hold's expiry instant; no sweep has run
    try:
        shop.payments.reserve(card, amount="100.00", currency="EUR", order_ref="O2", ttl=60)
    except PaymentRefused as exc:
        raise AssertionError("an expired hold still counted") from exc
    shop.clock.advance(60)
    assert shop.payments.sweep() == 2
    assert shop.payments.sweep() == 0
    assert shop.recorder.kinds().count("expired") == 2
    short = shop.card(
        "7000000000099",
        amount="10.00",
        expiration_date=shop.clock.now() + __import__("datetime").timedelta(seconds=30),
    )
    hold = shop.payments.reserve(short, amount="5.00", currency="EUR", order_ref="O3")
    assert hold.expires_at <= shop.sandbox.card(short).expiration_date


def break_expiry(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(
        transitions, "counts_as_held", lambda r, now, pinned: r.state is ReservationState.ACTIVE
    )


# --------------------------------------------------------------------------- 8


def authentic_callbacks(ctx: Context) -> None:
    shop = ctx.shop
    card = shop.card()
    reservation = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    operation = shop.payments.capture(reservation.id)
    forged = [
        f"/fourws/callback/{operation.id}/guessed-token",
        f"/fourws/callback/{operation.id}/",
        "/fourws/callback/op_0000/whatever",
    ]
    for path in forged:
        with pytest.raises(CallbackRejected):
            shop.payments.handle_callback(path, b'{"success": true, "id": "forged"}')
    assert shop.payments.get_operation(operation.id).state is OperationState.ENQUEUED


def break_authentic_callbacks(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(settlement.hmac, "compare_digest", lambda a, b: True)


# --------------------------------------------------------------------------- 9


def money_correctness(ctx: Context) -> None:
    shop = ctx.shop
    card = shop.card(amount="100.00")
    for bad in ("NaN", "sNaN", "Infinity", "-Infinity", "0", "-5", 0.1, "1e400x"):
        with pytest.raises(InvalidAmountError):
            shop.payments.reserve(card, amount=bad, currency="EUR", order_ref="O")
    for bad_ttl in (float("nan"), float("inf"), -1, 0, 10**30, True, "60"):
        with pytest.raises(InvalidInputError):
            shop.payments.reserve(card, amount="1", currency="EUR", order_ref="O", ttl=bad_ttl)
    assert shop.sandbox.requests_to("get_giftcard") == []  # all refused before any I/O
    with pytest.raises(InvalidAmountError, match="decimal"):
        shop.payments.reserve(card, amount="1.005", currency="EUR", order_ref="O")
    with pytest.raises(CurrencyMismatchError) as caught:
        shop.payments.reserve(card, amount="10", currency="USD", order_ref="O")
    assert caught.value.reason is RefusalReason.CURRENCY_MISMATCH
    assert isinstance(caught.value, PaymentRefused)
    assert shop.store.list_reservations() == []  # no partial write
    reservation = shop.payments.reserve(card, amount="12.3", currency="EUR", order_ref="O")
    shop.payments.capture(reservation.id)
    posted = shop.sandbox.pending()[-1].body["amount"]
    assert posted == Decimal("-12.30")
    assert str(posted) == "-12.30"


def break_money_correctness(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(checkout, "_requested_amount", lambda amount: Decimal(str(amount)))


# -------------------------------------------------------------------------- 10


def validity_at_both_ends(ctx: Context) -> None:
    shop = ctx.shop
    spent = shop.card("7000000000021", amount="100.00")
    hold = shop.payments.reserve(spent, amount="80.00", currency="EUR", order_ref="O1")
    shop.sandbox.spend_in_shop(spent, "50.00")
    with pytest.raises(PaymentRefused) as caught:
        shop.payments.capture(hold.id)
    assert caught.value.reason is RefusalReason.INSUFFICIENT_BALANCE
    blocked = shop.card("7000000000022", amount="100.00")
    hold = shop.payments.reserve(blocked, amount="10.00", currency="EUR", order_ref="O2")
    shop.sandbox.add_giftcard(blocked, amount=Decimal("100.00"), active=False)
    with pytest.raises(PaymentRefused) as caught:
        shop.payments.capture(hold.id)
    assert caught.value.reason is RefusalReason.INACTIVE
    assert updates(shop) == 0


def break_validity_at_both_ends(mp: pytest.MonkeyPatch) -> None:
    from fourws_pay.payments.models import Decision

    def approve(self: Any, card: Any, reservation: Any, held: Any, now: Any) -> Decision:
        return Decision(
            True,
            None,
            "ok",
            "",
            reservation.amount,
            reservation.amount,
            reservation.amount,
            reservation.currency,
            2,
            True,
            "****",
        )

    mp.setattr(core.PaymentsCore, "recheck", approve)


# -------------------------------------------------------------------------- 11


def guessing_resistance(ctx: Context) -> None:
    shop = ctx.shop
    shop.card("7000000000031", amount="10.00", active=False)
    shop.card("7000000000032", amount="0.00")
    messages = set()
    for code in ("7999999999999", "7000000000031", "7000000000032"):
        decision = shop.payments.check(code, Decimal("5"), "EUR", client_key="bot")
        messages.add(decision.public_message)
    assert messages == {UNIFORM_PUBLIC_MESSAGE}
    for n in range(20):
        try:
            shop.payments.check(f"79999999{n:05d}", Decimal("5"), "EUR", client_key="bot")
        except ThrottledError:
            break
    else:
        raise AssertionError("never throttled")
    assert len(shop.sandbox.requests_to("get_giftcard")) == shop.payments.settings.throttle_limit


def break_guessing_resistance(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(LookupThrottle, "check", lambda self, key: None)


# -------------------------------------------------------------------------- 12


def log_hygiene(ctx: Context) -> None:
    shop = ctx.shop
    ctx.caplog.set_level(logging.DEBUG, logger="fourws_pay")
    card = shop.card("7000000012345678", amount="100.00")
    reservation = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    operation = shop.payments.capture(reservation.id)
    shop.settle()
    shop.payments.refund(operation.id)
    shop.settle()
    shop.payments.check("7999999912345678", Decimal(1), "EUR")
    with pytest.raises(CallbackRejected):
        shop.payments.handle_callback(f"/cb/{operation.id}/nope", b"{}")
    token = urlsplit(shop.sandbox.callbacks[0].url).path.rsplit("/", 1)[-1]
    password = shop.payments.settings.password.get_secret_value()
    text = ctx.caplog.text + "".join(str(e) for e in shop.recorder.events)
    assert "5678" in text  # masked barcodes are there...
    for secret in (card, "7999999912345678", token, password):
        assert secret not in text, f"leaked {secret[:3]}…"


def break_log_hygiene(mp: pytest.MonkeyPatch) -> None:
    import fourws_pay.api.data_flows
    import fourws_pay.api.documents_flows
    import fourws_pay.logs

    identity = str
    modules = (fourws_pay.logs, fourws_pay.api.documents_flows, fourws_pay.api.data_flows, base)
    for module in modules:
        mp.setattr(module, "mask_barcode", identity)


# -------------------------------------------------------------------------- 13


def safe_parsing(ctx: Context) -> None:
    shop = ctx.shop
    card = shop.card()
    reservation = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    operation = shop.payments.capture(reservation.id)
    shop.settle()
    path = urlsplit(shop.callback_urls[operation.id]).path
    for body in (
        b"",
        b"[]",
        b"null",
        b'{"success": "yes"}',
        b'{"success": 1}',
        b"{",
        b'{"success": true, "payload": {"operation_id": "op_other"}}',
        json.dumps({"success": True, "id": ["x"]}).encode(),
        b"\xff\xfe",
    ):
        with pytest.raises(CallbackRejected):
            shop.payments.handle_callback(path, body)
    assert shop.payments.get_operation(operation.id).state is OperationState.ENQUEUED
    shop.sandbox.faults.add("get_giftcard", Fault.truncated_body(), times=None)
    from fourws_pay import MalformedResponseError

    with pytest.raises(MalformedResponseError):
        shop.payments.reserve(card, amount="1.00", currency="EUR", order_ref="O2")


def break_safe_parsing(mp: pytest.MonkeyPatch) -> None:
    def naive(body: bytes, operation_id: str, *shape: Any) -> UpdateGiftCardResult:
        return UpdateGiftCardResult.model_construct(**json.loads(body))

    mp.setattr(core.PaymentsCore, "_parse_callback", staticmethod(naive))


# -------------------------------------------------------------------------- 15


def sound_evidence(ctx: Context) -> None:
    """Two 30.00 captures on a 100.00 card. The second is asked for while the first is in
    flight, so it is queued; 4WS settles the first, and its callback gives the second its
    turn, whose POST gets a 503 that 4WS never enqueued. Reconcile must not take the first
    capture's debit as proof of the second one: the second's evidence is read at its turn,
    after the first settled."""
    shop = ctx.shop
    card = shop.card(amount="100.00")
    first = shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="A")
    second = shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref="B")
    shop.payments.capture(first.id)  # enqueued: 4WS has not applied it yet
    queued = shop.payments.capture(second.id)
    assert queued.state is OperationState.QUEUED
    shop.sandbox.faults.add("update_giftcard", Fault.server_error(503))  # never enqueued
    shop.sandbox.run_until_idle()  # the first settles; its callback posts the second
    operation = shop.payments.get_operation(queued.id)
    assert operation.state is OperationState.UNKNOWN
    settings = shop.payments.settings
    shop.clock.advance(settings.callback_timeout + settings.reconcile_window + 1)
    shop.payments.reconcile()
    assert shop.payments.get_operation(operation.id).state is not OperationState.SUCCEEDED
    shop.audit()


def break_sound_evidence(mp: pytest.MonkeyPatch) -> None:
    """The evidence is a balance read made before the claim (here: the card's first read)."""
    first_reads: dict[str, Any] = {}
    read = core.PaymentsCore.read

    def remembering(self: core.PaymentsCore, barcode: str, *, cached: bool) -> Any:
        result = yield from read(self, barcode, cached=cached)
        first_reads.setdefault(barcode, result)
        return result

    def stale(self: core.PaymentsCore, claim: Any) -> Any:
        yield from remembering(self, claim.barcode, cached=False)
        return first_reads[claim.barcode]

    mp.setattr(core.PaymentsCore, "read", remembering)
    mp.setattr(core.PaymentsCore, "_evidence_read", stale)


# -------------------------------------------------------------------------- 16


def no_false_refusal(ctx: Context) -> None:
    """Holds granted within the balance are capturable, and a card that can pay is granted
    a hold, even when a capture settled at the very instant the card was read (the read
    shows it; counting it again would refuse money that is there)."""
    shop = ctx.shop
    card = shop.card(amount="100.00")
    first = shop.payments.reserve(card, amount="50.00", currency="EUR", order_ref="A")
    second = shop.payments.reserve(card, amount="50.00", currency="EUR", order_ref="B")
    shop.payments.capture(first.id)
    shop.sandbox.run_until_idle()  # settled now; no time passes before the next read
    assert shop.payments.capture(second.id).state is OperationState.ENQUEUED
    shop.sandbox.run_until_idle()
    other = shop.card("7000000000099", amount="100.00")
    big = shop.payments.reserve(other, amount="60.00", currency="EUR", order_ref="C")
    shop.payments.capture(big.id)
    shop.sandbox.run_until_idle()
    rest = shop.payments.reserve(other, amount="40.00", currency="EUR", order_ref="D")
    assert shop.payments.capture(rest.id).state is OperationState.ENQUEUED
    shop.settle()
    assert shop.sandbox.balance(card) == shop.sandbox.balance(other) == Decimal("0.00")
    shop.audit()


def break_no_false_refusal(mp: pytest.MonkeyPatch) -> None:
    """Settlements the fresh read already shows are counted again."""
    held = core.PaymentsCore.held

    def double_counting(
        self: core.PaymentsCore, tx: Any, barcode: str, now: Any, exclude: str | None = None
    ) -> Decimal:
        late = [op for op in self._late_captures(tx, barcode, now) if op.reservation_id != exclude]
        return held(self, tx, barcode, now, exclude) + sum((op.amount for op in late), Decimal(0))

    mp.setattr(core.PaymentsCore, "held", double_counting)


# -------------------------------------------------------------------------- 17


def busy_is_not_a_refusal(ctx: Context) -> None:
    """Three captures on one card, the second and third asked for while the first waits
    for 4WS: both are accepted (``queued``, no error), their holds keep counting and do not
    expire while they wait past their lifetime, and each is posted at its turn, in order,
    by the callback that settles the one before it."""
    shop = ctx.shop
    card = shop.card(amount="100.00")
    holds = [
        shop.payments.reserve(card, amount="30.00", currency="EUR", order_ref=f"Q{n}", ttl=60)
        for n in range(3)
    ]
    first = shop.payments.capture(holds[0].id)
    assert first.state is OperationState.ENQUEUED
    waiting = [shop.payments.capture(h.id) for h in holds[1:]]
    assert [op.state for op in waiting] == [OperationState.QUEUED] * 2
    assert "queued" in shop.recorder.kinds()
    shop.clock.advance(600)  # past every hold's lifetime
    assert shop.payments.sweep() == 0
    assert shop.held(card) == Decimal("90.00")
    with pytest.raises(PaymentRefused):  # what they wait for is not for sale again
        shop.payments.reserve(card, amount="20.00", currency="EUR", order_ref="X")
    shop.sandbox.process_queue()  # the first settles; its callback posts the second
    states = [shop.payments.get_operation(op.id).state for op in waiting]
    assert states == [OperationState.ENQUEUED, OperationState.QUEUED]
    shop.sandbox.run_until_idle()
    for op in [first, *waiting]:
        assert shop.payments.get_operation(op.id).state is OperationState.SUCCEEDED
    assert shop.sandbox.balance(card) == Decimal("10.00")
    shop.audit()


def break_busy_is_not_a_refusal(mp: pytest.MonkeyPatch) -> None:
    """A queued capture does not pin its hold: it expires while it waits."""
    unpinned = transitions.HOLDING_OPERATION_STATES - {OperationState.QUEUED}
    mp.setattr(transitions, "HOLDING_OPERATION_STATES", unpinned)
    mp.setattr(settlement, "HOLDING_OPERATION_STATES", unpinned)


# -------------------------------------------------------------------------- 18


def issued_once(ctx: Context) -> None:
    """Two cards sold on a line; the generation's callback comes three times; the first
    activation's POST times out after 4WS queued it and its callback is lost; the shop
    asks again for the same line, then reconciles: each card is loaded exactly once, with
    exactly its amount, and no other card is loaded."""
    shop = ctx.shop
    item = "GIFTCARD_IVA_TAGLIO_100"
    shop.sandbox.add_product(item, item_type="FINANCIAL")
    shop.sandbox.faults.add("generate_giftcards", Fault.duplicate_callback(3))
    shop.sandbox.faults.add("update_giftcard", Fault.hang(after_enqueue=True))
    shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    issue = {"amount": "25.00", "currency": "EUR", "count": 2, "item_code": item}
    shop.payments.issue_cards("SALE-1", "gift", **issue)
    shop.sandbox.process_queue()  # generated; the activations are posted, one times out
    shop.payments.issue_cards("SALE-1", "gift", **issue)  # the shop's retry, at once
    shop.settle()
    shop.clock.advance(shop.payments.settings.callback_timeout + 1)
    shop.payments.reconcile()
    shop.settle()
    cards = shop.payments.issued_cards("SALE-1")
    assert [c.state.value for c in cards] == ["delivered", "delivered"]
    loaded = [r for r in shop.sandbox.applied_operations() if r.amount > 0]
    assert sorted(r.barcode for r in loaded) == sorted(c.barcode for c in cards)
    for card in cards:
        assert shop.sandbox.balance(card.barcode or "") == Decimal("25.00")
    shop.audit()


def break_issued_once(mp: pytest.MonkeyPatch) -> None:
    """An ambiguous activation is taken for one that never reached 4WS: the card goes
    back to ``generated`` and is activated again."""

    class NeverRaised(Exception):
        pass

    mp.setattr(issuing, "AmbiguousOutcomeError", NeverRaised)


# -------------------------------------------------------------------------- 19


def order_refunded_once(ctx: Context) -> None:
    """An order paid with two cards; 10 of it refunded by key; the shop retries the same
    refund twice (a timeout on its side), a restarted worker reconciles: 4WS gives back
    exactly 10, from the newest capture, and no capture beyond what it took."""
    shop = ctx.shop
    captures = []
    for barcode, amount in (("7000000000001", "30.00"), ("7000000000002", "20.00")):
        shop.card(barcode, amount="100.00")
        hold = shop.payments.reserve(barcode, amount=amount, currency="EUR", order_ref="O-19")
        captures.append(shop.payments.capture(hold.id))
        shop.settle()
    for _ in range(3):
        shop.payments.refund_order("O-19", refund_key="credit-memo-7", amount="10")
    shop.settle()
    shop.payments = shop.new_provider()
    shop.payments.reconcile()
    shop.settle()
    assert shop.sandbox.balance("7000000000002") == Decimal("90.00")
    assert shop.sandbox.balance("7000000000001") == Decimal("70.00")
    shop.audit()


def break_order_refunded_once(mp: pytest.MonkeyPatch) -> None:
    """The plan's id no longer derives from the refund key: each retry plans anew."""
    counter = iter(range(1_000_000))
    mp.setattr(order_refunds, "order_refund_id", lambda *_: f"ordref_{next(counter)}")


# -------------------------------------------------------------------------- 20


def order_held_all_or_nothing(ctx: Context) -> None:
    """An order of 60 over two cards (B pays 50, then A 10); a second worker holds 25 of A
    after the allocation read both cards: A's hold is refused under A's lock. B's hold,
    already placed, is released before the error; the shop's retry with the same key,
    once A is free again, holds each card once; nothing was captured in between."""
    shop = ctx.shop
    now = shop.clock.now()
    a, b = "7000000000001", "7000000000002"
    shop.card(a, amount="30.00", expiration_date=now + timedelta(days=300))
    shop.card(b, amount="50.00", expiration_date=now + timedelta(days=30))
    other = shop.new_provider()
    taken: list[str] = []

    def between(moment: str, effect: Any) -> None:
        if moment == "after" and isinstance(effect, ReadCard) and effect.barcode == b:
            taken.append(other.reserve(a, amount="25.00", currency="EUR", order_ref="X").id)

    flow = shop.payments.core.reserve_order(
        "O-20", [a, b], "60", "EUR", "checkout", None, None, False, None
    )
    with pytest.raises(OrderAllocationError):
        run_stepped(shop.payments, flow, between)
    assert shop.payments.list_reservations([ReservationState.ACTIVE], order_ref="O-20") == []
    assert shop.payments.capture_order("O-20") == []
    assert shop.held(b) == 0
    other.release(taken[0])
    for _ in range(2):
        allocation = shop.payments.reserve_order("O-20", cards=[a, b], amount="60", currency="EUR")
    assert allocation.applied_amount == Decimal("60.00")
    held = shop.payments.list_reservations([ReservationState.ACTIVE], order_ref="O-20")
    assert sorted(r.barcode for r in held) == [a, b]
    assert shop.sandbox.requests_to("update_giftcard") == []


def break_order_held_all_or_nothing(mp: pytest.MonkeyPatch) -> None:
    """The holds a failed allocation placed are no longer released."""
    mp.setattr(core.PaymentsCore, "_undo", lambda self, holds: ())


SCENARIOS: dict[int, tuple[Callable[[Context], None], Callable[[pytest.MonkeyPatch], None]]] = {
    1: (conservation, break_conservation),
    2: (no_over_reservation, break_no_over_reservation),
    3: (one_post_per_operation, break_one_post_per_operation),
    4: (write_ahead, break_write_ahead),
    5: (one_way_states, break_one_way_states),
    6: (bounded_time, break_bounded_time),
    7: (expiry, break_expiry),
    8: (authentic_callbacks, break_authentic_callbacks),
    9: (money_correctness, break_money_correctness),
    10: (validity_at_both_ends, break_validity_at_both_ends),
    11: (guessing_resistance, break_guessing_resistance),
    12: (log_hygiene, break_log_hygiene),
    13: (safe_parsing, break_safe_parsing),
    15: (sound_evidence, break_sound_evidence),
    16: (no_false_refusal, break_no_false_refusal),
    17: (busy_is_not_a_refusal, break_busy_is_not_a_refusal),
    18: (issued_once, break_issued_once),
    19: (order_refunded_once, break_order_refunded_once),
    20: (order_held_all_or_nothing, break_order_held_all_or_nothing),
}


@pytest.mark.parametrize("number", sorted(SCENARIOS))
def test_invariant_holds(number: int, shop: Shop, caplog: pytest.LogCaptureFixture) -> None:
    scenario, _ = SCENARIOS[number]
    scenario(Context(shop, caplog))


@pytest.mark.parametrize("number", sorted(SCENARIOS))
def test_scenario_fails_without_its_protection(
    number: int, shop: Shop, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario, disable = SCENARIOS[number]
    disable(monkeypatch)
    # The scenario passes with the protection on (test_invariant_holds), so any failure
    # here is the scenario noticing that the protection is gone.
    with pytest.raises((Exception, pytest.fail.Exception)):
        scenario(Context(shop, caplog))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.text(max_size=20)
            | st.floats(allow_nan=False),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        ["success", "id", "message", "payload", "queueId", "operation_id"]
                    )
                    | st.text(max_size=5),
                    inner,
                    max_size=5,
                )
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_callback_body_is_a_result_or_a_typed_rejection(shop: Shop, body: bytes) -> None:
    card = shop.card()
    if not shop.store.list_operations():
        r = shop.payments.reserve(card, amount="1.00", currency="EUR", order_ref="F")
        shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
        shop.payments.capture(r.id)
        shop.settle()
    operation = shop.store.list_operations()[0]
    path = urlsplit(shop.callback_urls[operation.id]).path
    status: int
    try:
        status = shop.payments.handle_callback(path, body).status_code
    except CallbackRejected as exc:
        status = exc.status_code
    assert status == 200 or 400 <= status < 500


def test_httpx_request_logs_carry_no_card_number_or_callback_token(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    caplog.set_level(logging.DEBUG, logger="fourws_pay")
    card = shop.card("7000000087654321", amount="50.00")
    r = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    op = shop.payments.capture(r.id)
    token = shop.callback_urls[op.id].rsplit("/", 1)[-1]
    import httpx

    # Log a request line exactly as httpx does, with the callback URL in it.
    logging.getLogger("httpx").info(
        'HTTP Request: %s %s "%s %d %s"',
        "POST",
        httpx.URL(shop.callback_urls[op.id]),
        "HTTP/1.1",
        200,
        "OK",
    )
    httpx_text = "\n".join(r.getMessage() for r in caplog.records if r.name == "httpx")
    assert "4321" in httpx_text
    assert card not in caplog.text
    assert token not in caplog.text


def test_an_unchanged_balance_is_no_proof_4ws_will_not_apply_it(shop: Shop) -> None:
    """Found by the stateful test: the queue may apply a consumption after the window."""
    card = shop.card(amount="50.00")
    r = shop.payments.reserve(card, amount="5.00", currency="EUR", order_ref="O")
    op = shop.payments.capture(r.id)  # 4WS has not worked through its queue yet
    s = shop.payments.settings
    shop.clock.advance(s.callback_timeout + s.reconcile_window + 1)
    report = shop.payments.reconcile()
    assert [o.id for o in report.manual_review] == [op.id]
    assert shop.held(card) == Decimal("5.00")  # still counted
    shop.sandbox.process_queue()  # 4WS applies it at last and calls back
    assert shop.payments.get_operation(op.id).state is OperationState.SUCCEEDED
    assert shop.payments.get_reservation(r.id).state is ReservationState.CAPTURED
    shop.audit()


def test_resolve_only_settles_manual_review(shop: Shop) -> None:
    from fourws_pay import InvalidInputError, InvalidStateError

    card = shop.card()
    r = shop.payments.reserve(card, amount="5.00", currency="EUR", order_ref="O")
    shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    op = shop.payments.capture(r.id)
    with pytest.raises(InvalidStateError):
        shop.payments.resolve(op.id, applied=True, note="too early")
    s = shop.payments.settings
    shop.clock.advance(s.callback_timeout + s.reconcile_window + 1)
    shop.payments.reconcile()  # nothing applied yet: manual review
    with pytest.raises(InvalidInputError):
        shop.payments.resolve(op.id, applied=True, note=" ")
    shop.sandbox.process_queue()  # applied, but the callback is lost this time
    resolved = shop.payments.resolve(op.id, applied=True, note="seen in 4WS back office")
    assert resolved.state is OperationState.SUCCEEDED
    assert "operator" in (resolved.message or "")
    assert shop.payments.get_reservation(r.id).state is ReservationState.CAPTURED
    with pytest.raises(InvalidStateError):
        shop.payments.resolve(op.id, applied=False, note="changed my mind")
    shop.audit()
