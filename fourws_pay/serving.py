"""Serve an ASGI app on a local socket with uvicorn, from a background thread or in the
calling one: the one helper behind the served sandbox, the CLI's callback listener and the
test callback receiver.

The socket is bound in the constructor, so ``port`` and ``url`` are known before serving
starts (a command hands its callback URL to 4WS first, then listens); ``start()`` returns
only once uvicorn accepts connections, so nobody races the listener. Nothing here chooses
an address: callers that must stay on loopback check that themselves.

Not imported by ``import fourws_pay``: it needs uvicorn (the ``sandbox`` extra).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import uvicorn

from fourws_pay.errors import ConfigurationError


class _Server(uvicorn.Server):
    """uvicorn reports readiness only through a flag; this calls back instead of polling."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


def _bind(host: str, port: int) -> socket.socket:
    """A bound socket, or ``ConfigurationError`` (port taken, address not on this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP; with proto 0, Nagle + delayed ACK add ~40 ms per answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


class ThreadServer:
    """``app`` served on ``host:port`` (port 0: any free port); a port that cannot be bound
    is a ``ConfigurationError`` at construction.

    ``start()``/``stop()`` (or ``with``) serve from a daemon thread; ``run()`` serves in the
    calling thread until ``stop()`` or Ctrl-C. ``on_started`` runs once connections are
    accepted. ``options`` go to ``uvicorn.Config`` (``lifespan``, ``log_level``, ...).
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "fourws-server",
        on_started: Callable[[], None] | None = None,
        **options: Any,
    ) -> None:
        self.host = host
        self.name = name
        self._socket = _bind(host, port)
        self.port = int(self._socket.getsockname()[1])
        options.setdefault("log_level", "warning")
        options.setdefault("lifespan", "off")
        options.setdefault("access_log", False)  # paths carry callback tokens
        options.setdefault("interface", "asgi3")  # uvicorn guesses wrong for bound methods
        config = uvicorn.Config(app, host=host, port=self.port, **options)
        self._ready = threading.Event()
        self.on_started = on_started
        self.server = _Server(config, self._started)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _started(self) -> None:
        if self.on_started is not None:
            self.on_started()
        self._ready.set()

    def run(self) -> None:
        """Serve in this thread until ``stop()`` (from another thread) or a signal."""
        try:
            self.server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def start(self, timeout: float = 10.0) -> Self:
        """Serve from a daemon thread; returns once connections are accepted."""
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"{self.name} did not start on {self.url}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to finish (open requests get its graceful shutdown) and wait."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["ThreadServer"]
