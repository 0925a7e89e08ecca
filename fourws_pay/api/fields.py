"""Field types that absorb the 4WS API's quirks on input and are strict on output.

- flags come as ``"Y"``/``"N"`` (sometimes booleans): ``Flag`` -> bool;
- timestamps come as ``yyyy-MM-dd HH:mm:ss`` without a zone, documented as GMT, or as
  ISO-8601 with ``Z`` (Data management): ``UTCDateTime`` -> aware UTC datetime, and it is
  written back as ``yyyy-MM-dd HH:mm:ss`` in UTC;
- amounts come as integers, decimals or strings: ``Money`` -> Decimal (never float);
- codes (``entityCode``, ``branchCode``, ``siteId``) come as strings or numbers: ``Code`` -> str.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

from fourws_pay.errors import InvalidAmountError
from fourws_pay.money import format_amount, to_decimal

WIRE_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_AMOUNT_DIGITS = 18  # integer digits of the largest amount we accept from 4WS

_TRUE = frozenset({"Y", "YES", "TRUE", "1", "S", "T"})
_FALSE = frozenset({"N", "NO", "FALSE", "0", "F", ""})


def parse_flag(value: Any) -> bool:
    """``"Y"``/``"N"`` (any case), booleans, or 0/1 -> bool; anything else is an error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        upper = value.strip().upper()
        if upper in _TRUE:
            return True
        if upper in _FALSE:
            return False
    raise ValueError(f"expected a Y/N flag, got {str(value)[:10]!r}")


def parse_datetime(value: Any) -> datetime | None:
    """Parse the two documented timestamp forms; zone-less values are UTC.

    Empty strings and ``None`` mean "not set" (an open validity bound).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"expected 'yyyy-MM-dd HH:mm:ss', got {text[:25]!r}") from None
    else:
        raise ValueError("expected a date-time string")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is past datetime.max in UTC
        raise ValueError("date-time out of range") from None


def format_datetime(value: datetime) -> str:
    """The Documents API wire format, in UTC: ``2021-08-31 10:00:00``."""
    if value.tzinfo is None:
        raise ValueError("datetimes sent to 4WS must be timezone-aware")
    return value.astimezone(UTC).strftime(WIRE_DATETIME_FORMAT)


def parse_money(value: Any) -> Decimal:
    """Numbers and numeric strings -> Decimal. Floats (from foreign JSON parsers) go through
    ``repr`` so that ``330.18`` stays ``330.18``."""
    if isinstance(value, float):
        value = repr(value)
    try:
        amount = to_decimal(value)
    except InvalidAmountError as exc:
        raise ValueError(str(exc)) from None
    if amount and amount.adjusted() >= MAX_AMOUNT_DIGITS:
        # no card holds 10**18, and such a value could not be quantized later
        raise ValueError("amount out of range")
    return amount


def parse_code(value: Any) -> str:
    """Codes as strings or integers -> str (``440`` -> ``"440"``)."""
    if isinstance(value, bool):
        raise ValueError("expected a code, got a boolean")
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        if value.adjusted() > 40:  # int() of 1E+10000000 would take seconds
            raise ValueError("code out of range")
        return str(int(value))
    raise ValueError("expected a code (string or integer)")


Flag = Annotated[bool, BeforeValidator(parse_flag)]
UTCDateTime = Annotated[
    datetime | None,
    BeforeValidator(parse_datetime),
    PlainSerializer(lambda v: format_datetime(v) if v else None, return_type=str | None),
]
Money = Annotated[
    Decimal,
    BeforeValidator(parse_money),
    PlainSerializer(format_amount, return_type=str),
]
Code = Annotated[str, BeforeValidator(parse_code)]
