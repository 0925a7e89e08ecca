"""Serve the sandbox over loopback HTTP with uvicorn, and process its queue by itself.

``serve()`` blocks (it is what ``fourws-pay sandbox serve`` runs); ``start_in_thread()``
returns a running ``ServedSandbox`` for tests and benchmarks (``port=0`` picks a free
port). In both, a background task calls ``aprocess_queue()`` every ``worker_interval``
seconds, so queued updates are applied and callbacks POSTed over HTTP (httpx) as the
sandbox clock allows, without anyone calling ``process_queue()``.

Only loopback addresses are accepted: the sandbox has no real authentication on its
control API and must never listen on a public interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import sys
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

from starlette.types import Receive, Scope, Send

from fourws_pay.logs import get_logger
from fourws_pay.sandbox.app import SandboxHang, SandboxReset
from fourws_pay.sandbox.faults import parse_fault_spec
from fourws_pay.sandbox.sandbox import Sandbox
from fourws_pay.serving import ThreadServer
from fourws_pay.settings import Settings

log = get_logger(component="sandbox.server")


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"the sandbox only listens on loopback (127.0.0.1, ::1), not {host!r}")


class _QuietFaults(logging.Filter):
    """uvicorn logs a traceback when an app aborts a connection; for the sandbox's own
    ``hang``/``reset`` faults that abort is the point, so those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SandboxHang | SandboxReset)


def _quiet_fault_tracebacks() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietFaults) for f in logger.filters):
        logger.addFilter(_QuietFaults())


class QueueWorker:
    """ASGI wrapper whose lifespan runs the queue worker next to the app."""

    def __init__(self, sandbox: Sandbox, interval: float) -> None:
        self.sandbox = sandbox
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.sandbox.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._task = asyncio.create_task(self._work())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._task is not None:
                    self._task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._task
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _work(self) -> None:
        while True:
            try:
                await self.sandbox.aprocess_queue()
            except Exception as exc:  # keep serving; the error is the sandbox's own bug
                log.error("sandbox.worker.error", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.interval)


class ServedSandbox:
    """A sandbox being served; ``url`` and ``settings`` point a client at it."""

    def __init__(self, sandbox: Sandbox, server: ThreadServer) -> None:
        self.sandbox = sandbox
        self.server = server
        self.host = server.host
        self.port = server.port
        sandbox.public_base_url = self.url

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def settings(self) -> Settings:
        """The sandbox's settings with this server's URL for both APIs."""
        return self.sandbox.settings.model_copy(
            update={"documents_base_url": self.url, "data_base_url": None}
        )

    def env(self) -> dict[str, str]:
        """``FOURWS_*`` variables for a shop process pointed at this server."""
        return self.sandbox.settings_env(self.url)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.stop(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _build(
    sandbox: Sandbox | None,
    seed: str | None,
    faults: Iterable[str | dict[str, Any]],
    options: dict[str, Any],
) -> Sandbox:
    sb = sandbox or Sandbox(seed=seed, **options)
    for spec in faults:
        sb.faults.add_spec(parse_fault_spec(spec) if isinstance(spec, str) else spec)
    return sb


def _server(
    sandbox: Sandbox, host: str, port: int, worker_interval: float, log_level: str
) -> ThreadServer:
    _check_loopback(host)
    _quiet_fault_tracebacks()
    return ThreadServer(
        QueueWorker(sandbox, worker_interval),
        host=host,
        port=port,
        name="fourws-sandbox",
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )


def start_in_thread(
    sandbox: Sandbox | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: str | None = "demo",
    faults: Iterable[str | dict[str, Any]] = (),
    worker_interval: float = 0.02,
    log_level: str = "warning",
    startup_timeout: float = 10.0,
    **options: Any,
) -> ServedSandbox:
    """Serve on a background thread; returns once the socket listens. Stop with
    ``.stop()`` or use it as a context manager. ``options`` go to ``Sandbox(...)``."""
    sb = _build(sandbox, seed, faults, options)
    served = ServedSandbox(sb, _server(sb, host, port, worker_interval, log_level))
    served.server.start(startup_timeout)
    return served


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    seed: str | None = "demo",
    *,
    sandbox: Sandbox | None = None,
    faults: Iterable[str | dict[str, Any]] = (),
    worker_interval: float = 0.05,
    log_level: str = "info",
    on_ready: Callable[[ServedSandbox], None] | None = None,
    **options: Any,
) -> None:
    """Serve until interrupted (Ctrl-C). ``faults`` are specs like
    ``"update_giftcard:hang:seconds=20"`` (see ``parse_fault_spec``). ``on_ready`` gets
    the running ``ServedSandbox``; by default its URL and ``FOURWS_*`` settings are
    printed so a shop can point at it."""
    sb = _build(sandbox, seed, faults, options)
    served = ServedSandbox(sb, _server(sb, host, port, worker_interval, log_level))
    served.server.on_started = lambda: (on_ready or _print_banner)(served)
    served.server.run()


def _print_banner(served: ServedSandbox) -> None:
    lines = [f"4WS sandbox listening on {served.url}", "Point fourws-pay at it with:"]
    lines += [f"  export {k}={v}" for k, v in served.env().items()]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


__all__ = ["QueueWorker", "ServedSandbox", "serve", "start_in_thread"]
