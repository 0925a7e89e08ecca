"""Table tests for the pure payment rules (docs/design.md §5, invariants 9-11)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fourws_pay.api.models import GiftCard
from fourws_pay.payments.models import RefusalReason
from fourws_pay.payments.rules import (
    UNIFORM_PUBLIC_MESSAGE,
    UNIFORM_REASONS,
    PaymentRequest,
    evaluate,
    forfeited_amount,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
BARCODE = "2000000001814"


def card(**overrides: Any) -> GiftCard:
    data: dict[str, Any] = {
        "cardBarcode": BARCODE,
        "amount": 100,
        "currency": "EUR",
        "decimalNumber": 2,
        "flgActive": "Y",
        "flgPartiallyUsage": "Y",
        "flgNetworkUsage": "Y",
        "entityCode": 440,
        "itemSubtype": "GIFTCARD",
        "activationDate": "2026-01-01 00:00:00",
        "expirationDate": "2027-01-01 00:00:00",
    }
    data.update(overrides)
    return GiftCard.model_validate({k: v for k, v in data.items() if v is not ...})


def request(amount: str = "25.00", **overrides: Any) -> PaymentRequest:
    values: dict[str, Any] = {
        "amount": Decimal(amount),
        "currency": "EUR",
        "now": NOW,
        "shop_entity_code": "440",
    }
    values.update(overrides)
    return PaymentRequest(**values)


REFUSALS = [
    ("unknown card", None, request(), RefusalReason.NOT_FOUND),
    ("inactive", card(flgActive="N"), request(), RefusalReason.INACTIVE),
    ("inactive boolean", card(flgActive=False), request(), RefusalReason.INACTIVE),
    ("flag missing means inactive", card(flgActive=...), request(), RefusalReason.INACTIVE),
    (
        "not yet valid",
        card(activationDate="2026-06-01 12:00:01"),
        request(),
        RefusalReason.NOT_YET_VALID,
    ),
    (
        "expired at the instant",
        card(expirationDate="2026-06-01 12:00:00"),
        request(),
        RefusalReason.EXPIRED,
    ),
    (
        "expired ISO Z",
        card(expirationDate="2026-05-31T23:59:59.000Z"),
        request(),
        RefusalReason.EXPIRED,
    ),
    ("zero balance", card(amount=0), request(), RefusalReason.EMPTY),
    ("negative balance", card(amount="-5"), request(), RefusalReason.EMPTY),
    ("short balance", card(amount="20.00"), request("25.00"), RefusalReason.INSUFFICIENT_BALANCE),
    ("other currency", card(currency="USD"), request(), RefusalReason.CURRENCY_MISMATCH),
    ("no currency", card(currency=None), request(), RefusalReason.CURRENCY_MISMATCH),
    (
        "network restricted",
        card(flgNetworkUsage="N", entityCode=441),
        request(),
        RefusalReason.NETWORK_RESTRICTED,
    ),
    ("not a gift card", card(itemSubtype="VOUCHER"), request(), RefusalReason.NOT_A_GIFT_CARD),
    ("too many decimals", card(), request("1.001"), RefusalReason.INVALID_AMOUNT),
    ("zero decimals card", card(decimalNumber=0), request("1.50"), RefusalReason.INVALID_AMOUNT),
    (
        "one-go card, smaller order",
        card(flgPartiallyUsage="N"),
        request("25.00"),
        RefusalReason.PARTIAL_USAGE_NOT_ALLOWED,
    ),
    (
        "one-go card, larger order without partial",
        card(flgPartiallyUsage="N"),
        request("150.00"),
        RefusalReason.INSUFFICIENT_BALANCE,
    ),
]


@pytest.mark.parametrize(
    ("name", "the_card", "the_request", "reason"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
def test_refusals(
    name: str, the_card: GiftCard | None, the_request: PaymentRequest, reason: RefusalReason
) -> None:
    decision = evaluate(the_card, the_request, held=Decimal(0), barcode=BARCODE)
    assert not decision.ok
    assert decision.reason is reason
    assert decision.usable_amount == 0
    assert decision.available_balance is None  # a refusal never discloses a balance
    assert BARCODE not in decision.message
    assert BARCODE not in decision.public_message
    assert decision.masked_barcode.endswith("1814")
    assert BARCODE not in decision.masked_barcode


def test_uniform_public_message_for_enumeration_reasons() -> None:
    messages = {
        evaluate(c, r, held=Decimal(0), barcode=BARCODE).public_message
        for _, c, r, reason in REFUSALS
        if reason in UNIFORM_REASONS
    }
    assert messages == {UNIFORM_PUBLIC_MESSAGE}
    others = {
        evaluate(c, r, held=Decimal(0), barcode=BARCODE).public_message
        for _, c, r, reason in REFUSALS
        if reason not in UNIFORM_REASONS
    }
    assert len(others) > 1


ACCEPTS = [
    # name, card, request, held, usable, covers
    ("plain", card(), request("25.00"), "0", "25.00", True),
    ("exact balance", card(), request("100.00"), "0", "100.00", True),
    (
        "strings for numbers",
        card(amount="100.00", decimalNumber="2"),
        request("25"),
        "0",
        "25.00",
        True,
    ),
    ("held reduces", card(), request("60.00", allow_partial=True), "50", "50.00", False),
    (
        "partial allowed",
        card(amount="20"),
        request("25.00", allow_partial=True),
        "0",
        "20.00",
        False,
    ),
    (
        "valid from the instant",
        card(activationDate="2026-06-01 12:00:00"),
        request(),
        "0",
        "25.00",
        True,
    ),
    ("open bounds", card(activationDate="", expirationDate=None), request(), "0", "25.00", True),
    ("network flag, same entity", card(flgNetworkUsage="N"), request(), "0", "25.00", True),
    ("lower-case currency", card(currency="eur"), request(), "0", "25.00", True),
    ("one-go, exact", card(flgPartiallyUsage="N"), request("100.00"), "0", "100.00", True),
    (
        "one-go, pays part",
        card(flgPartiallyUsage="N"),
        request("150.00", allow_partial=True),
        "0",
        "100.00",
        False,
    ),
    (
        "one-go, forfeit opt-in",
        card(flgPartiallyUsage="N"),
        request("25.00", forfeit_partial_remainder=True),
        "0",
        "100.00",
        True,
    ),
    ("subtype missing tolerated", card(itemSubtype=None), request(), "0", "25.00", True),
]


@pytest.mark.parametrize(
    ("name", "the_card", "the_request", "held", "usable", "covers"),
    ACCEPTS,
    ids=[a[0] for a in ACCEPTS],
)
def test_accepts(
    name: str, the_card: GiftCard, the_request: PaymentRequest, held: str, usable: str, covers: bool
) -> None:
    decision = evaluate(the_card, the_request, held=Decimal(held), barcode=BARCODE)
    assert decision.ok, decision.message
    assert decision.usable_amount == Decimal(usable)
    assert decision.covers_full_amount is covers
    assert decision.available_balance == the_card.amount - Decimal(held)


def test_held_whole_balance_is_insufficient_not_empty() -> None:
    decision = evaluate(card(), request("1.00"), held=Decimal(100), barcode=BARCODE)
    assert decision.reason is RefusalReason.INSUFFICIENT_BALANCE


def test_one_go_card_already_partly_held_is_refused() -> None:
    decision = evaluate(
        card(flgPartiallyUsage="N"), request("50.00"), held=Decimal(50), barcode=BARCODE
    )
    assert decision.reason is RefusalReason.INSUFFICIENT_BALANCE


def test_forfeit_amount_is_the_excess_of_a_one_go_card() -> None:
    decision = evaluate(
        card(flgPartiallyUsage="N"),
        request("25.00", forfeit_partial_remainder=True),
        held=Decimal(0),
        barcode=BARCODE,
    )
    assert forfeited_amount(decision) == Decimal("75.00")
    assert decision.usable_amount - forfeited_amount(decision) == Decimal("25.00")


@given(
    balance=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10000"), places=2),
    held=st.decimals(min_value=Decimal(0), max_value=Decimal("10000"), places=2),
    amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("20000"), places=2),
    partial=st.booleans(),
)
def test_never_more_than_available_nor_requested(
    balance: Decimal, held: Decimal, amount: Decimal, partial: bool
) -> None:
    decision = evaluate(
        card(amount=str(balance)),
        request(str(amount), allow_partial=partial),
        held=held,
        barcode=BARCODE,
    )
    if decision.ok:
        assert decision.usable_amount <= balance - held
        assert decision.usable_amount <= amount
        assert decision.usable_amount > 0
        assert decision.usable_amount == decision.usable_amount.quantize(Decimal("0.01"))
        assert decision.covers_full_amount == (decision.usable_amount == amount)
    else:
        assert decision.usable_amount == 0


@given(
    parts=st.lists(
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal("50"), places=2),
        min_size=1,
        max_size=12,
    ),
)
def test_splitting_a_balance_never_oversells(parts: list[Decimal]) -> None:
    balance = Decimal("100.00")
    held = Decimal(0)
    for part in parts:
        decision = evaluate(card(amount="100.00"), request(str(part)), held=held, barcode=BARCODE)
        if decision.ok:
            held += decision.usable_amount
        assert held <= balance


def test_now_must_be_compared_in_utc() -> None:
    rome = timedelta(hours=2)
    from datetime import timezone

    local_now = datetime(2026, 12, 31, 23, 30, tzinfo=timezone(rome))  # 21:30 UTC
    the_card = card(expirationDate="2026-12-31 22:00:00")
    assert evaluate(the_card, request(now=local_now), held=Decimal(0), barcode=BARCODE).ok
