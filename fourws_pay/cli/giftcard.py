"""``fourws-pay giftcard``: look up, activate, generate and print gift cards."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

from fourws_pay.api import wirejson
from fourws_pay.api.client import Client
from fourws_pay.api.core import parse_model
from fourws_pay.api.models import (
    GeneratedGiftCard,
    GenerateGiftCardsResult,
    GiftCard,
    GiftCardPdf,
    GiftCardUpdate,
    UpdateGiftCardResult,
)
from fourws_pay.cli import output
from fourws_pay.cli.config import get_state
from fourws_pay.cli.receiver import CallbackListener
from fourws_pay.errors import (
    AmbiguousOutcomeError,
    APIFailure,
    InvalidInputError,
    InvalidStateError,
    MalformedResponseError,
    NotFoundError,
    RequestTimeout,
)
from fourws_pay.money import quantize, to_decimal

app = typer.Typer(help="Look up, activate, generate and print gift cards.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
RevealOpt = Annotated[
    bool, typer.Option("--reveal", help="Show full barcodes (masked to the last 4 by default).")
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for 4WS's callback.")
]
ListenOpt = Annotated[
    str, typer.Option("--listen", help="host:port of the local callback receiver.")
]
PublicUrlOpt = Annotated[
    str | None,
    typer.Option("--public-url", help="URL 4WS should call when it cannot reach --listen."),
]


def card_status(card: GiftCard, now: datetime) -> str:
    """What a shop can do with the card now, by the payment rules' own dates: an expired
    or not-yet-valid card still reads ``flgActive = Y`` and a balance, but cannot pay."""
    if not card.flg_active:
        return "not active"
    if card.expiration_date is not None and now >= card.expiration_date:
        return f"EXPIRED since {output.when(card.expiration_date)} UTC"
    if card.activation_date is not None and now < card.activation_date:
        return f"not valid until {output.when(card.activation_date)} UTC"
    return "active"


def card_record(card: GiftCard, reveal: bool, now: datetime) -> dict[str, Any]:
    """The fields an operator needs, barcode masked unless ``reveal``."""
    status = card_status(card, now)
    return {
        "barcode": output.show_code(card.card_barcode, reveal),
        "status": status,
        "expired": status.startswith("EXPIRED"),
        "active": card.flg_active,
        "amount": quantize(card.amount, card.decimal_number),
        "original_amount": None
        if card.original_amount is None
        else quantize(card.original_amount, card.decimal_number),
        "currency": card.currency,
        "decimals": card.decimal_number,
        "activation_date": card.activation_date,
        "expiration_date": card.expiration_date,
        "entity_code": card.entity_code,
        "item_code": card.item_code,
        "partial_usage": card.flg_partially_usage,
        "network_usage": card.flg_network_usage,
    }


@app.command()
def show(
    ctx: typer.Context,
    barcode: Annotated[str, typer.Argument(help="The gift card's barcode.")],
    reveal: RevealOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a card's balance, validity and flags (Get Giftcard)."""
    state = get_state(ctx)
    card = state.client().get_giftcard(barcode)
    record = card_record(card, reveal, state.clock.now())
    if as_json:
        output.print_json(record)
        return
    shown = {k: v for k, v in record.items() if k != "expired"}  # the status says it
    output.key_values(
        f"Gift card {record['barcode']} ({record['status']})",
        [
            (k, output.money(v, decimals=card.decimal_number) if isinstance(v, Decimal) else v)
            for k, v in shown.items()
        ],
    )


def _parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise InvalidInputError(f"--listen must be host:port, got {listen!r}") from None


def wait_for_callback(receiver: CallbackListener, name: str, timeout: float, label: str) -> bytes:
    """Wait on ``receiver`` with a progress bar on stderr (stdout stays clean for --json)."""
    with output.progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()
    ) as progress:
        task = progress.add_task(label, total=timeout)
        return receiver.wait(
            name, timeout, on_tick=lambda elapsed: progress.update(task, completed=elapsed)
        )


def _callback_json(body: bytes, endpoint: str) -> Any:
    try:
        return wirejson.loads(body)
    except (ValueError, RecursionError):
        raise MalformedResponseError("callback body is not JSON", endpoint=endpoint) from None


def _existing_card(client: Client, barcode: str) -> GiftCard | None:
    """The card as 4WS has it, or None when 4WS does not know it yet.

    Whether Get Giftcard finds a generated card before its activation is not documented;
    the sandbox activates unknown barcodes, so "not found" must not stop an activation.
    """
    try:
        return client.get_giftcard(barcode)
    except NotFoundError:
        return None
    except APIFailure as exc:
        if "not found" in exc.message.lower():
            return None
        raise


