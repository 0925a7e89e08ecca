"""Where the demo runs: the embedded sandbox, or a served sandbox / real 4WS at a URL.

Both worlds give the story the same things: a client, a payments provider on a fresh
SQLite ledger, a way to let 4WS work off its queue, and (for sandboxes) the sandbox's own
view of a card's balance to reconcile against.
"""

from __future__ import annotations

import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from fourws_pay.api import wirejson
from fourws_pay.api.client import Client
from fourws_pay.cli.receiver import CallbackListener
from fourws_pay.clock import Clock, ManualClock, SystemClock
from fourws_pay.errors import CallbackRejected
from fourws_pay.ledger import open_store
from fourws_pay.payments import GiftCardPayments, IssuedCard, IssuedCardState, Operation
from fourws_pay.settings import Settings

PAY_PATH = "/fourws/callback"


class World(Protocol):
    label: str
    settings: Settings
    client: Client
    payments: GiftCardPayments
    clock: Clock
    is_sandbox: bool

    def wait_settled(self, operation_id: str) -> Operation:
        """The operation once 4WS's callback has settled it (or the timeout passed)."""
        ...

    def wait_issued(self, order_ref: str) -> list[IssuedCard]:
        """The order's sold cards once 4WS's callbacks carried them through (or timeout)."""
        ...

    def sandbox_balance(self, barcode: str) -> Decimal | None:
        """The balance in the sandbox's own books, or None for a real 4WS."""
        ...

    def sandbox_ledger(self, barcode: str) -> list[dict[str, Any]]:
        """The sandbox ledger's records for the card (empty for a real 4WS)."""
        ...

    def close(self) -> None: ...


def _payments(settings: Settings, client: Client, clock: Clock) -> GiftCardPayments:
    return GiftCardPayments(
        settings=settings, client=client, store=open_store(settings.ledger_url), clock=clock
    )


class EmbeddedWorld:
    """The in-process sandbox (demo seed) with callbacks delivered by function call."""

    label = "embedded sandbox"
    is_sandbox = True

    def __init__(self, ledger_dir: Path, clock: ManualClock | None = None) -> None:
        from fourws_pay.sandbox import Sandbox, sandbox_settings

        manual = clock or ManualClock(start=SystemClock().now().replace(microsecond=0))
        self.clock: Clock = manual
        self.sandbox = Sandbox(clock=manual, seed="demo")
        shop = "http://shop.demo.local"
        self.settings = sandbox_settings(
            ledger_url=f"sqlite:///{ledger_dir / 'ledger.db'}",
            callback_base_url=shop + PAY_PATH,
        )
        self.client = self.sandbox.client(self.settings)
        self.payments = _payments(self.settings, self.client, self.clock)
        self.sandbox.set_callback_handler(self._route)

    def _route(self, url: str, body: bytes) -> int:
        path = urlsplit(url).path
        try:
            return self.payments.handle_callback(path, body).status_code
        except CallbackRejected as exc:
            return exc.status_code

    def wait_settled(self, operation_id: str) -> Operation:
        self.sandbox.run_until_idle()
        return self.payments.get_operation(operation_id)

    def wait_issued(self, order_ref: str) -> list[IssuedCard]:
        self.sandbox.run_until_idle()
        return self.payments.issued_cards(order_ref)

    def sandbox_balance(self, barcode: str) -> Decimal | None:
        return self.sandbox.balance(barcode)

    def sandbox_ledger(self, barcode: str) -> list[dict[str, Any]]:
        return self.sandbox.ledger_wire(barcode)

    def close(self) -> None:
        self.payments.store.close()
        self.client.close()


class RemoteWorld:
    """A served sandbox or a real 4WS; callbacks come over HTTP to a loopback receiver."""

    def __init__(
        self,
        settings: Settings,
        ledger_dir: Path,
        *,
        timeout: float,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        public_url: str | None = None,
    ) -> None:
        self.clock: Clock = SystemClock()
        self.timeout = timeout
        self.receiver = CallbackListener(
            listen[0], listen[1], public_url, other_prefix=PAY_PATH, other=self._pay
        )
        base = self.receiver.base_url
        self.settings = Settings.build(
            **{
                **settings.model_dump(),
                "ledger_url": f"sqlite:///{ledger_dir / 'ledger.db'}",
                "callback_base_url": base + PAY_PATH,
            }
        )
        self.client = Client(self.settings, clock=self.clock)
        self.payments = _payments(self.settings, self.client, self.clock)
        self._control = httpx.Client(base_url=self.settings.documents_base_url, timeout=10.0)
        self.is_sandbox = self._sandbox_call("GET", "health") is not None
        self.label = ("served sandbox at " if self.is_sandbox else "4WS at ") + (
            self.settings.documents_base_url
        )
        self.receiver.__enter__()

    def _pay(self, path: str, body: bytes) -> int:
        try:
            return self.payments.handle_callback(path, body).status_code
        except CallbackRejected as exc:
            return exc.status_code

    def _sandbox_call(self, method: str, path: str) -> Any:
        try:
            response = self._control.request(method, f"/_sandbox/{path}")
            data = wirejson.loads(response.content)
        except (httpx.HTTPError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("success") is True else None

    def _nudge(self) -> None:
        """Ask a served sandbox to work off its queue now (a real 4WS does it by itself)."""
        if self.is_sandbox:
            self._sandbox_call("POST", "process")

    def wait_settled(self, operation_id: str) -> Operation:
        deadline = time.monotonic() + self.timeout
        while True:
            self._nudge()
            operation = self.payments.get_operation(operation_id)
            if operation.is_terminal or time.monotonic() >= deadline:
                return operation
            time.sleep(0.05)

    def wait_issued(self, order_ref: str) -> list[IssuedCard]:
        """Until the order's cards are delivered or failed (4WS calls back each step)."""
        deadline = time.monotonic() + self.timeout
        while True:
            self._nudge()
            cards = self.payments.issued_cards(order_ref)
            done = all(
                c.state in (IssuedCardState.DELIVERED, IssuedCardState.FAILED) for c in cards
            )
            if done or time.monotonic() >= deadline:
                return cards
            time.sleep(0.05)

    def sandbox_balance(self, barcode: str) -> Decimal | None:
        data = self._sandbox_call("GET", f"cards/{barcode}") if self.is_sandbox else None
        if data is None:
            return None
        return Decimal(str(data["giftcard"]["amount"]))

    def sandbox_ledger(self, barcode: str) -> list[dict[str, Any]]:
        data = self._sandbox_call("GET", f"cards/{barcode}") if self.is_sandbox else None
        return list(data.get("operations", [])) if data else []

    def close(self) -> None:
        self.receiver.__exit__(None, None, None)
        self._control.close()
        self.payments.store.close()
        self.client.close()


def temp_ledger_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="fourws-pay-demo-")
