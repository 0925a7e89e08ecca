"""``fourws-pay sandbox``: serve the 4WS simulator and script its faults.

``serve`` runs the sandbox on loopback for a shop's own development; ``fault`` and
``process`` talk to a served sandbox's control API (``/_sandbox/...``) at ``--base-url``.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer

from fourws_pay.api import wirejson
from fourws_pay.cli import output
from fourws_pay.cli.config import get_state
from fourws_pay.errors import APIFailure, ConnectError, InvalidInputError, MalformedResponseError
from fourws_pay.money import quantize

if TYPE_CHECKING:
    from fourws_pay.sandbox.server import ServedSandbox

app = typer.Typer(help="Run the 4WS sandbox (simulator) locally.", no_args_is_help=True)
fault_app = typer.Typer(help="Script faults on a served sandbox.", no_args_is_help=True)
app.add_typer(fault_app, name="fault")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@app.command()
def serve(
    seed: Annotated[
        str, typer.Option("--seed", help="Initial data: 'demo' (sample cards) or 'empty'.")
    ] = "demo",
    host: Annotated[str, typer.Option("--host", help="Loopback address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8765,
    faults: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="Start with a fault, e.g. update_giftcard:hang:seconds=20 (repeatable).",
        ),
    ] = None,
) -> None:
    """Serve the sandbox over HTTP until Ctrl-C; it prints the FOURWS_* settings to use."""
    from fourws_pay.sandbox.faults import parse_fault_spec
    from fourws_pay.sandbox.server import serve as serve_sandbox

    specs = []
    for text in faults or []:
        try:
            specs.append(checked_spec(parse_fault_spec(text)))
        except ValueError as exc:
            raise InvalidInputError(f"--fault: {exc}") from None
    try:
        serve_sandbox(host=host, port=port, seed=seed, faults=specs, on_ready=print_banner)
    except ValueError as exc:  # non-loopback host, unknown seed or fault
        raise InvalidInputError(str(exc)) from None


def demo_cards() -> tuple[tuple[str, str], ...]:
    """What each card of the ``demo`` seed (fourws_pay.sandbox.seed) is for, in order."""
    from fourws_pay.sandbox import seed as seeds

    return (
        (seeds.EXAMPLE_CARD, "pays any order (the 4WS reference's example card)"),
        (seeds.UPDATE_EXAMPLE_CARD, "active, plenty of balance"),
        (seeds.ONE_GO_CARD, "single use: only for its whole balance"),
        (seeds.EMPTY_CARD, "active but empty"),
        (seeds.EXPIRED_CARD, "expired yesterday"),
        (seeds.INACTIVE_CARD, "not active"),
        (seeds.NOT_YET_VALID_CARD, "valid from tomorrow"),
        (seeds.USD_CARD, "US dollars"),
        (seeds.OTHER_ENTITY_CARD, "another entity's card, network use off"),
        (seeds.NEVER_ACTIVATED_CARD, "generated, never activated: try `giftcard activate`"),
    )


def demo_card_lines(served: ServedSandbox) -> list[str]:
    """One line per seeded demo card: barcode, balance, what to try it for."""
    lines = []
    for barcode, note in demo_cards():
        wire = served.sandbox.card_wire(barcode)
        if wire is None:
            continue
        decimals = int(wire.get("decimalNumber") or 2)
        amount = quantize(served.sandbox.balance(barcode), decimals)
        balance = f"{amount} {wire.get('currency') or ''}".strip()
        lines.append(f"  {barcode}  {balance:>12}  {note}")
    return lines


def print_banner(served: ServedSandbox) -> None:
    """Where the sandbox listens, the settings to point at it, and its demo cards (the
    cards are sandbox data, printed in full on purpose: they are made up)."""
    lines = [f"4WS sandbox listening on {served.url}", "Point fourws-pay at it with:"]
    lines += [f"  export {k}={v}" for k, v in served.env().items()]
    cards = demo_card_lines(served)
    if cards:
        lines += ["Demo gift cards:", *cards]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


# Faults whose failure happens only once the work is done: 4WS queued the update, then
# the answer is lost, cut short or garbled. Without after_enqueue they would do nothing.
AFTER_ENQUEUE_ONLY = frozenset({"truncated_body", "invalid_json"})
AFTER_ENQUEUE_BY_DEFAULT = frozenset({"hang", "reset", *AFTER_ENQUEUE_ONLY})


def checked_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` validated here (unknown kinds, endpoints and fields are usage errors, exit
    2, before anything is sent) with ``after_enqueue`` defaulted as ``Fault``'s own
    constructors default it (``Fault.hang()``, ``Fault.truncated_body()``...)."""
    from fourws_pay.sandbox.faults import ENDPOINT_NAMES, Fault

    spec = dict(spec)
    kind = str(spec.get("kind", ""))
    endpoint = str(spec.get("endpoint", "*"))
    if endpoint not in ENDPOINT_NAMES:
        known = ", ".join(sorted(ENDPOINT_NAMES))
        raise ValueError(f"unknown endpoint {endpoint!r} (one of {known})")
    if kind in AFTER_ENQUEUE_ONLY and spec.get("after_enqueue") is False:
        raise ValueError(
            f"{kind} garbles the answer of work already done: it needs --after-enqueue"
        )
    if kind in AFTER_ENQUEUE_BY_DEFAULT:
        spec.setdefault("after_enqueue", True)
    if "seconds" in spec:
        spec["seconds"] = float(spec["seconds"])
    fault_fields = {k: v for k, v in spec.items() if k not in ("endpoint", "times")}
    Fault.from_dict(fault_fields)  # raises ValueError for unknown kinds and fields
    return spec


