"""Rendering: rich tables for people, JSON for scripts, and barcode masking for both.

JSON output keeps money exact: ``Decimal`` is written as a string (``"25.00"``), never as a
float. Barcodes are masked (last 4 characters) unless the user passed ``--reveal``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fourws_pay.logs import mask_barcode


def jsonable(value: Any) -> Any:
    """``value`` made of JSON types only: Decimal -> str, datetime -> ISO 8601, models -> dict."""
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(mode="python"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(value: Any) -> str:
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False)


PIPE_WIDTH = 160


def stdout() -> Console:
    """A console on the *current* ``sys.stdout`` (CliRunner swaps it per invocation).

    Piped output gets a wide fixed width so that ids and codes are not folded in logs.
    """
    console = Console(file=sys.stdout, soft_wrap=False, highlight=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def stderr() -> Console:
    return Console(file=sys.stderr, highlight=False)


def progress(*columns: Any, hide: bool = False) -> Progress:
    """A transient progress display on stderr, shown only on a terminal (never in pipes,
    logs or tests), so stdout stays clean for ``--json``."""
    console = stderr()
    return Progress(
        *columns, console=console, transient=True, disable=hide or not console.is_terminal
    )


def print_json(value: Any) -> None:
    sys.stdout.write(dumps(value) + "\n")


def show_code(code: str | None, reveal: bool) -> str:
    """A barcode as it may appear on screen."""
    if code is None:
        return ""
    return code if reveal else mask_barcode(code)


def padded(value: Decimal, decimals: int) -> Decimal:
    """``value`` with at least ``decimals`` digits (``72.9`` -> ``72.90``), never rounded: a
    value with more digits keeps them all."""
    if value.is_finite() and int(value.as_tuple().exponent) > -decimals:
        return value.quantize(Decimal(1).scaleb(-decimals))  # only adds zeros: exact
    return value


def money(value: Decimal | None, currency: str | None = None, decimals: int | None = None) -> str:
    """An amount as the card writes it, with ``decimals`` digits when given (``padded``)."""
    if value is None:
        return ""
    if decimals is not None:
        value = padded(value, decimals)
    return f"{format(value, 'f')} {currency}".strip() if currency else format(value, "f")


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table whose cells fold instead of being cut, so values are never elided."""
    result = Table(title=title, title_justify="left")
    for column in columns:
        result.add_column(column, overflow="fold")
    for row in rows:
        result.add_row(*("" if cell is None else str(cell) for cell in row))
    return result


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    stdout().print(table(title, columns, rows))


def key_values(title: str, pairs: Iterable[tuple[str, Any]]) -> None:
    """A two-column table for one record (a card, a report)."""
    print_table(title, ("field", "value"), ((k, v) for k, v in pairs))
