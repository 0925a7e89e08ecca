"""Money as Decimal, never float.

4WS sends amounts as JSON numbers (``390``, ``100.0``, ``-50.0``) and sometimes as strings;
we parse JSON with ``parse_float=Decimal`` so that no binary float ever holds money. A card
has ``decimalNumber`` digits (2 for EUR); every amount we accept or post is quantized to it.

Rounding choice: amounts given by callers with more digits than the card allows are
rejected (``InvalidAmountError``) rather than rounded, because silently charging a customer
a different amount than the shop computed is worse than a clear error. Amounts read from 4WS
are quantized with ROUND_HALF_UP, which is what a till does.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from fourws_pay.errors import InvalidAmountError, InvalidInputError

DEFAULT_DECIMALS = 2
MAX_DECIMALS = 8


def to_decimal(value: object, *, what: str = "amount") -> Decimal:
    """Turn an int, Decimal or numeric string into a finite Decimal.

    Floats are refused: ``0.1`` is not a price. Booleans are refused too (``True == 1``).
    """
    if type(value) is Decimal and value.is_finite():  # the common case, first
        return value
    if isinstance(value, bool | float):
        raise InvalidAmountError(
            f"{what} must be a Decimal, int or numeric string, not {type(value).__name__}"
        )
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidAmountError(f"{what} is not a number: {value[:20]!r}") from None
    else:
        raise InvalidAmountError(f"{what} must be a Decimal, int or numeric string")
    if not result.is_finite():
        raise InvalidAmountError(f"{what} must be finite, got {result}")
    return result


_QUANTA = tuple(Decimal(1).scaleb(-d) for d in range(MAX_DECIMALS + 1))


def quantum(decimals: int) -> Decimal:
    """The smallest unit for ``decimals`` digits: 2 -> Decimal('0.01')."""
    if not 0 <= decimals <= MAX_DECIMALS:
        raise InvalidAmountError(f"decimalNumber must be between 0 and {MAX_DECIMALS}")
    return _QUANTA[decimals]


def quantize(value: Decimal, decimals: int) -> Decimal:
    """Round a value read from 4WS to the card's digits (ROUND_HALF_UP)."""
    return _quantize(value, quantum(decimals))


def _quantize(value: Decimal, q: Decimal) -> Decimal:
    try:
        return value.quantize(q, rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than the decimal context holds (28)
        raise InvalidAmountError("amount is too large") from None


def positive_amount(value: object, decimals: int = DEFAULT_DECIMALS) -> Decimal:
    """Validate an amount a caller wants to reserve, capture or refund.

    Returns it quantized to ``decimals``; raises ``InvalidAmountError`` for NaN, infinities,
    floats, zero, negatives and values with more digits than the card allows.
    """
    amount = to_decimal(value)
    if amount <= 0:
        raise InvalidAmountError(f"amount must be greater than zero, got {amount}")
    rounded = _quantize(amount, quantum(decimals))
    if rounded != amount:
        raise InvalidAmountError(
            f"amount {amount} has more than {decimals} decimal digits for this card"
        )
    return rounded


def format_amount(value: Decimal) -> str:
    """Plain decimal notation for the wire (never an exponent: ``1E+2`` -> ``100``)."""
    text = format(value, "f")
    return text


_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


def require_currency(currency: object) -> str:
    """A 3-letter ISO 4217 code, upper-cased; anything else is ``InvalidInputError``."""
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise InvalidInputError("currency must be a 3-letter ISO 4217 code")
    return currency.upper()
