"""Voucher reads page through ``start`` 20 at a time, lazily, in both twins."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fourws_pay.clock import ManualClock

from .endpoints import INTERVAL, SINCE
from .fakes import FakeFourWS, fixture_json, make_async_client, make_client

PAGE = 20
CARD = "0099000001209"


def vouchers(count: int) -> list[dict[str, Any]]:
    template = fixture_json("loyalty_vouchers_success.json")["valueObjectList"][1]
    return [
        {**template, "id": f"v-{i:03d}", "barcode": f"70000000{i:05d}", "totalAmount": f"{i}.50"}
        for i in range(count)
    ]


class Pager:
    """A 4WS that pages a list by ``start`` like the reference describes."""

    def __init__(self, items: list[dict[str, Any]], more_rows: Any = None) -> None:
        self.items = items
        self.more_rows = more_rows
        self.starts: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        start_param = request.url.params.get("start")
        self.starts.append(start_param)
        start = int(start_param or 0)
        chunk = self.items[start : start + PAGE]
        more = start + PAGE < len(self.items)
        body = {"success": True, "valueObjectList": chunk, "resultSetLength": len(chunk)}
        body["moreRows"] = self.more_rows(more) if self.more_rows else more
        return httpx.Response(200, json=body, request=request)


def pager_fake(fake: FakeFourWS, pager: Pager) -> FakeFourWS:
    s = fake.settings
    for cmd in (
        s.cmd_loyalty_vouchers,
        s.cmd_loyalty_vouchers_between,
        s.cmd_last_loyalty_vouchers,
    ):
        fake.on(cmd, pager)
    return fake


@pytest.mark.parametrize("count", [0, 1, 19, 20, 21, 45, 60])
def test_all_pages_in_order(fake: FakeFourWS, count: int) -> None:
    pager = Pager(vouchers(count))
    result = list(make_client(pager_fake(fake, pager)).loyalty_vouchers(CARD))
    assert [v.id for v in result] == [f"v-{i:03d}" for i in range(count)]
    expected_pages = max(1, -(-count // PAGE))
    assert pager.starts == [None] + [str(PAGE * i) for i in range(1, expected_pages)]
    for request in fake.requests:
        assert request.url.params["cardBarcode"] == CARD


def test_more_rows_as_y_n_strings(fake: FakeFourWS) -> None:
    pager = Pager(vouchers(45), more_rows=lambda more: "Y" if more else "N")
    assert len(list(make_client(pager_fake(fake, pager)).loyalty_vouchers(CARD))) == 45
    assert len(pager.starts) == 3


def test_lazy_second_page_only_when_iterated(fake: FakeFourWS) -> None:
    pager = Pager(vouchers(45))
    iterator = make_client(pager_fake(fake, pager)).loyalty_vouchers(CARD)
    assert pager.starts == []  # nothing fetched before iteration
    first = [next(iterator) for _ in range(PAGE)]
    assert len(first) == PAGE
    assert pager.starts == [None]
    next(iterator)
    assert pager.starts == [None, "20"]


def test_stops_on_more_rows_false_even_with_a_full_page(fake: FakeFourWS) -> None:
    pager = Pager(vouchers(45), more_rows=lambda more: False)
    assert len(list(make_client(pager_fake(fake, pager)).loyalty_vouchers(CARD))) == PAGE
    assert pager.starts == [None]


def test_stops_on_an_empty_page_even_if_more_rows(fake: FakeFourWS) -> None:
    pager = Pager(vouchers(20), more_rows=lambda more: True)
    assert len(list(make_client(pager_fake(fake, pager)).loyalty_vouchers(CARD))) == PAGE
    assert pager.starts == [None, "20"]


def test_short_pages_advance_by_what_was_received(fake: FakeFourWS) -> None:
    """A server that sends 7 per page despite the documented 20 loses nothing."""
    items = vouchers(16)
    starts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("start") or 0)
        starts.append(start)
        chunk = items[start : start + 7]
        body = {"success": True, "valueObjectList": chunk, "moreRows": start + 7 < len(items)}
        return httpx.Response(200, json=body, request=request)

    fake.on(fake.settings.cmd_loyalty_vouchers, handler)
    assert len(list(make_client(fake).loyalty_vouchers(CARD))) == 16
    assert starts == [0, 7, 14]


def test_interval_and_last_paginate_too(fake: FakeFourWS) -> None:
    pager = Pager(vouchers(25))
    client = make_client(pager_fake(fake, pager))
    assert len(list(client.loyalty_vouchers_between(*INTERVAL))) == 25
    assert len(list(client.last_loyalty_vouchers(SINCE))) == 25
    assert pager.starts == [None, "20", None, "20"]
    for request in fake.requests:
        # the filter goes with every page, not only the first
        assert {"startDate", "fromDateTime"} & set(request.url.params)


def test_a_failing_page_raises_mid_iteration(fake: FakeFourWS) -> None:
    from fourws_pay.errors import APIFailure

    from .fakes import json_reply

    first = {"success": True, "valueObjectList": vouchers(20), "moreRows": True}
    fake.on(
        fake.settings.cmd_loyalty_vouchers,
        json_reply(first),
        json_reply({"success": False, "message": "nope"}),
    )
    iterator = make_client(fake, clock=ManualClock()).loyalty_vouchers(CARD)
    assert len([next(iterator) for _ in range(PAGE)]) == PAGE
    with pytest.raises(APIFailure):
        next(iterator)


async def test_async_pages_lazily(fake: FakeFourWS) -> None:
    pager = Pager(vouchers(45))
    client = make_async_client(pager_fake(fake, pager))
    iterator = client.loyalty_vouchers(CARD)
    assert pager.starts == []
    seen = []
    async for voucher in iterator:
        seen.append(voucher.id)
        if len(seen) == PAGE:
            assert pager.starts == [None]
    assert seen == [f"v-{i:03d}" for i in range(45)]
    assert pager.starts == [None, "20", "40"]
    await client.aclose()


async def test_async_stops_like_sync(fake: FakeFourWS) -> None:
    pager = Pager(vouchers(20), more_rows=lambda more: True)
    client = make_async_client(pager_fake(fake, pager))
    assert len([v async for v in client.last_loyalty_vouchers(SINCE)]) == PAGE
    assert pager.starts == [None, "20"]


@pytest.mark.parametrize("twin", ["sync", "async"])
async def test_a_server_ignoring_start_is_caught(fake: FakeFourWS, twin: str) -> None:
    """Without the check this would send MAX_PAGES requests and yield page one 10 000 times."""
    from fourws_pay.errors import MalformedResponseError

    from .fakes import json_reply

    page = {"success": True, "valueObjectList": vouchers(20), "moreRows": True}
    fake.on(fake.settings.cmd_loyalty_vouchers, json_reply(page))
    seen: list[str] = []
    with pytest.raises(MalformedResponseError, match="start"):
        if twin == "sync":
            seen.extend(v.id for v in make_client(fake).loyalty_vouchers(CARD))
        else:
            async for v in make_async_client(fake).loyalty_vouchers(CARD):
                seen.append(v.id)
    assert len(fake.requests) == 2
    assert len(seen) == PAGE  # the repeated page is not handed out
