"""A short-lived callback receiver for commands that wait for 4WS (generate, activate, pdf).

4WS answers asynchronous calls by POSTing to a URL we give it. The receiver listens on a
loopback port for the few seconds a command waits; each URL carries a random token, so a
stray or forged POST is refused. When 4WS cannot reach this machine directly, pass
``public_url`` (a tunnel that forwards to the listener) and 4WS is told to call that.
"""

from __future__ import annotations

import asyncio
import hmac
import queue
import secrets
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from fourws_pay.errors import RequestTimeout

MAX_BODY = 10 * 1024 * 1024


class CallbackInbox:
    """Collects callback bodies addressed to ``url(name)``; ``wait(name)`` returns the first.

    Without a server it is fed by ``deliver`` (the in-process sandbox calls it directly);
    ``CallbackListener`` puts an HTTP listener in front of it.
    """

    def __init__(self, base_url: str) -> None:
        self._token = secrets.token_urlsafe(24)
        self._inbox: dict[str, queue.Queue[bytes]] = {}
        self._lock = threading.Lock()
        self.base_url = base_url.rstrip("/")

    def _box(self, name: str) -> queue.Queue[bytes]:
        with self._lock:
            return self._inbox.setdefault(name, queue.Queue())

    def url(self, name: str) -> str:
        """The callback URL to hand to 4WS for the call named ``name``."""
        self._box(name)
        return f"{self.base_url}/{name}/{self._token}"

    def deliver(self, path: str, body: bytes) -> int:
        """Accept a callback for ``path`` (``.../<name>/<token>``); returns the HTTP status."""
        parts = path.strip("/").split("/")
        if len(parts) < 2 or not hmac.compare_digest(parts[-1], self._token):
            return 404
        with self._lock:
            box = self._inbox.get(parts[-2])
        if box is None:
            return 404
        box.put(body)
        return 200

    def get_nowait(self, name: str) -> bytes | None:
        try:
            return self._box(name).get_nowait()
        except queue.Empty:
            return None

    def wait(
        self,
        name: str,
        timeout: float,
        on_tick: Callable[[float], None] | None = None,
    ) -> bytes:
        """Block until the callback for ``name`` arrives, or raise ``RequestTimeout``.

        ``on_tick(elapsed_seconds)`` is called a few times a second (a progress bar).
        """
        box = self._box(name)
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            if on_tick is not None:
                on_tick(elapsed)
            remaining = timeout - elapsed
            if remaining <= 0:
                raise RequestTimeout(
                    f"no callback from 4WS within {timeout:g}s; is {self.base_url} reachable "
                    "from 4WS? (see --public-url)"
                )
            try:
                return box.get(timeout=min(0.1, remaining))
            except queue.Empty:
                continue


class CallbackListener(CallbackInbox):
    """An inbox behind an HTTP listener on ``host:port`` (port 0: any free port).

    The port is bound at construction, so ``url(name)`` can be handed to 4WS before the
    ``with`` block starts listening. POSTs whose path starts with ``other_prefix`` go to
    ``other`` instead (the demo routes payment callbacks there), which returns the HTTP
    status to answer. (Not ``CallbackReceiver``: that is the test receiver in
    ``fourws_pay.testing``, which records every POST.)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
        *,
        other_prefix: str = "",
        other: Callable[[str, bytes], int] | None = None,
    ) -> None:
        from fourws_pay.serving import ThreadServer

        self._server = ThreadServer(self._app, host=host, port=port, name="fourws-callbacks")
        self.local_url = self._server.url
        super().__init__(public_url or self.local_url)
        self._other_prefix = other_prefix
        self._other = other

    def route(self, path: str, body: bytes) -> int:
        if self._other is not None and self._other_prefix and path.startswith(self._other_prefix):
            return self._other(path, body)
        return self.deliver(path, body)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, status = b"", 0
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                status = 413
                break
            if not message.get("more_body"):
                break
        if not status:
            # ``other`` may do blocking ledger work: keep it off the listener's event loop.
            status = await asyncio.to_thread(self.route, scope["path"], body)
        payload = b'{"success": true}' if status == 200 else b'{"success": false}'
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop(timeout=5)
