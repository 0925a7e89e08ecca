"""The ``fourws-pay`` command (typer + rich); the library itself never imports this package.

One module per command group: ``giftcard``, ``vouchers``, ``barcodes``, ``sandbox_cmd``,
``ledger_cmd`` (reservations, reconcile) and ``demo``; ``main`` holds the root app, global
options and the error-to-exit-code mapping (``exitcodes``).

This module itself imports nothing of that stack: it is the console script's entry point
(``run``), so that a ``pip install fourws-pay`` without the ``[cli]`` extra gets one line
saying what to install instead of a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib.util
import sys

# What the ``cli`` extra (and the ``sandbox`` extra it pulls in) installs, by import name.
CLI_EXTRA_MODULES = frozenset({"typer", "click", "rich", "dotenv", "starlette", "uvicorn"})
CLI_EXTRA_HINT = 'pip install "fourws-pay[cli]"'


def missing_extra_module() -> str | None:
    """The first module of the extra that cannot be found (looked up, not imported), so a
    command that imports one late (``dotenv`` for ``.env``) fails at start, not midway."""
    for name in sorted(CLI_EXTRA_MODULES):
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # a finder refusing it; sys.modules[name] None
            return name
    return None


def _refuse(missing: str) -> None:
    from fourws_pay.cli.exitcodes import CONFIGURATION

    sys.stderr.write(
        f"fourws-pay: the command needs the [cli] extra ({missing} is not installed): "
        f"{CLI_EXTRA_HINT}\n"
    )
    sys.exit(CONFIGURATION)


def run() -> None:
    """Console-script entry point: the command, or a one-line hint when its extra is absent.

    Exits 3 (configuration, as ``fourws_pay.cli.exitcodes.CONFIGURATION``) without the
    extra; a missing module that the extra does not provide is a bug and keeps its traceback.
    """
    missing = missing_extra_module()
    if missing is not None:
        _refuse(missing)
    try:
        from fourws_pay.cli.main import run as run_command
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if top not in CLI_EXTRA_MODULES:
            raise
        _refuse(top)  # a module of the extra half there (find_spec saw it, import failed)
    run_command()
