"""``Client`` and ``AsyncClient`` are twins: same methods, same signatures, same behaviour."""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from fourws_pay.api import core
from fourws_pay.api.client import AsyncClient, Client
from fourws_pay.clock import ManualClock

from .endpoints import CASE_IDS, CASES, Case, normalize
from .fakes import (
    FakeFourWS,
    Reply,
    broken_body_reply,
    fail,
    json_reply,
    make_async_client,
    make_client,
    make_settings,
)

LIFECYCLE = {"close": "aclose", "__enter__": "__aenter__", "__exit__": "__aexit__"}


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (callable(member) or isinstance(member, property))
    }


def test_same_public_names() -> None:
    sync = set(public_methods(Client)) - set(LIFECYCLE)
    asynchronous = set(public_methods(AsyncClient)) - set(LIFECYCLE.values())
    assert sync == asynchronous
    for sync_name, async_name in LIFECYCLE.items():
        assert hasattr(Client, sync_name)
        assert hasattr(AsyncClient, async_name)


def _async_equivalent(annotation: Any) -> Any:
    """The return annotation a coroutine/async-iterator twin should have."""
    if typing.get_origin(annotation) is Iterator:
        return AsyncIterator[typing.get_args(annotation)]  # type: ignore[misc]
    return annotation


@pytest.mark.parametrize(
    "name", sorted(set(public_methods(Client)) - set(LIFECYCLE) - {"settings", "core"})
)
def test_same_signatures(name: str) -> None:
    sync = getattr(Client, name)
    asynchronous = getattr(AsyncClient, name)
    sync_hints = typing.get_type_hints(sync)
    async_hints = typing.get_type_hints(asynchronous)
    sync_sig, async_sig = inspect.signature(sync), inspect.signature(asynchronous)
    assert [(p.name, p.kind, p.default) for p in sync_sig.parameters.values()] == [
        (p.name, p.kind, p.default) for p in async_sig.parameters.values()
    ]
    params = [p for p in sync_sig.parameters if p != "self"]
    if name == "run":
        return  # takes a flow; generic in both
    assert {p: sync_hints.get(p) for p in params} == {p: async_hints.get(p) for p in params}
    returns = sync_hints.get("return")
    if inspect.iscoroutinefunction(asynchronous):
        assert async_hints.get("return") == returns
    else:  # voucher reads: Iterator -> AsyncIterator, fetched lazily
        assert async_hints.get("return") == _async_equivalent(returns)
        assert typing.get_origin(returns) is Iterator


def test_constructors_match() -> None:
    sync = inspect.signature(Client.__init__).parameters
    asynchronous = inspect.signature(AsyncClient.__init__).parameters
    assert list(sync) == list(asynchronous)
    assert [p.kind for p in sync.values()] == [p.kind for p in asynchronous.values()]


def test_every_endpoint_is_listed_in_the_case_table() -> None:
    """Generic tests (this file, log hygiene, fuzzing) iterate CASES: keep it complete."""
    names = {case.name.removesuffix("_activation") for case in CASES}
    public = set(public_methods(Client)) - set(LIFECYCLE) - {"settings", "core", "run"}
    assert public <= names
    assert {e.name for e in core.ENDPOINTS} <= names


def behaviours(case: Case) -> dict[str, list[Reply]]:
    return {
        "success": [case.ok()],
        "not_found": [json_reply({"message": "nope"}, 404)],
        "failure": [json_reply({"success": False, "message": "barcode not found"})],
        "retried": [json_reply({}, 503), fail(httpx.ConnectError), case.ok()],
        "rate_limited": [json_reply({}, 429, {"Retry-After": "2"}), case.ok()],
        "timeout": [fail(httpx.ReadTimeout), case.ok()],
        "broken_body": [broken_body_reply(), case.ok()],
        "unauthorized_once": [json_reply({}, 401), case.ok()],
    }


def outcome_of(result: Any = None, error: BaseException | None = None) -> Any:
    if error is not None:
        return (
            "error",
            type(error).__name__,
            str(error),
            getattr(error, "status_code", None),
            getattr(error, "retry_after", None),
            type(error.__cause__).__name__ if error.__cause__ else None,
        )
    return ("ok", normalize(result))


def wire(fake: FakeFourWS) -> list[tuple[str, str, list[tuple[bytes, bytes]], bytes]]:
    return [(r.method, str(r.url), list(r.headers.raw), r.content) for r in fake.requests]


@pytest.mark.parametrize("behaviour", list(behaviours(CASES[0])))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
async def test_same_behaviour(case: Case, behaviour: str) -> None:
    runs = []
    for twin in ("sync", "async"):
        fake = FakeFourWS(make_settings())
        fake.on(case.route(fake.settings), *behaviours(case)[behaviour])
        clock = ManualClock()
        try:
            if twin == "sync":
                with make_client(fake, clock=clock) as client:
                    outcome = outcome_of(case.call(client))
            else:
                async with make_async_client(fake, clock=clock) as aclient:
                    outcome = outcome_of(await case.acall(aclient))
        except Exception as exc:
            outcome = outcome_of(error=exc)
        runs.append((outcome, clock.slept, wire(fake)))
    assert runs[0] == runs[1]


async def test_async_context_manager_closes_only_what_it_owns() -> None:
    fake = FakeFourWS(make_settings())
    own = httpx.AsyncClient(transport=fake.transport())
    async with AsyncClient(fake.settings, http_client=own) as client:
        assert client.settings is fake.settings
    assert not own.is_closed
    await own.aclose()


def test_sync_context_manager_closes_only_what_it_owns() -> None:
    fake = FakeFourWS(make_settings())
    sync_own = httpx.Client(transport=fake.transport())
    with Client(fake.settings, http_client=sync_own):
        pass
    assert not sync_own.is_closed
    sync_own.close()
