"""Fixtures for the sandbox's own tests: a demo-seeded sandbox on a manual clock, and an
``api`` fixture that runs each test against the blocking and the asyncio client."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from fourws_pay.clock import ManualClock
from fourws_pay.sandbox import Sandbox


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sb(clock: ManualClock) -> Sandbox:
    return Sandbox(clock=clock, seed="demo")


@pytest.fixture
def received(sb: Sandbox) -> list[tuple[str, bytes]]:
    """Callbacks delivered in-process, answered 200."""
    got: list[tuple[str, bytes]] = []

    def handler(url: str, body: bytes) -> int:
        got.append((url, body))
        return 200

    sb.set_callback_handler(handler)
    return got


class Either:
    """Calls either client twin with one awaitable interface; iterators become lists."""

    def __init__(self, client: Any, kind: str) -> None:
        self.client = client
        self.kind = kind

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if inspect.isawaitable(result):
                return await result
            if isinstance(result, AsyncIterator):
                return [item async for item in result]
            if isinstance(result, Iterator):
                return list(result)
            return result

        return call


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, sb: Sandbox) -> Iterator[Either]:
    if request.param == "sync":
        client: Any = sb.client()
        yield Either(client, "sync")
        client.close()
    else:
        yield Either(sb.async_client(), "async")
