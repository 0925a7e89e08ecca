"""``fourws-pay reservations list|sweep``, ``reconcile`` and ``resolve``: ledger upkeep.

Listing reads the ledger only (no 4WS call); ``sweep`` expires holds past their expiry;
``reconcile`` reads the cards of operations whose outcome is unknown or overdue, settles
what the balance proves, and lists what a person must look at; ``resolve`` records that
person's verdict once they have asked 4WS.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import typer

from fourws_pay.cli import exitcodes, output
from fourws_pay.cli.config import get_state
from fourws_pay.errors import InvalidInputError
from fourws_pay.ledger import LedgerStore
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)

reservations_app = typer.Typer(
    help="Inspect and expire reservations (holds).", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
RevealOpt = Annotated[bool, typer.Option("--reveal", help="Show full card barcodes.")]


IN_FLIGHT = frozenset(
    {
        OperationState.PREPARED,
        OperationState.SENDING,
        OperationState.ENQUEUED,
        OperationState.UNKNOWN,
        OperationState.MANUAL_REVIEW,
    }
)


def shown_state(r: Reservation, op: Operation | None) -> str:
    """The state an operator should read: a hold whose capture has started is no longer a
    plain ``active`` hold (its money may already be leaving the card), so it shows as
    ``capturing`` until the capture settles, or ``capture in review`` when 4WS's answer
    was lost and a person must decide."""
    if r.state is ReservationState.ACTIVE and op is not None and op.state in IN_FLIGHT:
        if op.state is OperationState.MANUAL_REVIEW:
            return "capture_in_review"
        return "capturing"
    return r.state.value


def reservation_record(r: Reservation, op: Operation | None, reveal: bool) -> dict[str, Any]:
    return {
        "id": r.id,
        "card": output.show_code(r.barcode, reveal),
        "amount": r.amount,
        "currency": r.currency,
        "order_ref": r.order_ref,
        "state": shown_state(r, op),
        "ledger_state": r.state,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "operation_id": r.operation_id,
        "operation_state": op.state if op else None,
    }


def order_of(store: LedgerStore, op: Operation) -> str | None:
    """The shop order an operation belongs to: its reservation's, or for a sold card's
    activation or generation, the sale's."""
    if op.kind in (OperationKind.CAPTURE, OperationKind.REFUND):
        reservation = store.get_reservation(op.reservation_id)
        return reservation.order_ref if reservation is not None else None
    card = store.get_issued_card(op.reservation_id)
    return card.order_ref if card is not None else None


RESOLVE_CHOICES = (
    "--applied if 4WS applied it (a capture's hold becomes captured and its order is paid; "
    "a refund's money is back on the card), or --not-applied if it did not (a capture's hold "
    "stops counting and the order must be paid another way; a refund can be asked again)"
)


def resolve_step(op_id: str) -> str:
    return f'fourws-pay resolve {op_id} --applied|--not-applied --note "what 4WS said"'


def operation_record(
    op: Operation, reveal: bool, store: LedgerStore | None = None
) -> dict[str, Any]:
    return {
        "id": op.id,
        "kind": op.kind,
        "card": output.show_code(op.barcode, reveal),
        "amount": op.amount,
        "currency": op.currency,
        "state": op.state,
        "order_ref": order_of(store, op) if store is not None else None,
        "reservation_id": op.reservation_id,
        "created_at": op.created_at,
        "deadline": op.deadline,
        "balance_before": op.balance_before,
        "message": op.message,
    }


def _operations_table(title: str, records: list[dict[str, Any]]) -> None:
    output.print_table(
        title,
        ("operation", "kind", "order", "card", "amount", "state", "created", "note"),
        (
            (
                r["id"],
                r["kind"].value,
                r["order_ref"] or "",
                r["card"],
                output.money(r["amount"], r["currency"]),
                r["state"].value,
                output.when(r["created_at"]),
                r["message"] or "",
            )
            for r in records
        ),
    )


