"""A real HTTP callback receiver on loopback, for served-mode tests.

It records every POST (path, body) and answers ``status`` (200 by default). Tests wait for
callbacks with ``wait_for(n, timeout)``, which blocks on a condition variable rather than
sleeping in a loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.types import Receive, Scope, Send


@dataclass(frozen=True)
class ReceivedCallback:
    path: str
    query: str
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class CallbackReceiver:
    """``with CallbackReceiver() as rx: ... rx.url ... rx.wait_for(1)``."""

    def __init__(self, *, host: str = "127.0.0.1", status: int = 200) -> None:
        self.host = host
        self.status = status
        self.port = 0
        self.received: list[ReceivedCallback] = []
        self._cond = threading.Condition()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with self._cond:
            self.received.append(
                ReceivedCallback(scope["path"], scope.get("query_string", b"").decode(), body)
            )
            self._cond.notify_all()
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"ok": true}'})

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedCallback]:
        """Block until ``count`` callbacks arrived (or raise ``TimeoutError``)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(f"{len(self.received)} of {count} callbacks arrived")
            return list(self.received)

    def start(self) -> Self:
        config = uvicorn.Config(
            self, host=self.host, port=0, log_level="warning", lifespan="on", access_log=False
        )
        server = uvicorn.Server(config)
        self._server = server
        ready = threading.Event()
        original = server.startup

        async def startup(sockets: Any = None) -> None:
            await original(sockets)
            self.port = int(server.servers[0].sockets[0].getsockname()[1])
            ready.set()

        server.startup = startup  # type: ignore[method-assign]
        self._thread = threading.Thread(target=server.run, name="callback-rx", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("callback receiver did not start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