@app.command()
def activate(
    ctx: typer.Context,
    barcode: Annotated[str, typer.Argument(help="The (generated) card to activate.")],
    amount: Annotated[str, typer.Option("--amount", help="Card value, e.g. 50.00.")],
    entity_code: Annotated[
        str | None, typer.Option("--entity-code", help="Default: FOURWS_ENTITY_CODE.")
    ] = None,
    currency: Annotated[str | None, typer.Option("--currency")] = None,
    currency_symbol: Annotated[str | None, typer.Option("--currency-symbol")] = None,
    country: Annotated[str | None, typer.Option("--country")] = None,
    branch_code: Annotated[str | None, typer.Option("--branch-code")] = None,
    price_list: Annotated[str | None, typer.Option("--price-list")] = None,
    decimals: Annotated[int, typer.Option("--decimals", min=0, max=8)] = 2,
    top_up: Annotated[
        bool,
        typer.Option(
            "--top-up",
            help="Add --amount to a card that is already active (without it, an active "
            "card is refused, so re-running an activation never loads a card twice).",
        ),
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for 4WS's callback with the outcome.")
    ] = True,
    timeout: TimeoutOpt = 60.0,
    listen: ListenOpt = "127.0.0.1:0",
    public_url: PublicUrlOpt = None,
    reveal: RevealOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Activate (load) a card with a positive amount (Update Giftcard).

    The card is read first: an already active card is refused unless --top-up is given,
    and --top-up is refused on a card that is not active yet. A re-run of the same
    command is therefore safe once the first one has finished (the default waits for
    4WS's callback; with --no-wait check `giftcard show` before running it again).
    """
    state = get_state(ctx)
    value = to_decimal(amount)
    if value <= 0:
        raise InvalidInputError("--amount must be greater than zero to activate a card")
    card = _existing_card(state.client(), barcode)
    shown = output.show_code(barcode, reveal)
    active = card is not None and card.flg_active
    balance = (
        None
        if card is None
        else output.money(quantize(card.amount, card.decimal_number), card.currency)
    )
    if card is not None and active and not top_up:
        raise InvalidStateError(
            f"card {shown} is already active (balance {balance}); nothing was sent. "
            "Pass --top-up to add --amount to it"
        )
    if top_up and not active:
        raise InvalidStateError(
            f"card {shown} is not active; nothing was sent. Activate it without --top-up"
        )
    entity = entity_code or state.settings().entity_code
    if not entity:
        raise InvalidInputError("--entity-code is required (or set FOURWS_ENTITY_CODE)")
    fields: dict[str, Any] = {
        "entity_code": entity,
        "barcode": barcode,
        "amount": value,
        "decimals": decimals,
        "activation_date": state.clock.now().replace(microsecond=0),
        "currency": currency,
        "currency_symbol": currency_symbol,
        "country": country,
        "branch_code": branch_code,
        "price_list": price_list,
    }
    host, port = _parse_listen(listen)
    receiver = CallbackListener(host, port, public_url) if wait else None
    if receiver is not None:
        fields["callback"] = receiver.url("activate")
    try:
        update = GiftCardUpdate(**fields)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid activation: {exc.errors()[0]['msg']}") from None
    what = "top-up" if top_up else "activation"
    loaded = output.padded(update.amount, card.decimal_number if card else decimals)
    before = f" (balance before: {balance})" if top_up and balance else ""
    advice = (
        f"do not run the {what} again (the card could be loaded twice): check the card with "
        f"`fourws-pay giftcard show {barcode if reveal else 'CARD'}`; it is applied once the "
        f"balance shows {output.money(loaded, card.currency if card else currency)} "
        f"more{before}"
    )

    def send() -> Any:
        try:
            return state.client().update_giftcard(update)
        except AmbiguousOutcomeError as exc:
            raise AmbiguousOutcomeError(
                f"{exc}; the {what} may have been applied: {advice}",
                endpoint="update_giftcard",
            ) from None

    result: dict[str, Any] = {"barcode": shown, "amount": loaded, "top_up": top_up}
    if receiver is None:
        queued = send()
        result.update(queue_id=queued.queue_id, state="enqueued")
    else:
        with receiver:
            queued = send()
            try:
                body = wait_for_callback(receiver, "activate", timeout, "waiting for 4WS")
            except RequestTimeout as exc:
                # 4WS has the update: a re-run would load the card twice, so this is
                # ambiguous (exit 9), never "retry later" (exit 8).
                raise AmbiguousOutcomeError(
                    f"the {what} was queued (queue id {queued.queue_id}) but {exc}; it "
                    f"may still be applied: {advice}",
                    endpoint="update_giftcard",
                ) from None
        outcome = parse_model(
            UpdateGiftCardResult, _callback_json(body, "activate"), endpoint="update_giftcard"
        )
        if not outcome.success:
            raise APIFailure(outcome.message or "activation failed", endpoint="update_giftcard")
        done = "topped_up" if top_up else "activated"
        result.update(queue_id=queued.queue_id, state=done, id=outcome.id)
    if as_json:
        output.print_json(result)
    else:
        output.key_values(
            "Top-up" if top_up else "Activation",
            [(k, output.money(v) if isinstance(v, Decimal) else v) for k, v in result.items()],
        )


def write_generated(cards: list[GeneratedGiftCard], path: Path) -> None:
    """Write generated barcodes to CSV or JSON (by extension); this file holds them in full."""
    rows = [
        {
            "barcode": c.barcode,
            "start_validity": c.start_validity.isoformat() if c.start_validity else "",
            "end_validity": c.end_validity.isoformat() if c.end_validity else "",
        }
        for c in cards
    ]
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["barcode", "start_validity", "end_validity"])
        writer.writeheader()
        writer.writerows(rows)


@app.command()
def generate(
    ctx: typer.Context,
    item_code: Annotated[str, typer.Option("--item-code", help="The gift-card product.")],
    count: Annotated[int, typer.Option("--count", min=1, max=10_000)],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="CSV or JSON file for the barcodes (default: timestamped CSV)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out.")] = False,
    timeout: TimeoutOpt = 120.0,
    listen: ListenOpt = "127.0.0.1:0",
    public_url: PublicUrlOpt = None,
    reveal: RevealOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate new card barcodes; waits for 4WS's callback and writes them to a file."""
    state = get_state(ctx)
    if out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        out = Path(f"giftcards-{item_code}-{stamp}.csv")
    if out.exists() and not force:
        raise InvalidInputError(f"{out} exists; pass --force to overwrite it")
    host, port = _parse_listen(listen)
    with CallbackListener(host, port, public_url) as receiver:
        queued = state.client().generate_giftcards(item_code, count, receiver.url("generate"))
        body = wait_for_callback(
            receiver, "generate", timeout, f"waiting for {count} barcodes from 4WS"
        )
    result = parse_model(
        GenerateGiftCardsResult, _callback_json(body, "generate"), endpoint="generate_giftcards"
    )
    if not result.success:
        raise APIFailure(result.message or "generation failed", endpoint="generate_giftcards")
    write_generated(result.giftcards, out)
    summary = {
        "queue_id": queued.queue_id,
        "item_code": item_code,
        "requested": count,
        "generated": len(result.giftcards),
        "file": out,
        "barcodes": [output.show_code(c.barcode, reveal) for c in result.giftcards],
    }
    if as_json:
        output.print_json(summary)
        return
    output.print_table(
        f"{len(result.giftcards)} barcodes for {item_code} written to {out}",
        ("barcode", "valid from", "valid to"),
        (
            (
                output.show_code(c.barcode, reveal),
                output.when(c.start_validity),
                output.when(c.end_validity),
            )
            for c in result.giftcards
        ),
    )


@app.command()
def pdf(
    ctx: typer.Context,
    barcodes: Annotated[list[str], typer.Argument(help="One or more card barcodes.")],
    wait: Annotated[
        bool,
        typer.Option("--wait/--no-wait", help="If 4WS answers with a queue id, wait for the URL."),
    ] = False,
    timeout: TimeoutOpt = 60.0,
    listen: ListenOpt = "127.0.0.1:0",
    public_url: PublicUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask 4WS for a printable PDF of the cards and print its download URL."""
    state = get_state(ctx)
    result: dict[str, Any]
    if wait:
        host, port = _parse_listen(listen)
        with CallbackListener(host, port, public_url) as receiver:
            answer = state.client().giftcard_pdf(barcodes, callback=receiver.url("pdf"))
            body = None
            if not answer.url:
                body = wait_for_callback(receiver, "pdf", timeout, "waiting for the PDF")
        url = answer.url
        if body is not None:
            data = _callback_json(body, "giftcard_pdf")
            if not isinstance(data, dict) or data.get("success") is not True:
                message = data.get("message") if isinstance(data, dict) else None
                raise APIFailure(str(message or "PDF generation failed"), endpoint="giftcard_pdf")
            url = parse_model(GiftCardPdf, data, endpoint="giftcard_pdf").url
        result = {"url": url, "queue_id": answer.queue_id, "cards": len(barcodes)}
    else:
        answer = state.client().giftcard_pdf(barcodes)
        result = {"url": answer.url, "queue_id": answer.queue_id, "cards": len(barcodes)}
    if as_json:
        output.print_json(result)
    elif result["url"]:
        typer.echo(result["url"])
    else:
        typer.echo(f"PDF queued by 4WS (queue id {result['queue_id']}); rerun with --wait")
