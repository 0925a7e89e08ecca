"""JSON on the wire without floats.

Incoming bodies are parsed with ``parse_float=Decimal`` so ``330.18`` is exactly 330.18.
Outgoing bodies write Decimals as plain JSON numbers (``-50.00``), which ``json.dumps``
cannot do, so we encode the few shapes we send ourselves.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fourws_pay.money import format_amount

MAX_EXPONENT = 1000  # |exponent| of any JSON number we accept


def loads(data: bytes | str) -> Any:
    """Parse JSON; non-integers become Decimal. Raises ``ValueError`` on bad input.

    Numbers like ``1E+10000000`` are refused: they cost nothing to send, but turning one
    into an int (pydantic does, for an ``int`` field) or plain digits takes seconds.
    """
    return json.loads(data, parse_float=_decimal, parse_constant=_no_constants)


def _decimal(text: str) -> Decimal:
    value = Decimal(text)
    if value and abs(value.adjusted()) > MAX_EXPONENT:
        raise ValueError("number out of range")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def dumps(value: Any) -> str:
    """Serialize dicts, lists, strings, ints, bools, None and finite Decimals."""
    return "".join(_encode(value))


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("cannot send a non-finite amount")
        yield format_amount(value)
    elif isinstance(value, dict):
        yield "{"
        for index, (key, item) in enumerate(value.items()):
            if index:
                yield ","
            yield json.dumps(str(key), ensure_ascii=False)
            yield ":"
            yield from _encode(item)
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for index, item in enumerate(value):
            if index:
                yield ","
            yield from _encode(item)
        yield "]"
    elif isinstance(value, float):
        raise TypeError("floats are not sent to 4WS; use Decimal")
    else:
        yield json.dumps(value, ensure_ascii=False)
