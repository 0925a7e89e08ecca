"""JSON in and out without binary floats: money stays ``Decimal`` on both sides.

Saleor sends amounts as JSON numbers; ``loads`` reads them as ``Decimal``. ``dumps`` writes
``Decimal`` back as a JSON number in plain notation (``25.10``, never ``2.51E+1``), which the
standard encoder cannot do without going through ``float``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes | str) -> Any:
    """Parse JSON with numbers as ``Decimal``; ``NaN``/``Infinity`` are refused."""
    return json.loads(data, parse_float=Decimal, parse_constant=_no_constants)


def _render(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("cannot serialise a non-finite Decimal")
        return format(value, "f")
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return json.dumps(value)
    if isinstance(value, float):
        raise TypeError("floats are not serialised; use Decimal")
    if isinstance(value, datetime):
        return json.dumps(value.isoformat())
    if isinstance(value, Mapping):
        items = (f"{json.dumps(str(k))}:{_render(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_render(v) for v in value) + "]"
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any) -> str:
    """Compact JSON; ``Decimal`` as a number, ``datetime`` as ISO 8601."""
    return _render(value)
