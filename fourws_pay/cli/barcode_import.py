"""Bulk barcode import: validate a CSV, insert rows concurrently within a rate, resume later.

The engine behind ``fourws-pay barcodes import``, kept free of typer and rich so it can be
tested (and embedded) on its own.

Resumability: a JSON-lines state file records ``sending`` before each insert is posted,
``inserted`` after 4WS confirms it and ``rejected`` (with the reason) when 4WS refuses it.
A re-run skips inserted barcodes and tries the others again. A unique-constraint answer
never counts as done by itself, not even for a barcode an earlier run had sent (that
earlier run may have been refused for this very reason): the barcode is looked up and
counts as present only when 4WS has it on the requested item and dimensions. When the
lookup fails, the row is left to retry, never marked inserted.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fourws_pay.api.client import AsyncClient
from fourws_pay.clock import Clock
from fourws_pay.errors import (
    APIError,
    AuthenticationError,
    FourWSError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    TransportError,
    UniqueConstraintError,
)
from fourws_pay.sandbox.ean import ean13_check_digit

LEVELS = 5
DIMENSION_COLUMNS = tuple(f"dimension_level{i}" for i in range(1, LEVELS + 1))
COLUMNS = ("item_code", "barcode", "barcode_type", *DIMENSION_COLUMNS)
MAX_CODE_LENGTH = 250
# 4WS's symbology names are not listed (the reference shows "EAN13"): any short name of
# letters, digits, "-" and "_" is passed on; only EAN-13, EAN-8 and UPC-A are checked.
_BARCODE_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Row:
    """One valid CSV row: a barcode for the SKU ``item_code`` + ``dimensions``."""

    line: int
    item_code: str
    barcode: str
    barcode_type: str
    dimensions: tuple[str, ...]  # levels 1..n without gaps


@dataclass(frozen=True)
class Rejected:
    line: int
    item_code: str
    barcode: str
    reason: str


def _bad_code(value: str) -> bool:
    return len(value) > MAX_CODE_LENGTH or any(ord(ch) < 32 for ch in value) or "/" in value


def check_barcode(barcode: str, barcode_type: str) -> str | None:
    """Why ``barcode`` is not a valid ``barcode_type``, or None when it is."""
    kind = barcode_type.upper()
    if kind in ("EAN13", "EAN-13"):
        if len(barcode) != 13 or not (barcode.isdigit() and barcode.isascii()):
            return "EAN-13 must be exactly 13 digits"
        expected = ean13_check_digit(barcode[:12])
        if barcode[12] != expected:
            return f"EAN-13 check digit is {barcode[12]}, expected {expected}"
        return None
    if kind in ("UPCA", "UPC-A", "UPC"):
        if len(barcode) != 12 or not (barcode.isdigit() and barcode.isascii()):
            return "UPC-A must be exactly 12 digits"
        expected = ean13_check_digit("0" + barcode[:11])  # UPC-A is EAN-13 with a leading 0
        if barcode[11] != expected:
            return f"UPC-A check digit is {barcode[11]}, expected {expected}"
        return None
    if kind in ("EAN8", "EAN-8"):
        if len(barcode) != 8 or not (barcode.isdigit() and barcode.isascii()):
            return "EAN-8 must be exactly 8 digits"
        total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(barcode[:7]))
        expected = str((10 - total % 10) % 10)
        if barcode[7] != expected:
            return f"EAN-8 check digit is {barcode[7]}, expected {expected}"
        return None
    if _bad_code(barcode) or any(ch.isspace() for ch in barcode):
        return "barcode has spaces, control characters or '/', or is too long"
    return None


def check_row(line: int, record: dict[str, str]) -> Row | Rejected:
    """Validate one CSV record (values already stripped)."""
    item_code = record.get("item_code", "")
    barcode = record.get("barcode", "")
    barcode_type = record.get("barcode_type", "") or "EAN13"

    def reject(reason: str) -> Rejected:
        return Rejected(line, item_code, barcode, reason)

    if not item_code:
        return reject("item_code is empty")
    if _bad_code(item_code):
        return reject("item_code has control characters or '/', or is too long")
    if not barcode:
        return reject("barcode is empty")
    if not _BARCODE_TYPE.fullmatch(barcode_type):
        return reject("barcode_type must be a symbology name such as EAN13, EAN8 or CODE128")
    problem = check_barcode(barcode, barcode_type)
    if problem:
        return reject(problem)
    levels = [record.get(column, "") for column in DIMENSION_COLUMNS]
    while levels and not levels[-1]:
        levels.pop()
    for index, value in enumerate(levels):
        if not value:
            return reject(
                f"dimension_level{index + 1} is empty but dimension_level{len(levels)} is set"
            )
        if _bad_code(value):
            return reject(f"dimension_level{index + 1} has control characters or '/'")
    return Row(line, item_code, barcode, barcode_type.upper().replace("-", ""), tuple(levels))


def read_csv(path: Path) -> tuple[list[Row], list[Rejected]]:
    """Valid rows and rejected rows of ``path``; a bad header is an ``InvalidInputError``.

    The delimiter (``,``, ``;`` or tab) is detected; a UTF-8 BOM is ignored. A barcode that
    appears twice is rejected on its second line (a barcode belongs to one SKU only).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot read it as UTF-8 text ({exc})") from None
    first_line = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first_line.count)
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    header = [name.strip().lower() for name in reader.fieldnames or []]
    missing = [c for c in ("item_code", "barcode") if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(unknown)}")
        raise InvalidInputError(f"{path}: {'; '.join(parts)} (expected {', '.join(COLUMNS)})")
    rows: list[Row] = []
    rejected: list[Rejected] = []
    first_seen: dict[str, int] = {}
    for index, raw in enumerate(reader):
        line = index + 2
        record = {
            (k or "").strip().lower(): (v or "").strip()
            for k, v in raw.items()
            if isinstance(v, str | type(None))
        }
        if None in raw:  # more cells than columns
            rejected.append(
                Rejected(
                    line,
                    record.get("item_code", ""),
                    record.get("barcode", ""),
                    "more cells than columns",
                )
            )
            continue
        result = check_row(line, record)
        if isinstance(result, Row):
            earlier = first_seen.setdefault(result.barcode, line)
            if earlier != line:
                result = Rejected(
                    line, result.item_code, result.barcode, f"barcode already on line {earlier}"
                )
        (rows if isinstance(result, Row) else rejected).append(result)  # type: ignore[arg-type]
    return rows, rejected


