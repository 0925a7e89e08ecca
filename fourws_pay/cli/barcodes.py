"""``fourws-pay barcodes``: bulk-import SKU barcodes from a CSV file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from fourws_pay.cli import exitcodes, output
from fourws_pay.cli.barcode_import import (
    COLUMNS,
    Importer,
    ImportReport,
    StateFile,
    read_csv,
    write_rejections,
)
from fourws_pay.cli.config import get_state

app = typer.Typer(help="Manage SKU barcodes (Data management API).", no_args_is_help=True)


@app.command("import")
def import_barcodes(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help=f"CSV with columns {', '.join(COLUMNS)} (, ; or tab).")
    ],
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=64, help="Inserts in flight.")
    ] = 4,
    rate: Annotated[
        float,
        typer.Option("--rate", min=0, help="At most this many inserts per second (0: no limit)."),
    ] = 10.0,
    state_path: Annotated[
        Path | None,
        typer.Option("--state", help="Resume file (default FILE.state.jsonl next to FILE)."),
    ] = None,
    report_path: Annotated[
        Path | None,
        typer.Option("--report", help="Rejected rows CSV (default FILE.rejected.csv)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only validate the file; send nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Validate, then insert every barcode; re-running skips what is already inserted."""
    state = get_state(ctx)
    started = time.perf_counter()
    rows, invalid = read_csv(file)
    report = ImportReport(total_rows=len(rows) + len(invalid), invalid=invalid)
    state_file = state_path or file.with_name(file.name + ".state.jsonl")
    report_file = report_path or file.with_name(file.name + ".rejected.csv")
    if not dry_run and rows:
        resume = StateFile(state_file)
        todo = len(rows)
        try:
            todo = sum(1 for r in rows if r.barcode not in resume.inserted)
            with output.progress(
                TextColumn("inserting"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                hide=as_json,
            ) as progress:
                task = progress.add_task("insert", total=todo)

                async def insert_all() -> None:
                    async with state.async_client() as client:
                        importer = Importer(
                            client, state.clock, resume, concurrency=concurrency, rate=rate
                        )
                        await importer.run(rows, report, on_done=lambda: progress.advance(task))

                asyncio.run(insert_all())
        except KeyboardInterrupt:
            done = report.inserted + report.already_present
            raise KeyboardInterrupt(
                f"interrupted after {done} of {todo} insert(s); every answered one is "
                f"recorded in {state_file}: re-run the same command to resume (nothing "
                "is inserted twice)"
            ) from None
        finally:
            resume.close()
    problems = [*report.invalid, *report.rejected, *report.failed]
    if problems:
        write_rejections(report_file, problems)
    elif not dry_run:
        report_file.unlink(missing_ok=True)  # an earlier run's rejections are all fixed now
    elapsed = time.perf_counter() - started
    summary = {
        "file": file,
        "rows": report.total_rows,
        "invalid": len(report.invalid),
        "skipped_already_inserted": report.skipped,
        "inserted": report.inserted,
        "already_present": report.already_present,
        "rejected_by_4ws": len(report.rejected),
        "failed_retry_later": len(report.failed),
        "retry_waits_honoured": len(report.waits),
        "dry_run": dry_run,
        "state_file": None if dry_run else state_file,
        "rejections_file": report_file if problems else None,
        "seconds": round(elapsed, 3),
    }
    if as_json:
        output.print_json(summary)
    else:
        output.key_values(f"Barcode import of {file}", summary.items())
        if problems:
            output.stderr().print(
                f"{len(problems)} row(s) not imported; reasons in {report_file}"
                + ("; re-run to retry the failed ones" if report.failed else "")
            )
    if problems:
        raise typer.Exit(exitcodes.FAILURE)
