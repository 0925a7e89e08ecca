"""What staff see and do, over the ledger and 4WS, whatever console shows it.

- **Card look-up** (``find_card``): 4WS's live answer for the card (balance, flags, validity)
  beside what the ledger holds for it: its holds, its operations newest first with their
  evidence (``balance_before``) and messages, and sold cards with that barcode. The
  barcode is shown masked unless a page asks for it whole (``CardLookup.barcode`` is always
  there; consoles decide, and log who revealed it). A 4WS error is shown, not raised: the
  ledger's side is still worth seeing when 4WS is down.
- **Lists**: operations by state (``REVIEW_STATES`` first: what waits for a person), kind,
  order or the card's last digits; active holds.
- **Resolve** (``resolve``/``aresolve``): an operation in ``manual_review`` settled by a
  staff member's verdict, with a required note. Who, when and why are written on the
  operation in the transaction that settles it (``PaymentsCore.resolve_only``), so the
  card's history shows them. The page says which state it showed (``seen_state``); if the
  operation moved on since (a late 4WS callback, ``reconcile``, another operator), the
  resolve is refused with ``StaleResolveError`` naming the state it is in now, and nothing is
  written. Two resolves racing each other, or a resolve racing a callback, change the books
  once: the final compare-and-set under the card's lock (``_settle``) lets exactly one win;
  the loser gets ``StaleResolveError``.
- **Daily report** (``daily_report``): per currency, what settled that day (``settled_at`` in
  the day, in the report's time zone): captured, refunded, loaded on sold cards (issued), and
  net = captured - refunded. Money is counted from succeeded operations only; what is still
  pending is listed by the review queue, not guessed into a total. ``report_csv`` exports it.

Reads go through the store's listings (a full scan per page on SQLite: fine for a back
office's handful of requests, and the reason none of this runs inside a payment).
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from fourws_pay.api.models import GiftCard
from fourws_pay.errors import (
    FourWSError,
    InvalidInputError,
    InvalidStateError,
    StaleResolveError,
)
from fourws_pay.limits import BARCODE_MAX, require_text
from fourws_pay.logs import get_logger, mask_barcode
from fourws_pay.payments.models import (
    IssuedCard,
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)

log = get_logger(component="backoffice")

REVIEW_STATES = (OperationState.MANUAL_REVIEW, OperationState.UNKNOWN)
MAX_LISTED = 500


@dataclass(frozen=True)
class CardLookup:
    """One card as staff see it: 4WS's live answer beside the ledger's records."""

    barcode: str = field(repr=False)
    live: GiftCard | None
    live_error: str | None
    holds: tuple[Reservation, ...]
    operations: tuple[Operation, ...]  # newest first: the card's history
    sold: tuple[IssuedCard, ...]
    read_at: datetime

    def __repr__(self) -> str:  # 4WS's answer carries the whole code: never in a repr
        live = "unreadable" if self.live is None else f"{self.live.amount} {self.live.currency}"
        return (
            f"CardLookup({self.masked}, live={live}, holds={len(self.holds)},"
            f" operations={len(self.operations)})"
        )

    @property
    def masked(self) -> str:
        return mask_barcode(self.barcode)

    @property
    def held(self) -> Decimal:
        """What active holds of the ledger keep of the card (in the card's currency)."""
        return sum((h.amount for h in self.holds if h.state is ReservationState.ACTIVE), Decimal(0))

    @property
    def expired(self) -> bool:
        end = self.live.expiration_date if self.live is not None else None
        return end is not None and end <= self.read_at


@dataclass(frozen=True)
class ReportRow:
    currency: str
    captured: Decimal
    refunded: Decimal
    issued: Decimal
    captures: int
    refunds: int
    activations: int

    @property
    def net(self) -> Decimal:
        return self.captured - self.refunded


@dataclass(frozen=True)
class DailyReport:
    day: date
    zone: str
    rows: tuple[ReportRow, ...]


def _state(value: OperationState | str) -> OperationState:
    try:
        return OperationState(value)
    except ValueError:
        raise InvalidInputError(f"unknown operation state {value!r}") from None


class BackOffice:
    """Views and the resolve step, over a ``GiftCardPayments`` or ``AsyncGiftCardPayments``.

    Listings and reports only read the ledger (``payments.store``); ``find_card`` and
    ``resolve`` are for the blocking provider, ``afind_card`` and ``aresolve`` for the
    asyncio one (the same checks, the provider's own awaited calls)."""

    def __init__(self, payments: Any) -> None:
        self.payments = payments

    @property
    def _store(self) -> Any:
        return self.payments.store

    def _now(self) -> datetime:
        clock = getattr(self.payments, "clock", None)
        now = clock.now() if clock is not None else None
        return now if isinstance(now, datetime) else datetime.now(UTC)

    # -- card look-up --------------------------------------------------------------------

    @staticmethod
    def _barcode(barcode: object) -> str:
        text = require_text(
            "barcode", barcode.strip() if isinstance(barcode, str) else barcode, BARCODE_MAX
        )
        if not text:
            raise InvalidInputError("type a card number")
        return text

    def find_card(self, barcode: str) -> CardLookup:
        code = self._barcode(barcode)
        try:
            live: GiftCard | None = self.payments.client.get_giftcard(code)
            error = None
        except FourWSError as exc:
            live, error = None, _public(exc)
        return self._lookup(code, live, error)

    async def afind_card(self, barcode: str) -> CardLookup:
        code = self._barcode(barcode)
        try:
            live: GiftCard | None = await self.payments.client.get_giftcard(code)
            error = None
        except FourWSError as exc:
            live, error = None, _public(exc)
        return self._lookup(code, live, error)

    def _lookup(self, code: str, live: GiftCard | None, error: str | None) -> CardLookup:
        holds = [r for r in self._store.list_reservations() if r.barcode == code]
        operations = [op for op in self._store.list_operations() if op.barcode == code]
        sold = [c for c in self._store.list_issued_cards() if c.barcode == code]
        operations.sort(key=lambda op: (op.updated_at, op.created_at), reverse=True)
        holds.sort(key=lambda r: r.created_at, reverse=True)
        return CardLookup(
            barcode=code,
            live=live,
            live_error=error,
            holds=tuple(holds),
            operations=tuple(operations),
            sold=tuple(sold),
            read_at=self._now(),
        )

    # -- lists ---------------------------------------------------------------------------

    def operations(
        self,
        states: Iterable[OperationState | str] | None = None,
        *,
        kind: OperationKind | str | None = None,
        order_ref: str | None = None,
        card_suffix: str | None = None,
        limit: int = MAX_LISTED,
    ) -> list[Operation]:
        """Operations newest first, filtered; ``card_suffix`` matches the last digits."""
        wanted = None if states is None else [_state(s) for s in states]
        try:
            kind_filter = None if kind in (None, "") else OperationKind(str(kind))
        except ValueError:
            raise InvalidInputError(f"unknown operation kind {kind!r}") from None
        found = self._store.list_operations(wanted or None, kind_filter)
        if order_ref:
            holds = {r.id for r in self._store.list_reservations(order_ref=order_ref)}
            found = [op for op in found if op.reservation_id in holds]
        if card_suffix:
            found = [op for op in found if op.barcode.endswith(card_suffix.strip())]
        found.sort(key=lambda op: (op.updated_at, op.created_at), reverse=True)
        return list(found[: max(1, min(limit, MAX_LISTED))])

    def review_queue(self) -> list[Operation]:
        """What waits for a person: manual review first, then unknown outcomes."""
        ops = self.operations(REVIEW_STATES)
        ops.sort(key=lambda op: (op.state is not OperationState.MANUAL_REVIEW, op.created_at))
        return ops

    def active_holds(self) -> list[Reservation]:
        holds = self._store.list_reservations([ReservationState.ACTIVE])
        return sorted(holds, key=lambda r: r.created_at, reverse=True)

    # -- resolve -------------------------------------------------------------------------

    def _check(
        self, operation_id: str, note: str, actor: str, seen_state: OperationState | str | None
    ) -> None:
        if not isinstance(actor, str) or not actor.strip():
            raise InvalidInputError("a resolve needs the staff member's name (actor)")
        if not isinstance(note, str) or not note.strip():
            raise InvalidInputError("say why in a note: what did 4WS confirm?")
        op = self._store.get_operation(operation_id) if isinstance(operation_id, str) else None
        if op is None:
            raise InvalidInputError(f"no operation {operation_id!r} in the ledger")
        if seen_state is not None and op.state is not _state(seen_state):
            raise _stale(op)

    @contextlib.contextmanager
    def _stale_if_lost(self, operation_id: str) -> Iterator[None]:
        """The core's compare-and-set refused (the operation moved on after ``_check``):
        say so as ``StaleResolveError`` with the state it is in now."""
        try:
            yield
        except StaleResolveError:
            raise
        except InvalidStateError:
            raise _stale(self._store.get_operation(operation_id)) from None

    def resolve(
        self,
        operation_id: str,
        *,
        applied: bool,
        note: str,
        actor: str,
        seen_state: OperationState | str | None = OperationState.MANUAL_REVIEW,
    ) -> Operation:
        self._check(operation_id, note, actor, seen_state)
        with self._stale_if_lost(operation_id):
            done: Operation = self.payments.resolve(
                operation_id, applied=applied, note=note, actor=actor
            )
        _log_resolved(done, actor, applied)
        return done

    async def aresolve(
        self,
        operation_id: str,
        *,
        applied: bool,
        note: str,
        actor: str,
        seen_state: OperationState | str | None = OperationState.MANUAL_REVIEW,
    ) -> Operation:
        self._check(operation_id, note, actor, seen_state)
        with self._stale_if_lost(operation_id):
            done: Operation = await self.payments.resolve(
                operation_id, applied=applied, note=note, actor=actor
            )
        _log_resolved(done, actor, applied)
        return done

    # -- reports -------------------------------------------------------------------------

    def daily_report(self, day: date, zone: tzinfo = UTC) -> DailyReport:
        """What settled on ``day`` (midnight to midnight in ``zone``), per currency."""
        if not isinstance(day, date) or isinstance(day, datetime):
            raise InvalidInputError("day must be a date")
        start = datetime.combine(day, time(0), zone)
        end = start + timedelta(days=1)
        totals: dict[str, dict[str, Any]] = {}
        for op in self._store.list_operations([OperationState.SUCCEEDED]):
            settled = op.settled_at or op.updated_at
            if not start <= settled < end or op.kind is OperationKind.GENERATE:
                continue
            row = totals.setdefault(
                op.currency,
                {
                    "captured": Decimal(0),
                    "refunded": Decimal(0),
                    "issued": Decimal(0),
                    "captures": 0,
                    "refunds": 0,
                    "activations": 0,
                },
            )
            if op.kind is OperationKind.CAPTURE:
                row["captured"] += op.amount
                row["captures"] += 1
            elif op.kind is OperationKind.REFUND:
                row["refunded"] += op.amount
                row["refunds"] += 1
            elif op.kind is OperationKind.ACTIVATE:
                row["issued"] += op.amount
                row["activations"] += 1
        rows = tuple(ReportRow(currency=c, **v) for c, v in sorted(totals.items()))
        return DailyReport(day=day, zone=str(zone), rows=rows)

    @staticmethod
    def report_csv(report: DailyReport) -> str:
        """The report as CSV (one row per currency), amounts as plain decimals."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [
                "day",
                "currency",
                "captured",
                "refunded",
                "net",
                "issued",
                "captures",
                "refunds",
                "activations",
            ]
        )
        for row in report.rows:
            writer.writerow(
                [
                    report.day.isoformat(),
                    row.currency,
                    row.captured,
                    row.refunded,
                    row.net,
                    row.issued,
                    row.captures,
                    row.refunds,
                    row.activations,
                ]
            )
        return out.getvalue()


def _stale(op: Operation | None) -> StaleResolveError:
    state = op.state.value if op is not None else "gone"
    return StaleResolveError(
        f"the operation is {state} now (it moved on since the page was drawn); nothing was"
        " changed: reload the page",
        state=state,
    )


def _public(exc: FourWSError) -> str:
    """What a 4WS error says, for a staff page (errors never carry secrets or whole codes)."""
    return f"{type(exc).__name__}: {exc}"[:300]


def _log_resolved(op: Operation, actor: str, applied: bool) -> None:
    log.warning(
        "fourws_pay.backoffice.resolved",
        operation=op.id,
        card=op.masked_barcode,
        actor=actor,
        applied=applied,
        state=op.state.value,
    )
