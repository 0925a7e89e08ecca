"""The App's only door to 4WS: a thin async adapter over ``fourws_pay`` payments.

The App is an async Starlette application. ``AsyncGiftCardPayments`` is awaited directly;
a sync ``GiftCardPayments`` runs in a worker thread so that a slow 4WS call does not block
other webhooks. Either way the handlers see one async interface, and tests can substitute a
fake with the same methods.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol, cast

import anyio.to_thread

from fourws_pay.errors import ConfigurationError
from fourws_pay.payments.models import (
    CallbackResult,
    Decision,
    IssuedCard,
    Operation,
    OperationKind,
    Reservation,
)


class Gateway(Protocol):
    """What the handlers need from the payments layer."""

    async def check(
        self, barcode: str, amount: Decimal, currency: str, client_key: str | None
    ) -> Decision: ...

    async def reserve(
        self,
        barcode: str,
        amount: Decimal,
        currency: str,
        order_ref: str,
        client_key: str | None,
        *,
        ttl: float | None = None,
        allow_partial: bool = False,
    ) -> Reservation: ...

    async def capture(
        self, reservation_id: str, amount: Decimal | None = None, *, keep_remainder: bool = False
    ) -> Operation: ...

    async def release(self, reservation_id: str) -> Reservation: ...

    async def refund(self, operation_id: str, amount: Decimal | None = None) -> Operation: ...

    async def get_reservation(self, reservation_id: str) -> Reservation: ...

    async def get_operation(self, operation_id: str) -> Operation: ...

    async def find_reservations(self, order_ref: str) -> list[Reservation]: ...

    async def find_refunds(self, capture_id: str) -> list[Operation]: ...

    async def handle_callback(self, path: str, body: bytes) -> CallbackResult: ...

    async def issue_cards(
        self,
        order_ref: str,
        line_id: str,
        *,
        amount: Decimal,
        currency: str,
        count: int,
        item_code: str | None,
        decimals: int,
    ) -> list[IssuedCard]: ...

    async def issued_cards(self, order_ref: str) -> list[IssuedCard]: ...

    def add_listener(self, plugin: object, name: str) -> None: ...

    async def maintain(self) -> None: ...


class PaymentsGateway:
    """Adapts ``GiftCardPayments`` or ``AsyncGiftCardPayments`` to ``Gateway``.

    ``plugin_manager`` is where the App's event listener is registered; by default the
    payments object's own manager is used (attribute ``plugin_manager`` or ``pm``).
    """

    def __init__(self, payments: Any, *, plugin_manager: Any = None) -> None:
        self.payments = payments
        self._plugin_manager = plugin_manager

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method: Callable[..., Any] = getattr(self.payments, name)
        if inspect.iscoroutinefunction(method):
            return await method(*args, **kwargs)
        return await anyio.to_thread.run_sync(lambda: method(*args, **kwargs))

    async def check(
        self, barcode: str, amount: Decimal, currency: str, client_key: str | None
    ) -> Decision:
        result = await self._call(
            "check", barcode, amount=amount, currency=currency, client_key=client_key
        )
        return cast(Decision, result)

    async def reserve(
        self,
        barcode: str,
        amount: Decimal,
        currency: str,
        order_ref: str,
        client_key: str | None,
        *,
        ttl: float | None = None,
        allow_partial: bool = False,
    ) -> Reservation:
        result = await self._call(
            "reserve",
            barcode,
            amount=amount,
            currency=currency,
            order_ref=order_ref,
            client_key=client_key,
            ttl=ttl,
            allow_partial=allow_partial,
        )
        return cast(Reservation, result)

    async def capture(
        self, reservation_id: str, amount: Decimal | None = None, *, keep_remainder: bool = False
    ) -> Operation:
        """``keep_remainder`` splits the hold: the rest stays held as a new reservation."""
        if not keep_remainder:
            return cast(Operation, await self._call("capture", reservation_id, amount=amount))
        result = await self._call(
            "capture", reservation_id, amount=amount, keep_remainder=keep_remainder
        )
        return cast(Operation, result)

    async def release(self, reservation_id: str) -> Reservation:
        return cast(Reservation, await self._call("release", reservation_id))

    async def refund(self, operation_id: str, amount: Decimal | None = None) -> Operation:
        return cast(Operation, await self._call("refund", operation_id, amount=amount))

    async def get_reservation(self, reservation_id: str) -> Reservation:
        return cast(Reservation, await self._call("get_reservation", reservation_id))

    async def get_operation(self, operation_id: str) -> Operation:
        return cast(Operation, await self._call("get_operation", operation_id))

    async def find_reservations(self, order_ref: str) -> list[Reservation]:
        result = await self._call("list_reservations", None, order_ref)
        return cast(list[Reservation], result)

    async def find_refunds(self, capture_id: str) -> list[Operation]:
        """Refunds of a capture (a recovery path only: it reads the operation list)."""
        result = cast(list[Operation], await self._call("list_operations", None))
        return [
            op for op in result if op.kind is OperationKind.REFUND and op.parent_id == capture_id
        ]

    async def handle_callback(self, path: str, body: bytes) -> CallbackResult:
        return cast(CallbackResult, await self._call("handle_callback", path, body))

    async def issue_cards(
        self,
        order_ref: str,
        line_id: str,
        *,
        amount: Decimal,
        currency: str,
        count: int,
        item_code: str | None,
        decimals: int,
    ) -> list[IssuedCard]:
        """Sell cards on an order line (idempotent per card; see ``issue_cards``)."""
        result = await self._call(
            "issue_cards",
            order_ref,
            line_id,
            amount=amount,
            currency=currency,
            count=count,
            item_code=item_code,
            decimals=decimals,
        )
        return cast(list[IssuedCard], result)

    async def issued_cards(self, order_ref: str) -> list[IssuedCard]:
        return cast(list[IssuedCard], await self._call("issued_cards", order_ref))

    async def maintain(self) -> None:
        """Expire lapsed holds and resolve operations whose outcome is unknown.

        Run periodically by the App; the resulting events queue reports to Saleor.
        """
        await self._call("sweep")
        await self._call("reconcile")

    def add_listener(self, plugin: object, name: str) -> None:
        manager = self._plugin_manager
        if manager is None:
            manager = getattr(self.payments, "plugin_manager", None) or getattr(
                self.payments, "pm", None
            )
        if manager is None:
            raise ConfigurationError(
                "the payments object exposes no plugin manager; pass plugin_manager="
            )
        if manager.get_plugin(name) is None:
            manager.register(plugin, name=name)
