"""Shared pieces of the Saleor App tests: the world they run in and its constants."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from fake_saleor import FakeSaleor
from fourws_pay_saleor import AppConfig, AppStore
from fourws_pay_saleor.app import SaleorApp

from fourws_pay.clock import ManualClock
from fourws_pay.payments import AsyncGiftCardPayments
from fourws_pay.payments.models import Operation, Reservation
from fourws_pay.sandbox import Sandbox

APP_URL = "http://app.test"
CARD = "2000000012345"
CARD_BALANCE = Decimal("100.00")


@dataclass
class World:
    clock: ManualClock
    sandbox: Sandbox
    payments: AsyncGiftCardPayments
    saleor: FakeSaleor
    app: Any
    client: httpx.AsyncClient
    store: AppStore

    saleor_api_url: str = "http://saleor.test/graphql/"

    @property
    def state(self) -> SaleorApp:
        state: SaleorApp = self.app.state.saleor
        return state

    async def settle(self) -> None:
        """Let 4WS process its queue and deliver callbacks to the App."""
        await self.sandbox.aprocess_queue()

    async def flush(self) -> None:
        await self.state.flush_reports()

    def operation_for(self, psp: str) -> Operation:
        """The (latest) 4WS operation made for the request Saleor knows as ``psp``."""
        ids = self.store.operations_for_psp(psp)
        assert ids, f"no operation for {psp}"
        operation = self.payments.store.get_operation(ids[-1])
        assert operation is not None
        return operation

    def reservation_for(self, psp: str) -> Reservation:
        """The current hold of the session Saleor knows as ``psp``."""
        record = self.store.transaction_for_psp(psp)
        assert record is not None, psp
        assert record.reservation_id is not None, psp
        reservation = self.payments.store.get_reservation(record.reservation_id)
        assert reservation is not None
        return reservation


def make_config(tmp_path: Path, **overrides: Any) -> AppConfig:
    values: dict[str, Any] = {
        "app_url": APP_URL,
        "store_path": str(tmp_path / "app.db"),
        "allowed_saleor_api_urls": ("http://saleor.test/graphql/",),
    }
    values.update(overrides)
    return AppConfig(**values)
