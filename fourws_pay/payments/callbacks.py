"""The 4WS callback receiver as a plain ASGI app (no web framework needed).

Mount it under the path that ``Settings.callback_base_url`` points to; 4WS then POSTs to
``<base>/<operation id>/<token>``. Answers: 200 for applied, duplicate and late callbacks
(so 4WS stops retrying), 4xx with no write for forged, unknown or malformed ones, 405 for
other methods. Bodies over 64 KiB are refused before parsing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fourws_pay.errors import CallbackRejected
from fourws_pay.logs import get_logger
from fourws_pay.payments.models import CallbackResult

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 64 * 1024
log = get_logger()


class CallbackApp:
    """ASGI app around an awaitable ``handle_callback(path, body)``.

    The providers pass one that does its ledger work off the event loop, and an ``after``
    that gives the card's queue its turns once 4WS has its answer (so 4WS never waits for
    our next POST). A failing ``after`` is logged, never raised: the queue is durable and
    ``reconcile`` resumes it.
    """

    def __init__(
        self,
        handle: Callable[[str, bytes], Awaitable[CallbackResult]],
        after: Callable[[CallbackResult], Awaitable[None]] | None = None,
    ) -> None:
        self._handle = handle
        self._after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope.get("method") != "POST":
            await _respond(send, 405, {"success": False, "message": "POST only"})
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                await _respond(send, 413, {"success": False, "message": "body too large"})
                return
        path = scope.get("root_path", "") + scope.get("path", "")
        try:
            result = await self._handle(path, bytes(body))
        except CallbackRejected as exc:
            log.warning("fourws_pay.callback.rejected", status=exc.status_code, reason=str(exc))
            await _respond(send, exc.status_code, {"success": False, "message": str(exc)})
            return
        await _respond(send, result.status_code, {"success": True, "message": result.message})
        if self._after is not None and result.applied:
            try:
                await self._after(result)
            except Exception as exc:
                log.error("fourws_pay.callback.after_failed", error=type(exc).__name__)


async def _respond(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
