"""httpx transports that run the sandbox app in-process, sync and async.

``httpx.ASGITransport`` is async-only; the blocking ``Client`` gets ``SyncSandboxTransport``,
which runs each request on a fresh event loop (or on a helper thread when the calling
thread already runs a loop, e.g. a callback handler that reads a card mid-request). Both map
the sandbox's connection faults to the exceptions a real socket would give:
``SandboxHang`` -> ``httpx.ReadTimeout``, ``SandboxReset`` -> ``httpx.RemoteProtocolError``.
A hang raises at once, but on a ``ManualClock`` it first moves time forward by the
request's read timeout, so time-based logic sees the wait a real client would have had.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
from starlette.types import ASGIApp

from fourws_pay.clock import Clock, ManualClock
from fourws_pay.sandbox.app import SandboxHang, SandboxReset

T = TypeVar("T")


def run_blocking(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, whatever the thread runs."""

    async def main() -> T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


class AsyncSandboxTransport(httpx.AsyncBaseTransport):
    """``httpx.ASGITransport`` plus the sandbox's connection faults."""

    def __init__(self, app: ASGIApp, clock: Clock | None = None) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._clock = clock

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except SandboxHang:
            timeout = request.extensions.get("timeout", {}).get("read")
            if isinstance(self._clock, ManualClock) and isinstance(timeout, int | float):
                self._clock.advance(timeout)
            raise httpx.ReadTimeout("sandbox fault: no answer", request=request) from None
        except SandboxReset:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body", request=request
            ) from None


class SyncSandboxTransport(httpx.BaseTransport):
    """Blocking transport over the same app."""

    def __init__(self, app: ASGIApp, clock: Clock | None = None) -> None:
        self._async = AsyncSandboxTransport(app, clock)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()

        async def send() -> httpx.Response:
            inner = httpx.Request(
                request.method,
                request.url,
                headers=request.headers,
                content=content,
                extensions=request.extensions,
            )
            response = await self._async.handle_async_request(inner)
            body = await response.aread()
            headers = [
                (k, v) for k, v in response.headers.multi_items() if k.lower() != "content-length"
            ]
            return httpx.Response(response.status_code, headers=headers, content=body)

        return run_blocking(send)
