"""``fourws-pay vouchers``: a customer's loyalty vouchers, all pages, as a table or JSON."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from fourws_pay.api.models import LoyaltyVoucher
from fourws_pay.cli import output
from fourws_pay.cli.config import get_state
from fourws_pay.errors import InvalidInputError
from fourws_pay.money import DEFAULT_DECIMALS

app = typer.Typer(help="Read customers' loyalty vouchers.", no_args_is_help=True)


def parse_when(text: str, option: str, now: datetime) -> datetime:
    """ISO date or date-time; without a zone it is UTC (4WS works in GMT).

    Also accepts a relative duration back from now: ``30m``, ``12h``, ``7d``.
    """
    value = text.strip()
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if value[-1:] in units and value[:-1].isdigit():
        return now - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(
            f"{option}: expected a date (2026-01-31), a date-time (2026-01-31T10:00) or a "
            f"duration (7d, 12h), got {text[:30]!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def voucher_record(voucher: LoyaltyVoucher, reveal: bool, now: datetime) -> dict[str, Any]:
    return {
        "id": voucher.id,
        "barcode": output.show_code(voucher.barcode, reveal),
        "card_barcode": output.show_code(voucher.card_barcode, reveal),
        # vouchers carry no decimalNumber: written with the currency's usual two digits
        "amount": output.padded(voucher.total_amount, DEFAULT_DECIMALS),
        "currency": voucher.currency,
        "status": voucher.document_status,
        "usable": voucher.is_usable(now),
        "valid_from": voucher.confirmation_date_order,
        "valid_to": voucher.end_validity,
        "customer": voucher.subject_denomination,
    }


@app.command("list")
def list_vouchers(
    ctx: typer.Context,
    card: Annotated[
        str | None,
        typer.Argument(help="Customer card barcode (optional with --last: then a filter)."),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="Activated on/after (date, date-time or 7d).")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Activated up to (default now).")] = None,
    last: Annotated[
        str | None,
        typer.Option("--last", help="Created after this instant, any status (sync feed)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Stop after this many vouchers.")
    ] = None,
    reveal: Annotated[bool, typer.Option("--reveal", help="Show full barcodes.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List vouchers: a card's active ones, those activated in --from/--to, or --last."""
    state = get_state(ctx)
    if last is not None and (start is not None or end is not None):
        raise InvalidInputError("use either --from/--to or --last, not both")
    if end is not None and start is None:
        raise InvalidInputError("--to needs --from")
    client = state.client()
    vouchers: Iterator[LoyaltyVoucher]
    if last is not None:
        vouchers = client.last_loyalty_vouchers(parse_when(last, "--last", state.clock.now()))
        if card is not None:
            vouchers = (v for v in vouchers if v.card_barcode == card)
    elif start is not None:
        until = parse_when(end, "--to", state.clock.now()) if end is not None else state.clock.now()
        vouchers = client.loyalty_vouchers_between(
            parse_when(start, "--from", state.clock.now()), until, card_barcode=card
        )
    elif card is not None:
        vouchers = client.loyalty_vouchers(card)
    else:
        raise InvalidInputError("give a CARD barcode, or --from/--to, or --last")
    now = state.clock.now()
    records: list[dict[str, Any]] = []
    for voucher in vouchers:  # pages are fetched as this loop consumes them
        records.append(voucher_record(voucher, reveal, now))
        if limit is not None and len(records) >= limit:
            break
    if as_json:
        output.print_json(records)
        return
    output.print_table(
        f"{len(records)} vouchers",
        ("barcode", "amount", "status", "usable", "valid to", "customer"),
        (
            (
                r["barcode"],
                output.money(r["amount"], r["currency"]),
                r["status"].value,
                "yes" if r["usable"] else "no",
                output.when(r["valid_to"]),
                r["customer"] or "",
            )
            for r in records
        ),
    )
