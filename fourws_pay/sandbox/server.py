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
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.types import Receive, Scope, Send

from fourws_pay.logs import get_logger
from fourws_pay.sandbox.app import SandboxHang, SandboxReset
from fourws_pay.sandbox.faults import parse_fault_spec
from fourws_pay.sandbox.sandbox import Sandbox
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


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[int], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.servers:
            port = self.servers[0].sockets[0].getsockname()[1]
            self._on_started(int(port))


class ServedSandbox:
    """A sandbox being served; ``url`` and ``settings`` point a client at it."""

    def __init__(self, sandbox: Sandbox, host: str) -> None:
        self.sandbox = sandbox
        self.host = host
        self.port = 0
        self.server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def settings(self) -> Settings:
        """The sandbox's settings with this server's URL for both APIs."""
        return self.sandbox.settings.model_copy(
            update={"documents_base_url": self.url, "data_base_url": None}
        )

    def env(self) -> dict[str, str]:
        """``FOURWS_*`` variables for a shop process pointed at this server."""
        return self.sandbox.settings_env(self.url)

    def _started(self, port: int) -> None:
        self.port = port
        self.sandbox.public_base_url = self.url
        self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

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


def _config(
    served: ServedSandbox, port: int, worker_interval: float, log_level: str
) -> uvicorn.Config:
    _check_loopback(served.host)
    _quiet_fault_tracebacks()
    return uvicorn.Config(
        QueueWorker(served.sandbox, worker_interval),
        host=served.host,
        port=port,
        log_level=log_level,
        lifespan="on",
        access_log=False,
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
    served = ServedSandbox(_build(sandbox, seed, faults, options), host)
    server = _Server(_config(served, port, worker_interval, log_level), served._started)
    served.server = server
    thread = threading.Thread(target=server.run, name="fourws-sandbox", daemon=True)
    served._thread = thread
    thread.start()
    if not served._ready.wait(startup_timeout):
        served.stop()
        raise RuntimeError(f"the sandbox did not start on {host}:{port}")
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
    served = ServedSandbox(_build(sandbox, seed, faults, options), host)

    def ready(port_: int) -> None:
        served._started(port_)
        (on_ready or _print_banner)(served)

    server = _Server(_config(served, port, worker_interval, log_level), ready)
    served.server = server
    server.run()


def _print_banner(served: ServedSandbox) -> None:
    lines = [f"4WS sandbox listening on {served.url}", "Point fourws-pay at it with:"]
    lines += [f"  export {k}={v}" for k, v in served.env().items()]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


__all__ = ["QueueWorker", "ServedSandbox", "serve", "start_in_thread"]
