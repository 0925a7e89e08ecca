"""Money is Decimal: bad amounts are refused with ``InvalidAmountError``; rounding and the
wire format round-trip exactly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourws_pay.api import wirejson
from fourws_pay.errors import InvalidAmountError, InvalidInputError
from fourws_pay.money import (
    DEFAULT_DECIMALS,
    MAX_DECIMALS,
    format_amount,
    positive_amount,
    quantize,
    quantum,
    to_decimal,
)


@pytest.mark.parametrize(
    "bad",
    [
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        "NaN",
        "inf",
        1.5,
        0.1,
        float("nan"),
        True,
        False,
        0,
        Decimal(0),
        "0.00",
        Decimal("-0.00"),
        -1,
        "-10.00",
        Decimal("10.001"),
        "1.999",
        "abc",
        "",
        None,
        [],
        {"amount": 1},
        Decimal("1E+40"),  # beyond what any card holds, and what quantize can represent
    ],
)
def test_bad_amounts_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidAmountError) as info:
        positive_amount(bad)
    assert isinstance(info.value, InvalidInputError)
    assert isinstance(info.value, ValueError)  # also catchable as a plain ValueError


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        (Decimal("10"), 2, "10.00"),
        ("10.5", 2, "10.50"),
        (10, 2, "10.00"),
        (" 7.1 ", 2, "7.10"),
        (Decimal("1E+2"), 2, "100.00"),
        ("3", 0, "3"),
        ("0.001", 3, "0.001"),
        ("12.3400", 2, "12.34"),  # trailing zeros are not extra digits
    ],
)
def test_good_amounts_are_quantized(value: Any, decimals: int, expected: str) -> None:
    result = positive_amount(value, decimals)
    assert isinstance(result, Decimal)
    assert str(result) == expected


def test_too_many_decimals_depends_on_the_card() -> None:
    assert positive_amount("1.001", 3) == Decimal("1.001")
    with pytest.raises(InvalidAmountError):
        positive_amount("1.5", 0)


@pytest.mark.parametrize("decimals", [-1, MAX_DECIMALS + 1])
def test_decimal_number_bounds(decimals: int) -> None:
    with pytest.raises(InvalidAmountError):
        quantum(decimals)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.005", "0.01"),
        ("-0.005", "-0.01"),
        ("0.0049", "0.00"),
        ("2.675", "2.68"),
        ("390", "390.00"),
    ],
)
def test_quantize_rounds_half_up(value: str, expected: str) -> None:
    assert str(quantize(Decimal(value), 2)) == expected


@pytest.mark.parametrize("value", ["1E+40", "-1E+40", "123456789012345678901234567890"])
def test_quantize_out_of_range_is_a_typed_error(value: str) -> None:
    with pytest.raises(InvalidAmountError):
        quantize(Decimal(value), 2)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("-50.00"), "-50.00"),
        (Decimal("1E+2"), "100"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("330.18"), "330.18"),
        (Decimal("-0"), "-0"),
    ],
)
def test_format_amount_never_uses_an_exponent(value: Decimal, text: str) -> None:
    assert format_amount(value) == text


def test_to_decimal_refuses_floats_and_bools() -> None:
    for bad in (0.5, True):
        with pytest.raises(InvalidAmountError, match="not"):
            to_decimal(bad)
    assert to_decimal(" 12.50 ") == Decimal("12.50")


def test_amount_errors_never_echo_long_input() -> None:
    with pytest.raises(InvalidAmountError) as info:
        to_decimal("x" * 1000)
    assert len(str(info.value)) < 100


# ------------------------------------------------------------------------- hypothesis

decimals_st = st.integers(min_value=0, max_value=MAX_DECIMALS)
units = st.integers(min_value=-(10**15), max_value=10**15)


@settings(max_examples=200, deadline=None)
@given(n=units, d=decimals_st)
def test_exact_amounts_round_trip(n: int, d: int) -> None:
    amount = Decimal(n).scaleb(-d)
    assert quantize(amount, d) == amount
    text = format_amount(amount)
    assert "E" not in text.upper()
    assert Decimal(text) == amount
    assert to_decimal(text) == amount
    assert wirejson.loads(wirejson.dumps({"amount": amount}))["amount"] == amount
    if amount > 0:
        assert positive_amount(text, d) == amount
        assert format_amount(positive_amount(text, d)) == format_amount(quantize(amount, d))


@settings(max_examples=200, deadline=None)
@given(
    value=st.decimals(
        min_value=Decimal(-(10**12)), max_value=Decimal(10**12), allow_nan=False, places=10
    ),
    d=decimals_st,
)
def test_quantize_is_idempotent_and_close(value: Decimal, d: int) -> None:
    once = quantize(value, d)
    assert quantize(once, d) == once
    assert abs(once - value) <= quantum(d) / 2
    assert -once.as_tuple().exponent == d  # exactly d digits, even for whole numbers  # type: ignore[operator]


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.decimals(), st.floats(), st.text(max_size=20), st.integers()))
def test_positive_amount_only_raises_typed_errors(value: Any) -> None:
    try:
        result = positive_amount(value, DEFAULT_DECIMALS)
    except InvalidAmountError:
        return  # anything else, typed or not, fails the test
    assert result > 0
    assert quantize(result, DEFAULT_DECIMALS) == result