def _control(ctx: typer.Context, method: str, path: str, body: Any = None) -> Any:
    """Call the served sandbox's control API and return its JSON answer."""
    base = get_state(ctx).settings().documents_base_url
    # The control API is the sandbox's own, not 4WS: plain JSON (seconds may be 0.5).
    content = json.dumps(body).encode() if body is not None else None
    try:
        response = httpx.request(
            method,
            f"{base}/_sandbox/{path}",
            content=content,
            timeout=10.0,
            headers={"Content-Type": "application/json"} if content else None,
        )
    except httpx.HTTPError as exc:
        raise ConnectError(
            f"no sandbox at {base} ({type(exc).__name__}); start one with "
            "`fourws-pay sandbox serve` or pass --base-url"
        ) from None
    try:
        data = wirejson.loads(response.content)
    except ValueError:
        raise MalformedResponseError(
            f"{base} did not answer like a sandbox (HTTP {response.status_code})"
        ) from None
    if not isinstance(data, dict) or data.get("success") is not True:
        message = data.get("message") if isinstance(data, dict) else None
        raise APIFailure(f"sandbox refused: {message or response.status_code}")
    return data


def _print_faults(data: dict[str, Any], as_json: bool) -> None:
    faults = data.get("faults", [])
    if as_json:
        output.print_json(faults)
        return
    output.print_table(
        f"{len(faults)} pending fault(s)",
        ("endpoint", "kind", "times", "seconds", "status", "after enqueue"),
        (
            (
                f["endpoint"],
                f["kind"],
                "always" if f.get("times") is None else f["times"],
                f.get("seconds"),
                f.get("status") or "",
                f.get("after_enqueue"),
            )
            for f in faults
        ),
    )


@fault_app.command("add")
def fault_add(
    ctx: typer.Context,
    kind: Annotated[
        str,
        typer.Argument(
            help="latency, http_status, rate_limited, hang, reset, truncated_body, "
            "invalid_json, success_false, in_shop_spend, drop, duplicate, delay, reorder, "
            "before_response; or a whole spec ENDPOINT:KIND[:key=value,...], e.g. "
            "update_giftcard:hang:seconds=20 (the --fault syntax of `sandbox serve`)."
        ),
    ],
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="Client endpoint name (get_giftcard, ...) or '*'.")
    ] = "*",
    times: Annotated[
        int, typer.Option("--times", min=0, help="How many calls it hits (0: until cleared).")
    ] = 1,
    seconds: Annotated[
        float | None, typer.Option("--seconds", min=0, help="Latency, Retry-After, delay.")
    ] = None,
    status: Annotated[int | None, typer.Option("--status", help="HTTP status.")] = None,
    message: Annotated[str | None, typer.Option("--message")] = None,
    after_enqueue: Annotated[
        bool | None,
        typer.Option(
            "--after-enqueue/--before-enqueue",
            help="Fail after the work was queued, or before. Default: after for hang, "
            "reset, truncated_body and invalid_json (the last two only exist after).",
            show_default=False,
        ),
    ] = None,
    copies: Annotated[int | None, typer.Option("--copies", min=1)] = None,
    barcode: Annotated[str | None, typer.Option("--barcode", help="For in_shop_spend.")] = None,
    amount: Annotated[str | None, typer.Option("--amount", help="For in_shop_spend.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Inject a fault into the next call(s) of an endpoint of a served sandbox."""
    from fourws_pay.sandbox.faults import parse_fault_spec

    spec: dict[str, Any] = {"kind": kind, "endpoint": endpoint, "times": times}
    if ":" in kind:
        try:
            spec = {"times": times, **parse_fault_spec(kind)}
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
    for name, value in (
        ("seconds", seconds),
        ("status", status),
        ("message", message),
        ("copies", copies),
        ("barcode", barcode),
        ("amount", amount),
    ):
        if value is not None:
            spec[name] = value
    if after_enqueue is not None:
        spec["after_enqueue"] = after_enqueue
    try:
        spec = checked_spec(spec)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"fault: {exc}") from None
    _print_faults(_control(ctx, "POST", "faults", spec), as_json)


@fault_app.command("list")
def fault_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show the faults still pending on a served sandbox."""
    _print_faults(_control(ctx, "GET", "faults"), as_json)


@fault_app.command("clear")
def fault_clear(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Remove every pending fault."""
    _print_faults(_control(ctx, "DELETE", "faults"), as_json)


@app.command()
def process(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Process a served sandbox's queue now (apply updates, deliver callbacks)."""
    data = _control(ctx, "POST", "process")
    data.pop("success", None)
    if as_json:
        output.print_json(data)
    else:
        output.key_values("Queue run", data.items())
