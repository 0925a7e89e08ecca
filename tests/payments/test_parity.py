"""``GiftCardPayments`` and ``AsyncGiftCardPayments`` are twins: same names, same
signatures, and every method of the async twin that may touch the ledger or 4WS is a
coroutine (a synchronous one would run ledger work on the event loop)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from fourws_pay import AsyncGiftCardPayments, GiftCardPayments

LIFECYCLE = {"close": "aclose"}
# Returns an ASGI app; building it does no I/O.
PLAIN_ON_BOTH = {"callback_app"}


def public(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (callable(member) or isinstance(member, property))
    }


def test_same_public_names() -> None:
    sync = set(public(GiftCardPayments)) - set(LIFECYCLE)
    asynchronous = set(public(AsyncGiftCardPayments)) - set(LIFECYCLE.values())
    assert sync == asynchronous
    assert set(LIFECYCLE) <= set(public(GiftCardPayments))
    assert set(LIFECYCLE.values()) <= set(public(AsyncGiftCardPayments))


METHODS = sorted(
    name
    for name, member in public(GiftCardPayments).items()
    if inspect.isfunction(member) and name not in LIFECYCLE
)


@pytest.mark.parametrize("name", METHODS)
def test_same_signature(name: str) -> None:
    sync = inspect.signature(getattr(GiftCardPayments, name))
    asynchronous = inspect.signature(getattr(AsyncGiftCardPayments, name))
    assert [(p.name, p.kind, p.default) for p in sync.parameters.values()] == [
        (p.name, p.kind, p.default) for p in asynchronous.parameters.values()
    ]
    assert sync.return_annotation == asynchronous.return_annotation


@pytest.mark.parametrize("name", METHODS)
def test_async_twin_awaits_everything_that_does_io(name: str) -> None:
    sync = getattr(GiftCardPayments, name)
    asynchronous = getattr(AsyncGiftCardPayments, name)
    assert not inspect.iscoroutinefunction(sync), name
    if name in PLAIN_ON_BOTH:
        assert not inspect.iscoroutinefunction(asynchronous)
    else:
        assert inspect.iscoroutinefunction(asynchronous), f"{name} is not async on the twin"


def test_every_public_method_is_documented() -> None:
    for cls in (GiftCardPayments, AsyncGiftCardPayments):
        for name, member in public(cls).items():
            if inspect.isfunction(member) and name not in {"close", "aclose"}:
                assert inspect.getdoc(member), f"{cls.__name__}.{name} has no docstring"
