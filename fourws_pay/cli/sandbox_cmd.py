"""``fourws-pay sandbox``: serve the 4WS simulator and script its faults.

``serve`` runs the sandbox on loopback for a shop's own development; ``fault`` and
``process`` talk to a served sandbox's control API (``/_sandbox/...``) at ``--base-url``.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer

from fourws_pay.api import wirejson
from fourws_pay.cli import output
from fourws_pay.cli.config import get_state
from fourws_pay.errors import APIFailure, ConnectError, InvalidInputError, MalformedResponseError

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
            specs.append(parse_fault_spec(text))
        except ValueError as exc:
            raise InvalidInputError(f"--fault: {exc}") from None
    try:
        serve_sandbox(host=host, port=port, seed=seed, faults=specs)
    except ValueError as exc:  # non-loopback host, unknown seed or fault
        raise InvalidInputError(str(exc)) from None


def _control(ctx: typer.Context, method: str, path: str, body: Any = None) -> Any:
    """Call the served sandbox's control API and return its JSON answer."""
    base = get_state(ctx).settings().documents_base_url
    content = wirejson.dumps(body).encode() if body is not None else None
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
            "before_response."
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
        bool, typer.Option("--after-enqueue", help="Fail after the work was queued.")
    ] = False,
    copies: Annotated[int | None, typer.Option("--copies", min=1)] = None,
    barcode: Annotated[str | None, typer.Option("--barcode", help="For in_shop_spend.")] = None,
    amount: Annotated[str | None, typer.Option("--amount", help="For in_shop_spend.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Inject a fault into the next call(s) of an endpoint of a served sandbox."""
    spec: dict[str, Any] = {"kind": kind, "endpoint": endpoint, "times": times}
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
    if after_enqueue:
        spec["after_enqueue"] = True
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
