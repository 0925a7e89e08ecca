"""Delivering the sandbox's callbacks: to an in-process handler, or POSTed over loopback HTTP.

What a delivery *does* is decided once, in ``_attempts``: how many copies (the
``duplicate`` fault), which URLs may be POSTed to (never off this machine), that a
receiver's failure is recorded instead of stopping the queue, and what is kept in the
history. The blocking and the event-loop senders only perform the one I/O step each attempt
asks for (call the handler, or POST), so the two stay the same by construction.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import ipaddress
import ssl
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from fourws_pay.clock import Clock
from fourws_pay.logs import get_logger, redact_url
from fourws_pay.sandbox.queue import PendingCallback

log = get_logger(component="sandbox")

CallbackHandler = Callable[[str, bytes], "int | Awaitable[int]"]
NOT_LOOPBACK = "not delivered: callback host is not loopback"


@dataclass(frozen=True)
class CallbackDelivery:
    """One callback POST attempt; ``status`` None means it failed before any answer."""

    url: str
    body: bytes
    queue_id: str
    status: int | None
    delivered_at: datetime
    error: str | None = None

    def json(self) -> Any:
        from fourws_pay.api import wirejson

        return wirejson.loads(self.body)

    def summary(self) -> dict[str, Any]:
        return {
            "url": redact_url(self.url),
            "queueId": self.queue_id,
            "status": self.status,
            "error": self.error,
            "body": self.json(),
        }


# What one attempt sends back into ``_attempts``: the receiver's status, or what it raised.
Answer = int | Exception
Attempts = Generator[PendingCallback, Answer, list[CallbackDelivery]]


class CallbackSender:
    """Sends due callbacks and keeps the last ``history_limit`` attempts in ``history``.

    ``handler`` (set by ``Sandbox.set_callback_handler``) takes precedence over HTTP; without
    it, URLs whose host is not loopback (nor one of ``hosts``) are recorded as undelivered
    and never contacted.
    """

    def __init__(
        self, clock: Clock, *, timeout: float, hosts: Iterable[str], history_limit: int
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self.hosts = frozenset(h.lower() for h in hosts)
        self.handler: CallbackHandler | None = None
        self.history: deque[CallbackDelivery] = deque(maxlen=history_limit)
        self._lock = threading.Lock()

    def may_post_to(self, url: str) -> bool:
        """Whether an HTTP callback to ``url`` stays on this machine (or was allowed)."""
        try:
            host = (httpx.URL(url).host or "").lower()
        except (httpx.InvalidURL, ValueError):
            return False
        if host == "localhost" or host in self.hosts:
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    # ------------------------------------------------------------- the one policy

    def _attempts(self, cb: PendingCallback) -> Attempts:
        """Yield ``cb`` once per copy that must really be sent; receive its answer."""
        out = []
        for _ in range(cb.copies):
            if self.handler is None and not self.may_post_to(cb.url):
                out.append(self._record(cb, None, NOT_LOOPBACK))
                continue
            answer = yield cb
            if isinstance(answer, Exception):  # a receiver's failure must not stop the queue
                out.append(self._record(cb, None, f"{type(answer).__name__}: {str(answer)[:200]}"))
            else:
                out.append(self._record(cb, answer, None))
        return out

    def _record(
        self, cb: PendingCallback, status: int | None, error: str | None
    ) -> CallbackDelivery:
        delivery = CallbackDelivery(cb.url, cb.body, cb.queue_id, status, self.clock.now(), error)
        with self._lock:
            self.history.append(delivery)
        log.info("sandbox.callback.delivered", url=redact_url(cb.url), status=status, error=error)
        return delivery

    # ------------------------------------------------------------ the two I/O loops

    def deliver(self, cb: PendingCallback) -> list[CallbackDelivery]:
        """Send ``cb`` (blocking); an async handler is run to completion on a helper loop."""
        attempts = self._attempts(cb)
        try:
            pending = next(attempts)
            while True:
                answer: Answer
                try:
                    answer = self._send(pending)
                except Exception as exc:
                    answer = exc
                pending = attempts.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def adeliver(self, cb: PendingCallback) -> list[CallbackDelivery]:
        """Send ``cb`` from an event loop, never blocking it."""
        attempts = self._attempts(cb)
        try:
            pending = next(attempts)
            while True:
                answer: Answer
                try:
                    answer = await self._asend(pending)
                except Exception as exc:
                    answer = exc
                pending = attempts.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _send(self, cb: PendingCallback) -> int:
        if self.handler is not None:
            result = self.handler(cb.url, cb.body)
            if inspect.isawaitable(result):
                from fourws_pay.sandbox.transport import run_blocking

                result = run_blocking(functools.partial(_settle, result))
            return int(result)
        with httpx.Client(timeout=self.timeout, verify=_tls()) as http:
            return http.post(cb.url, content=cb.body, headers=_HEADERS).status_code

    async def _asend(self, cb: PendingCallback) -> int:
        """A blocking handler runs on a worker thread: it is the shop's callback endpoint,
        which may call 4WS (this very server) before it answers, as a shop selling cards
        does; run on the server's loop it would wait for itself."""
        if self.handler is not None:
            handler = self.handler
            result: int | Awaitable[int]
            if inspect.iscoroutinefunction(handler):
                result = handler(cb.url, cb.body)
            else:
                result = await asyncio.to_thread(handler, cb.url, cb.body)
            if inspect.isawaitable(result):
                result = await result
            return int(result)
        async with httpx.AsyncClient(timeout=self.timeout, verify=_tls()) as http:
            response = await http.post(cb.url, content=cb.body, headers=_HEADERS)
            return response.status_code


_HEADERS = {"Content-Type": "application/json"}


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every callback client: building one costs ~0.2 s."""
    return ssl.create_default_context()


async def _settle(awaitable: Awaitable[int]) -> int:
    return await awaitable


__all__ = ["CallbackDelivery", "CallbackHandler", "CallbackSender"]