class StateFile:
    """Append-only JSON lines: what earlier runs sent and what 4WS confirmed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.inserted: set[str] = set()
        self.sent_before: set[str] = set()
        self.rejected: dict[str, str] = {}  # barcode -> 4WS's last refusal
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        torn = 0
        for line in lines:
            try:
                entry = json.loads(line)
                barcode, status = str(entry["barcode"]), entry["status"]
            except (ValueError, KeyError, TypeError):
                torn += 1  # a line cut short by a crash mid-write
                continue
            if status == "inserted":
                self.inserted.add(barcode)
            else:
                self.sent_before.add(barcode)
            if status == "rejected":
                self.rejected[barcode] = str(entry.get("reason", ""))
            elif status == "inserted":
                self.rejected.pop(barcode, None)
        if lines and torn == len(lines):
            raise InvalidInputError(f"{path} is not an import state file")
        self._handle = path.open("a", encoding="utf-8")
        if lines and not path.read_bytes().endswith(b"\n"):
            self._handle.write("\n")

    def record(
        self, row: Row, status: str, prog_id: str | None = None, reason: str | None = None
    ) -> None:
        entry = {"barcode": row.barcode, "item_code": row.item_code, "status": status}
        if prog_id is not None:
            entry["prog_id"] = prog_id
        if reason is not None:
            entry["reason"] = reason
        self._handle.write(json.dumps(entry) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class RateLimiter:
    """At most ``rate`` starts per second across tasks, and a shared pause after a 429.

    Waiting goes through the injected clock, so tests with a ``ManualClock`` never sleep.
    """

    def __init__(self, rate: float, clock: Clock) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._next = clock.monotonic()

    async def acquire(self) -> None:
        now = self._clock.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await self._clock.asleep(slot - now)

    def pause(self, seconds: float) -> None:
        """Nobody starts a request for ``seconds`` (4WS asked us to wait)."""
        self._next = max(self._next, self._clock.monotonic() + seconds)


@dataclass
class ImportReport:
    total_rows: int = 0
    invalid: list[Rejected] = field(default_factory=list)
    skipped: int = 0  # inserted by an earlier run
    inserted: int = 0
    already_present: int = 0  # unique constraint, but the barcode is ours / on this SKU
    rejected: list[Rejected] = field(default_factory=list)  # refused by 4WS
    failed: list[Rejected] = field(default_factory=list)  # transient; a re-run retries them
    waits: list[float] = field(default_factory=list)  # retry intervals honoured


class Importer:
    """Inserts rows with at most ``concurrency`` requests in flight and ``rate`` per second.

    asyncio rather than threads: the work is waiting on 4WS, and one event loop keeps the
    rate limiter, the shared pause after a 429 and the report free of locks.
    """

    def __init__(
        self,
        client: AsyncClient,
        clock: Clock,
        state: StateFile,
        *,
        concurrency: int = 4,
        rate: float = 10.0,
        max_retries: int = 5,
        default_wait: float = 1.0,
    ) -> None:
        self.client = client
        self.clock = clock
        self.state = state
        self.concurrency = max(1, concurrency)
        self.limiter = RateLimiter(rate, clock)
        self.max_retries = max_retries
        self.default_wait = default_wait

    async def run(
        self,
        rows: Iterable[Row],
        report: ImportReport,
        on_done: Callable[[], None] | None = None,
    ) -> ImportReport:
        todo: list[Row] = []
        for row in rows:
            if row.barcode in self.state.inserted:
                report.skipped += 1
            else:
                todo.append(row)
        pending = iter(todo)

        async def worker() -> None:
            for row in pending:  # workers share one iterator: each row is taken once
                await self._insert(row, report)
                if on_done is not None:
                    on_done()

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(todo)))))
        return report

    async def _insert(self, row: Row, report: ImportReport) -> None:
        self.state.record(row, "sending")
        for attempt in range(self.max_retries + 1):
            await self.limiter.acquire()
            try:
                inserted = await self.client.insert_barcode(
                    row.item_code,
                    row.barcode,
                    dimensions=row.dimensions,
                    barcode_type=row.barcode_type,
                )
            except RateLimitedError as exc:
                wait = exc.retry_after if exc.retry_after is not None else self.default_wait
                report.waits.append(wait)
                self.limiter.pause(wait)
                if attempt == self.max_retries:
                    self._add(report.failed, row, f"rate limited {attempt + 1} times")
                continue
            except (AuthenticationError, PermissionDeniedError):
                # Not this row's fault: every row would be refused the same way, and
                # recording them as rejected would hide them from the re-run that follows
                # the fix. The import stops; the row stays "sending" (resumable).
                raise
            except UniqueConstraintError as exc:
                await self._already_there(row, report, exc)
                return
            except NotFoundError as exc:
                # A SKU is the item plus its dimensions: 4WS may say "product not found"
                # for either part, so the row's whole SKU is named.
                dims = "/".join(row.dimensions) or "no dimensions"
                self._reject(
                    report,
                    row,
                    f"unknown SKU {row.item_code} ({dims}): 4WS has no such item or variant "
                    f"({exc.message})",
                )
                return
            except TransportError as exc:
                self._add(report.failed, row, f"4WS unreachable: {exc}")
                return
            except APIError as exc:
                if (exc.status_code or 0) >= 500:
                    self._add(report.failed, row, exc.message)
                else:
                    self._reject(report, row, exc.message)
                return
            self.state.record(row, "inserted", inserted.prog_id)
            report.inserted += 1
            return

    async def _already_there(
        self, row: Row, report: ImportReport, exc: UniqueConstraintError
    ) -> None:
        """4WS already has this barcode: done only if it is on the requested SKU."""
        try:
            sku = await self.client.sku_from_barcode(row.barcode)
        except NotFoundError:
            self._reject(report, row, f"already exists in 4WS: {exc.message}")
            return
        except FourWSError as lookup:
            # Cannot tell whose barcode it is: never count it as ours; a re-run retries.
            self._add(report.failed, row, f"already exists; could not check its item: {lookup}")
            return
        theirs = tuple(v for v in (getattr(sku, c) for c in DIMENSION_COLUMNS) if v is not None)
        if sku.item_code != row.item_code or theirs != row.dimensions:
            where = sku.item_code if theirs == row.dimensions else f"{sku.item_code} {theirs}"
            self._reject(report, row, f"already used by item {where}")
            return
        self.state.record(row, "inserted")
        report.already_present += 1

    def _reject(self, report: ImportReport, row: Row, reason: str) -> None:
        """4WS refused the row: reported, and written to the state file with the reason."""
        self._add(report.rejected, row, reason)
        self.state.record(row, "rejected", reason=reason)

    @staticmethod
    def _add(target: list[Rejected], row: Row, reason: str) -> None:
        target.append(Rejected(row.line, row.item_code, row.barcode, reason))


def write_rejections(path: Path, rejected: Iterable[Rejected]) -> None:
    """The rows to fix, with the reason, in the order of the input file."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "item_code", "barcode", "reason"])
        for r in sorted(rejected, key=lambda r: r.line):
            writer.writerow([r.line, r.item_code, r.barcode, r.reason])
