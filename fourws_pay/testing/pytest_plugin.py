"""pytest fixtures for shops testing a gift-card checkout against the 4WS sandbox.

Installed with fourws-pay (entry point ``pytest11``), so pytest loads this module in every
run of anyone who has the package: it imports nothing but pytest at import time. The
sandbox (Starlette, httpx transports), the payments layer and the ledger are imported
inside the fixtures, only by tests that use them.

Fixtures (all function-scoped, so every test starts from a fresh, demo-seeded sandbox):

``fourws_clock``         a ``ManualClock``; time moves only when the test says so
``fourws_sandbox``       ``Sandbox(clock=fourws_clock, seed="demo")``
``fourws_settings``      the ``Settings`` that point at it
``fourws_client``        a blocking ``Client`` wired in-process to the sandbox
``fourws_async_client``  the ``AsyncClient`` twin
``fourws_giftcard``      factory: ``fourws_giftcard("25.00", partial_usage=False)`` -> card
``fourws_giftcards``     factory for the cards of one order paid with several:
                         ``fourws_giftcards("30.00", "20.00")`` -> [card, card]; the first
                         expires first (a day apart), so ``reserve_order`` takes it first
``fourws_payments``      ``GiftCardPayments`` on the sandbox, a temporary SQLite ledger and
                         the same clock, with 4WS callbacks routed to its
                         ``handle_callback``; call ``fourws_sandbox.process_queue()`` to
                         let 4WS work. It sells cards too (``issue_cards``: the demo
                         seed's financial item is the sandbox settings' default)
``fourws_served_sandbox`` the sandbox served on a free loopback port (real HTTP)

Example::

    def test_checkout(fourws_sandbox, fourws_payments, fourws_giftcard):
        card = fourws_giftcard("50.00")
        hold = fourws_payments.reserve(card.barcode, amount="30.00", currency="EUR",
                                       order_ref="ORD-1")
        fourws_payments.capture(hold.id)
        fourws_sandbox.process_queue()          # 4WS applies it and calls back
        assert fourws_sandbox.balance(card.barcode) == Decimal("20.00")

    def test_two_cards_pay_one_order(fourws_sandbox, fourws_payments, fourws_giftcards):
        first, second = fourws_giftcards("30.00", "50.00")
        held = fourws_payments.reserve_order("ORD-2", cards=[first.barcode, second.barcode],
                                             amount="60.00", currency="EUR")
        assert held.share_of(first.barcode) == Decimal("30.00")  # it expires first
        fourws_payments.capture_order("ORD-2")
        fourws_sandbox.process_queue()
        assert fourws_sandbox.balance(second.barcode) == Decimal("20.00")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from datetime import datetime, timedelta
    from decimal import Decimal
    from pathlib import Path

    from fourws_pay.api.client import AsyncClient, Client
    from fourws_pay.clock import ManualClock
    from fourws_pay.payments import GiftCardPayments
    from fourws_pay.sandbox import Card, Sandbox
    from fourws_pay.sandbox.server import ServedSandbox
    from fourws_pay.settings import Settings

GiftCardFactory = Callable[..., "Card"]

# Modules of the ``sandbox`` extra: a base install (``pip install fourws-pay``) has none.
SANDBOX_EXTRA_MODULES = frozenset({"starlette", "uvicorn", "sniffio"})


def _import_sandbox(
    fixture: str, module: str = "fourws_pay.sandbox", needs: tuple[str, ...] = ("starlette",)
) -> Any:
    """Import the sandbox for ``fixture``; without the extra, say which one to install
    instead of a bare ``ModuleNotFoundError`` from deep inside the package (the sandbox
    imports Starlette only when a client first talks to it, so check ``needs`` now)."""
    import importlib

    try:
        for name in needs:
            importlib.import_module(name)
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in SANDBOX_EXTRA_MODULES:
            raise
        pytest.fail(
            f"the {fixture} fixture needs the 4WS sandbox, which is not installed "
            f"({missing} is missing): install fourws-pay[sandbox], e.g. "
            "pip install 'fourws-pay[sandbox]'",
            pytrace=False,
        )


@pytest.fixture
def fourws_clock() -> ManualClock:
    """A manual clock shared by the sandbox, the clients and the payments layer."""
    from fourws_pay.clock import ManualClock

    return ManualClock()


@pytest.fixture
def fourws_sandbox(fourws_clock: ManualClock) -> Sandbox:
    """A fresh sandbox with the ``demo`` seed (see ``fourws_pay.sandbox.seed``)."""
    sandbox_module = _import_sandbox("fourws_sandbox")
    sandbox: Sandbox = sandbox_module.Sandbox(clock=fourws_clock, seed="demo")
    return sandbox


@pytest.fixture
def fourws_settings(fourws_sandbox: Sandbox) -> Settings:
    return fourws_sandbox.settings


@pytest.fixture
def fourws_client(fourws_sandbox: Sandbox) -> Iterator[Client]:
    client = fourws_sandbox.client()
    yield client
    client.close()


@pytest.fixture
def fourws_async_client(fourws_sandbox: Sandbox) -> AsyncClient:
    """The async client. A plain fixture (no pytest-asyncio needed to provide it); its
    in-process transport holds no sockets, so there is nothing to close."""
    return fourws_sandbox.async_client()


@pytest.fixture
def fourws_giftcard(fourws_sandbox: Sandbox) -> GiftCardFactory:
    """Factory for cards with the flags, balance and dates a test needs.

    ``fourws_giftcard(amount="50.00", *, currency="EUR", active=True, activated=True,
    partial_usage=True, network_usage=True, expires_in=timedelta(days=365),
    starts_in=None, expired=False, barcode=None, entity_code=None, **card_fields)``;
    ``expired=True`` means it expired a day ago, ``starts_in`` a future activation.
    Returns the card as stored (``.barcode``, ``.amount`` ...); barcodes are valid EAN-13.
    """
    from datetime import timedelta

    def make(
        amount: Decimal | int | str = "50.00",
        *,
        expires_in: timedelta | None = timedelta(days=365),
        starts_in: timedelta | None = None,
        expired: bool = False,
        **fields: Any,
    ) -> Card:
        now: datetime = fourws_sandbox.clock.now()
        if expired:
            fields.setdefault("activation_date", now - timedelta(days=30))
            fields["expiration_date"] = now - timedelta(days=1)
        elif expires_in is not None:
            fields.setdefault("expiration_date", now + expires_in)
        if starts_in is not None:
            fields["activation_date"] = now + starts_in
        card = fourws_sandbox.add_giftcard(amount=amount, **fields)
        return fourws_sandbox.card(card.barcode)

    return make


@pytest.fixture
def fourws_giftcards(fourws_giftcard: GiftCardFactory) -> Callable[..., list[Card]]:
    """Factory for the cards of one order paid with several (``reserve_order``).

    ``fourws_giftcards(*amounts, expires_in=timedelta(days=365),
    stagger=timedelta(days=1), **card_fields)`` makes one card per amount, with the same
    fields; card *i* expires ``expires_in + i * stagger`` from now, so under the default
    allocation rule (earliest expiry first) the cards pay in the order given. With
    ``stagger=None`` they expire together and the smallest balance pays first.
    """
    from datetime import timedelta

    def make(
        *amounts: Decimal | int | str,
        expires_in: timedelta = timedelta(days=365),
        stagger: timedelta | None = timedelta(days=1),
        **fields: Any,
    ) -> list[Card]:
        if not amounts:
            raise TypeError("fourws_giftcards needs at least one amount")
        step = stagger or timedelta(0)
        return [
            fourws_giftcard(amount, expires_in=expires_in + i * step, **fields)
            for i, amount in enumerate(amounts)
        ]

    return make


@pytest.fixture
def fourws_payments(
    fourws_sandbox: Sandbox, fourws_client: Client, tmp_path: Path
) -> Iterator[GiftCardPayments]:
    """``GiftCardPayments`` over the sandbox, with callbacks delivered to it in-process."""
    from urllib.parse import urlsplit

    from fourws_pay.errors import CallbackRejected
    from fourws_pay.ledger import SQLiteStore
    from fourws_pay.payments import GiftCardPayments

    payments = GiftCardPayments(
        client=fourws_client,
        store=SQLiteStore(tmp_path / "fourws-ledger.db"),
        clock=fourws_sandbox.clock,
    )

    def deliver(url: str, body: bytes) -> int:
        try:
            return payments.handle_callback(urlsplit(url).path, body).status_code
        except CallbackRejected as exc:
            return exc.status_code

    fourws_sandbox.set_callback_handler(deliver)
    yield payments
    fourws_sandbox.set_callback_handler(None)
    payments.close()


@pytest.fixture
def fourws_served_sandbox() -> Iterator[ServedSandbox]:
    """The demo sandbox served over loopback HTTP (real clock, its own queue worker)."""
    server = _import_sandbox(
        "fourws_served_sandbox", "fourws_pay.sandbox.server", needs=("starlette", "uvicorn")
    )
    served: ServedSandbox = server.start_in_thread(seed="demo")
    yield served
    served.stop()
