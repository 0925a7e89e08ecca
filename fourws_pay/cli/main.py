"""The ``fourws-pay`` command: the root app, global options and error handling.

Expected failures (every ``FourWSError``) end as one line on stderr and a documented exit
code (``fourws_pay.cli.exitcodes``); only a bug shows a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from fourws_pay.cli import exitcodes
from fourws_pay.cli.config import CliContext, Runtime, configure_logging
from fourws_pay.errors import FourWSError, RateLimitedError, ThrottledError


def error_line(exc: FourWSError) -> str:
    """The one line printed for an expected failure; messages are already masked."""
    line = f"fourws-pay: error: {type(exc).__name__}: {exc}"
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, RateLimitedError | ThrottledError) and retry_after is not None:
        line += f" (retry after {retry_after:g}s)"
    return line


class _Group(TyperGroup):
    """Turns library errors into one line and an exit code, whichever subcommand raised."""

    def invoke(self, ctx: Any) -> Any:  # typer's (vendored) click Context
        try:
            return super().invoke(ctx)
        except FourWSError as exc:
            sys.stderr.write(error_line(exc) + "\n")
            raise typer.Exit(exitcodes.exit_code_for(exc)) from None
        except KeyboardInterrupt:
            sys.stderr.write("fourws-pay: interrupted\n")
            raise typer.Exit(exitcodes.INTERRUPTED) from None


app = typer.Typer(
    cls=_Group,
    name="fourws-pay",
    help="Pay with 4WS Suite gift cards: demo, sandbox, card and barcode tools, ledger upkeep.",
    epilog=exitcodes.epilog(),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from fourws_pay import __version__

        typer.echo(f"fourws-pay {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="4WS Documents API base URL.")
    ] = None,
    data_url: Annotated[
        str | None, typer.Option("--data-url", help="4WS Data management API base URL.")
    ] = None,
    ledger: Annotated[
        str | None, typer.Option("--ledger", help="Ledger URL, e.g. sqlite:///ledger.db.")
    ] = None,
    callback_base_url: Annotated[
        str | None,
        typer.Option("--callback-base-url", help="Public URL 4WS posts payment callbacks to."),
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option("--env-file", help="Read FOURWS_* settings from this file (default ./.env)."),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug logs on stderr.")
    ] = 0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Settings come from FOURWS_* variables, a .env file and these flags (flags win)."""
    runtime = ctx.obj if isinstance(ctx.obj, Runtime) else Runtime()
    overrides: dict[str, Any] = {}
    for name, value in (
        ("documents_base_url", base_url),
        ("data_base_url", data_url),
        ("ledger_url", ledger),
        ("callback_base_url", callback_base_url),
    ):
        if value is not None:
            overrides[name] = value
    state = CliContext(runtime=runtime, overrides=overrides, env_file=env_file)
    ctx.obj = state
    ctx.call_on_close(state.close)
    configure_logging(verbose)


def _register() -> None:
    from fourws_pay.cli import barcodes, demo, giftcard, ledger_cmd, sandbox_cmd, vouchers

    app.add_typer(giftcard.app, name="giftcard")
    app.add_typer(vouchers.app, name="vouchers")
    app.add_typer(barcodes.app, name="barcodes")
    app.add_typer(sandbox_cmd.app, name="sandbox")
    app.add_typer(ledger_cmd.reservations_app, name="reservations")
    app.command("reconcile")(ledger_cmd.reconcile)
    app.command("resolve")(ledger_cmd.resolve)
    app.command("demo")(demo.demo)


_register()


def run() -> None:
    """Console-script entry point."""
    app()