@reservations_app.command("list")
def list_reservations(
    ctx: typer.Context,
    states: Annotated[
        list[ReservationState] | None,
        typer.Option("--state", help="Only these states (repeatable); default all."),
    ] = None,
    order_ref: Annotated[str | None, typer.Option("--order", help="Only this order.")] = None,
    reveal: RevealOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """List reservations in the ledger, newest first (reads the ledger only).

    A hold whose capture is in flight shows as ``capturing`` (``--state`` filters on the
    ledger's own state, where it is still ``active``).
    """
    payments = get_state(ctx).payments(api=False, existing_ledger=True)
    found = payments.list_reservations(states or None, order_ref=order_ref)
    # A capture in flight is not linked from its reservation yet (operation_id is set
    # when it settles): find it from the operations side.
    in_flight = {
        op.reservation_id: op
        for op in payments.list_operations(sorted(IN_FLIGHT))
        if op.kind is OperationKind.CAPTURE and op.reservation_id
    }
    records = [
        reservation_record(
            r,
            payments.get_operation(r.operation_id) if r.operation_id else in_flight.get(r.id),
            reveal,
        )
        for r in sorted(found, key=lambda r: r.created_at, reverse=True)
    ]
    if as_json:
        output.print_json(records)
        return
    output.print_table(
        f"{len(records)} reservations",
        ("id", "card", "amount", "order", "state", "expires", "operation"),
        (
            (
                r["id"],
                r["card"],
                output.money(r["amount"], r["currency"]),
                r["order_ref"],
                r["state"],
                output.when(r["expires_at"]),
                r["operation_state"].value if r["operation_state"] else "",
            )
            for r in records
        ),
    )


@reservations_app.command("sweep")
def sweep(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Mark holds past their expiry as expired (safe to run any time, e.g. from cron)."""
    payments = get_state(ctx).payments(api=False, existing_ledger=True)
    count = payments.sweep()
    if as_json:
        output.print_json({"expired": count})
    else:
        typer.echo(f"{count} reservation(s) expired")


def reconcile(
    ctx: typer.Context,
    reveal: RevealOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Resolve unknown/overdue operations from card balances; list what needs review.

    Exits 1 when operations need manual review.
    """
    payments = get_state(ctx).payments(existing_ledger=True)
    report = payments.reconcile()
    review = payments.list_operations([OperationState.MANUAL_REVIEW])  # this run's and before
    examined = [*report.succeeded, *report.failed, *report.manual_review, *report.still_pending]
    sections: dict[str, list[dict[str, Any]]] = {
        name: [operation_record(op, reveal, payments.store) for op in ops]
        for name, ops in (
            ("found", examined),
            ("succeeded", report.succeeded),
            ("failed", report.failed),
            ("still_pending", report.still_pending),
            ("manual_review", review),
        )
    }
    sold = [
        {
            "id": card.id,
            "order_ref": card.order_ref,
            "line_id": card.line_id,
            "state": card.state.value,
            "barcode": output.show_code(card.barcode, reveal) if card.barcode else None,
        }
        for card in report.issuing
    ]
    for record in sections["manual_review"]:
        record["next_step"] = resolve_step(record["id"])
    if as_json:
        output.print_json(
            {
                **sections,
                "expired_reservations": report.expired_reservations,
                "sold_cards": sold,
            }
        )
    else:
        _operations_table(f"{len(examined)} operation(s) unknown or overdue", sections["found"])
        for key, title in (
            ("succeeded", "settled as succeeded (balance moved)"),
            ("failed", "settled as failed"),
            ("still_pending", "still pending (inside the reconcile window)"),
            ("manual_review", "NEED MANUAL REVIEW"),
        ):
            if sections[key]:
                _operations_table(f"{len(sections[key])} {title}", sections[key])
        typer.echo(f"{report.expired_reservations} reservation(s) expired")
        if sold:
            states = Counter(card["state"] for card in sold)
            summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
            typer.echo(f"{len(sold)} sold card(s) carried on: {summary}")
        if not review:
            typer.echo("nothing needs manual review")
        for record in sections["manual_review"]:
            order = f"order {record['order_ref']}" if record["order_ref"] else "no order"
            typer.echo(
                f"{record['id']} ({order}, {record['kind'].value} of "
                f"{output.money(record['amount'], record['currency'])} on card "
                f"{record['card']}): ask 4WS whether it applied this balance change, then run\n"
                f"  {resolve_step(record['id'])}\n"
                f"  with {RESOLVE_CHOICES}."
            )
    if review:
        raise typer.Exit(exitcodes.FAILURE)


def _operator() -> str:
    """Who runs the command, for the record on the operation (``cli:<login>``)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"[:100]
    except (KeyError, OSError):  # no login name (a container without passwd entry)
        return "cli"


def resolve(
    ctx: typer.Context,
    operation_id: Annotated[str, typer.Argument(help="Operation id (op_...) in manual review.")],
    applied: Annotated[
        bool | None,
        typer.Option(
            "--applied/--not-applied",
            help="What 4WS says: did it apply this balance change? (required)",
            show_default=False,
        ),
    ] = None,
    note: Annotated[
        str | None, typer.Option("--note", help="Why (kept on the operation; required).")
    ] = None,
    reveal: RevealOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Settle an operation in manual review with what 4WS confirmed (after asking it)."""
    payments = get_state(ctx).payments(api=False, existing_ledger=True)
    if applied is None or note is None:
        missing = "--applied or --not-applied" if applied is None else "--note"
        raise InvalidInputError(
            f"say what 4WS confirmed ({missing} is missing); nothing was changed: "
            f"{resolve_step(operation_id)}, with {RESOLVE_CHOICES}. Until then the "
            "operation stays in manual review and its hold keeps counting"
        )
    operation = payments.resolve(operation_id, applied=applied, note=note, actor=_operator())
    record = operation_record(operation, reveal, payments.store)
    if as_json:
        output.print_json(record)
    else:
        typer.echo(f"{operation.id}: {operation.state.value} ({operation.message})")
