"""Drive ``fourws-pay`` through typer's CliRunner against the in-process sandbox.

``invoke(*args)`` runs one command with a ``Runtime`` that wires every client to the
sandbox (its clock is a ``ManualClock``, so nothing sleeps) and reads settings only from
the sandbox's ``FOURWS_*`` variables plus a per-test ledger file, never from the developer's
shell or ``.env``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from fourws_pay.api.client import AsyncClient, Client
from fourws_pay.cli.config import Runtime
from fourws_pay.cli.main import app
from fourws_pay.clock import Clock, ManualClock
from fourws_pay.sandbox import Sandbox
from fourws_pay.sandbox.server import ServedSandbox, start_in_thread
from fourws_pay.settings import Settings

Invoke = Callable[..., Result]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sandbox(clock: ManualClock) -> Sandbox:
    return Sandbox(clock=clock, seed="demo")


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def environ(sandbox: Sandbox, ledger_url: str) -> dict[str, str]:
    return {**sandbox.settings_env(), "FOURWS_LEDGER_URL": ledger_url}


@pytest.fixture
def runtime(sandbox: Sandbox, clock: ManualClock, environ: dict[str, str]) -> Runtime:
    def make_client(settings: Settings, _clock: Clock) -> Client:
        return sandbox.client(settings)

    def make_async_client(settings: Settings, _clock: Clock) -> AsyncClient:
        return sandbox.async_client(settings)

    return Runtime(
        make_client=make_client,
        make_async_client=make_async_client,
        clock=clock,
        environ=environ,
        read_dotenv=False,
    )


@pytest.fixture
def invoke(runtime: Runtime) -> Invoke:
    def run(*args: str, obj: Any = None) -> Result:
        return CliRunner().invoke(app, list(args), obj=obj or runtime)

    return run


@pytest.fixture
def served() -> Iterator[ServedSandbox]:
    """A sandbox served by uvicorn on a free loopback port, in a thread, stopped after."""
    with start_in_thread(seed="demo", startup_timeout=10.0) as running:
        yield running


@pytest.fixture
def invoke_served(served: ServedSandbox, ledger_url: str) -> Invoke:
    """Invoke with real HTTP clients pointed at the served sandbox."""
    runtime = Runtime(environ={**served.env(), "FOURWS_LEDGER_URL": ledger_url}, read_dotenv=False)

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, list(args), obj=runtime)

    return run


@pytest.fixture(autouse=True)
def _restore_library_logger() -> Iterator[None]:
    """The CLI configures the ``fourws_pay`` logger (its job); give later tests it back."""
    import logging

    logger = logging.getLogger("fourws_pay")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
