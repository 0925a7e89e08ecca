"""The ``fourws-pay`` command: the root app, global options and error handling.

Expected failures (every ``FourWSError``) end as one line on stderr and a documented exit
code (``fourws_pay.cli.exitcodes``); only a bug shows a traceback. With ``--json`` the
same failure is a JSON object on stdout instead (``{"error": {"type", "message",
"exit_code", ...}}``), usage errors included, so a script reads one stream only.
"""

from __future__ import annotations

import contextvars
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from fourws_pay.api.endpoints import ENDPOINTS
from fourws_pay.cli import argv, exitcodes
from fourws_pay.cli.config import CliContext, Runtime, configure_logging
from fourws_pay.errors import (
    AuthenticationError,
    FourWSError,
    PermissionDeniedError,
    RateLimitedError,
    ThrottledError,
    TransportError,
)

_json_errors: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "fourws_pay_cli_json_errors", default=False
)

# endpoints whose errors are about ``data_url``; every other one is about the Documents API
DATA_API_ENDPOINTS = frozenset(e.name for e in ENDPOINTS if e.family == "data")


def tried_url(exc: FourWSError, state: object) -> str | None:
    """The base URL a transport error was about, when the message does not say it yet."""
    if not isinstance(exc, TransportError) or not isinstance(state, CliContext):
        return None
    settings = state.built_settings()
    if settings is None:
        return None
    endpoint = getattr(exc, "endpoint", None)
    url = settings.data_url if endpoint in DATA_API_ENDPOINTS else settings.documents_base_url
    return None if url in str(exc) else url


def hint_for(exc: FourWSError) -> str | None:
    """What the operator should check next, for failures whose fix is in the settings."""
    if isinstance(exc, AuthenticationError):
        return (
            "4WS refused the credentials: check FOURWS_USERNAME and FOURWS_PASSWORD, then "
            "FOURWS_APPLICATION_ID, FOURWS_NAMESPACE, FOURWS_COMPANY_ID and FOURWS_SITE_ID "
            "(environment, ./.env or --env-file)"
        )
    if isinstance(exc, PermissionDeniedError):
        return (
            "the 4WS user FOURWS_USERNAME lacks the permission for this call: ask your 4WS "
            "administrator, or check FOURWS_COMPANY_ID and FOURWS_SITE_ID"
        )
    return None


def error_record(exc: FourWSError, state: object = None) -> dict[str, Any]:
    """What the command says about an expected failure; messages are already masked."""
    record: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(exc),
        "exit_code": exitcodes.exit_code_for(exc),
    }
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, RateLimitedError | ThrottledError) and retry_after is not None:
        record["retry_after"] = retry_after
    url = tried_url(exc, state)
    if url is not None:
        record["url"] = url
    hint = hint_for(exc)
    if hint is not None:
        record["hint"] = hint
    for extra in ("missing", "endpoint"):
        value = getattr(exc, extra, None)
        if value:
            record[extra] = value
    return record


def error_line(exc: FourWSError, state: object = None) -> str:
    """The one line printed for an expected failure."""
    record = error_record(exc, state)
    line = f"fourws-pay: error: {record['type']}: {record['message']}"
    if "url" in record:
        line += f" (tried {record['url']})"
    if "retry_after" in record:
        line += f" (retry after {record['retry_after']:g}s)"
    if "hint" in record:
        line += f"; {record['hint']}"
    return line


def print_error(record: dict[str, Any], text: str) -> None:
    if _json_errors.get():
        sys.stdout.write(json.dumps({"error": record}, indent=2, default=str) + "\n")
    else:
        sys.stderr.write(text + "\n")


class _Group(TyperGroup):
    """Turns library errors into one line (or a JSON object) and an exit code, whichever
    subcommand raised; accepts global options after the subcommand (``argv.rewrite``)."""

    def invoke(self, ctx: Any) -> Any:  # typer's (vendored) click Context
        try:
            return super().invoke(ctx)
        except FourWSError as exc:
            print_error(error_record(exc, ctx.obj), error_line(exc, ctx.obj))
            raise typer.Exit(exitcodes.exit_code_for(exc)) from None
        except KeyboardInterrupt as exc:
            # A command may say what to do next (``KeyboardInterrupt("... re-run ...")``).
            message = str(exc) or "interrupted"
            print_error(
                {"type": "Interrupted", "message": message, "exit_code": 130},
                f"fourws-pay: {message}",
            )
            raise typer.Exit(exitcodes.INTERRUPTED) from None

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        rewritten = argv.rewrite(sys.argv[1:] if args is None else args)
        token = _json_errors.set(rewritten.json)
        try:
            if not rewritten.json:
                return super().main(
                    rewritten.args, prog_name, complete_var, standalone_mode, **extra
                )
            return self._main_json(rewritten.args, prog_name, complete_var, standalone_mode, extra)
        finally:
            _json_errors.reset(token)

    def _main_json(
        self,
        args: list[str],
        prog_name: str | None,
        complete_var: str | None,
        standalone_mode: bool,
        extra: dict[str, Any],
    ) -> Any:
        """Like ``main`` but usage errors become JSON on stdout too."""
        from typer._click.exceptions import ClickException

        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except typer.Abort:  # end of input at a prompt
            print_error({"type": "Aborted", "message": "aborted", "exit_code": 1}, "Aborted!")
            result = exitcodes.FAILURE
        except ClickException as exc:
            record = {
                "type": "UsageError",
                "message": exc.format_message(),
                "exit_code": exc.exit_code,
            }
            print_error(record, exc.format_message())
            result = exc.exit_code
        code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return result


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
        str | None,
        typer.Option(
            "--ledger", help="Ledger URL (default: sqlite:///fourws-pay-ledger.db, here)."
        ),
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
