"""``fourws-pay sandbox``: serve the 4WS simulator and script its faults."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run the 4WS sandbox (simulator) locally.", no_args_is_help=True)
