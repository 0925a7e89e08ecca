"""Concurrent ``check`` lookups of one card share a single 4WS request (single-flight)."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any

import pytest

from fourws_pay import AsyncGiftCardPayments, make_plugin_manager
from fourws_pay.payments import service
from tests.payments.harness import Shop


class CountingEvent(threading.Event):
    waiting = 0
    lock = threading.Lock()

    def wait(self, timeout: float | None = None) -> bool:
        with CountingEvent.lock:
            CountingEvent.waiting += 1
        return super().wait(timeout)


def test_threads_share_one_lookup(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    pause = threading.Event()  # the test's own waits must not count as followers
    monkeypatch.setattr(service.threading, "Event", CountingEvent)
    CountingEvent.waiting = 0
    card = shop.card()
    release = threading.Event()
    calls = 0
    original = shop.payments.client.get_giftcard

    def slow_get(barcode: str) -> Any:
        nonlocal calls
        calls += 1
        release.wait(10)
        return original(barcode)

    shop.payments.client.get_giftcard = slow_get  # type: ignore[method-assign]
    results: list[bool] = []

    def check() -> None:
        results.append(shop.payments.check(card, Decimal("1.00"), "EUR").ok)

    threads = [threading.Thread(target=check) for _ in range(6)]
    for t in threads:
        t.start()
    for _ in range(1000):  # until the 5 followers wait on the leader (bounded)
        if CountingEvent.waiting >= 5:
            break
        pause.wait(0.005)
    release.set()
    for t in threads:
        t.join(10)
    assert results == [True] * 6
    assert calls == 1


async def test_tasks_share_one_lookup(shop: Shop) -> None:
    payments = AsyncGiftCardPayments(
        settings=shop.settings(),
        client=shop.sandbox.async_client(),
        store=shop.store,
        clock=shop.clock,
        plugin_manager=make_plugin_manager(load_entrypoints=False),
    )
    card = shop.card()
    gate = asyncio.Event()
    calls = 0
    original = payments.client.get_giftcard

    async def slow_get(barcode: str) -> Any:
        nonlocal calls
        calls += 1
        await gate.wait()
        return await original(barcode)

    payments.client.get_giftcard = slow_get  # type: ignore[method-assign]
    reading = 0
    read = payments._read

    async def counting_read(effect: Any) -> Any:
        nonlocal reading
        reading += 1
        return await read(effect)

    payments._read = counting_read  # type: ignore[method-assign]
    tasks = [asyncio.create_task(payments.check(card, Decimal("1.00"), "EUR")) for _ in range(8)]
    for _ in range(5000):  # flows step on threads: wait until every task reached the lookup
        if reading == 8:
            break
        await asyncio.sleep(0.001)
    gate.set()
    decisions = await asyncio.gather(*tasks)
    assert all(d.ok for d in decisions)
    assert calls == 1
    await payments.client.aclose()


async def test_followers_get_the_leaders_error(shop: Shop) -> None:
    from fourws_pay import ServerError
    from fourws_pay.sandbox.faults import Fault

    payments = AsyncGiftCardPayments(
        settings=shop.settings(),
        client=shop.sandbox.async_client(),
        store=shop.store,
        clock=shop.clock,
        plugin_manager=make_plugin_manager(load_entrypoints=False),
    )
    card = shop.card()
    shop.sandbox.faults.add("get_giftcard", Fault.server_error(503), times=None)
    results = await asyncio.gather(
        *(payments.check(card, Decimal("1.00"), "EUR") for _ in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, ServerError) for r in results)
    await payments.client.aclose()
