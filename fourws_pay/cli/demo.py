"""``fourws-pay demo``: the documented E-commerce & Gift Card use case, end to end."""

from __future__ import annotations

import typer


def demo(ctx: typer.Context) -> None:
    """Run the E-commerce & Gift Card story on the embedded sandbox and ledger."""
