"""A real HTTP callback receiver on loopback, for served-mode tests.

It records every POST (path, body) and answers ``status`` (200 by default). Tests wait for
callbacks with ``wait_for(n, timeout)``, which blocks on a condition variable rather than
sleeping in a loop. Served by ``fourws_pay.serving.ThreadServer``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from starlette.types import Receive, Scope, Send

from fourws_pay.serving import ThreadServer


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
        self.status = status
        self.received: list[ReceivedCallback] = []
        self._cond = threading.Condition()
        self._server = ThreadServer(self, host=host, name="callback-rx")
        self.host = host
        self.port = self._server.port

    @property
    def url(self) -> str:
        return self._server.url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
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
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
