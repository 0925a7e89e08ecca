"""The ledger store protocol: durable reservations, operations and sold cards.

It lives with the payments layer because that layer is its only client and says what it
needs; the stores in ``fourws_pay.ledger`` implement it (structurally: they import the
models, never the provider), so the import arrows run from the stores to payments, never
back. ``fourws_pay.ledger.base`` re-exports it for code written before the move.

The provider needs very little from a store, and says exactly what:

- ``card_transaction(barcode)``: a transaction that is also the *per-card critical section*.
  Two transactions on the same card never interleave (SQLite: ``BEGIN IMMEDIATE``;
  PostgreSQL: ``pg_advisory_xact_lock``; MariaDB: ``SELECT … FOR UPDATE`` on a card row;
  Redis: a WATCH/MULTI or Lua script per card key). No HTTP call is ever made while it is
  open: the provider reads 4WS first, then decides under the lock.
- compare-and-set updates (``update_*`` with the expected current state) so that every state
  change is one-way and a lost race is detected instead of overwriting (invariant 5);
- plain reads outside any transaction for listings and callbacks.

Everything is synchronous (a card transaction may wait seconds for another holder's lock), so
the async provider calls stores from its own threads, never on the event loop. Driver errors
leave a store only as ``LedgerError`` and its subclasses (``_errors``). Amounts are Decimal,
times aware UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from fourws_pay.payments.models import (
    IssuedCard,
    IssuedCardState,
    Operation,
    OperationKind,
    OperationState,
    OrderRefund,
    OrderRefundState,
    Reservation,
    ReservationState,
)


class LedgerTransaction(Protocol):
    """Reads and writes inside one store transaction."""

    def reservations_for_card(
        self, barcode: str, states: Iterable[ReservationState]
    ) -> list[Reservation]: ...

    def operations_for_card(
        self, barcode: str, states: Iterable[OperationState]
    ) -> list[Operation]: ...

    def operations_settled_since(self, barcode: str, since: datetime) -> list[Operation]:
        """Succeeded operations on the card settled at or after ``since``."""
        ...

    def get_reservation(self, reservation_id: str) -> Reservation | None: ...

    def get_operation(self, operation_id: str) -> Operation | None: ...

    def captures_of_reservation(self, reservation_id: str) -> list[Operation]:
        """The reservation's captures, in every state, oldest first. Its refunds are not
        included (they are ``children_of`` a capture)."""
        ...

    def children_of(self, operation_id: str, kind: OperationKind) -> list[Operation]: ...

    def insert_reservation(self, reservation: Reservation) -> None: ...

    def insert_operation(self, operation: Operation) -> None: ...

    def update_reservation(self, reservation: Reservation, expected: ReservationState) -> bool:
        """Write ``reservation`` if its stored state is still ``expected``; say if it did."""
        ...

    def update_operation(self, operation: Operation, expected: OperationState) -> bool:
        """Write ``operation`` if its stored state is still ``expected``; say if it did."""
        ...

    def get_issued_card(self, card_id: str) -> IssuedCard | None: ...

    def issued_cards_for_order(self, order_ref: str) -> list[IssuedCard]:
        """The order's sold cards, oldest first (line, then index, for equal times)."""
        ...

    def insert_issued_card(self, card: IssuedCard) -> None:
        """Raises ``LedgerConflict`` when a card with this id exists (issuing is idempotent
        per id, so callers look first under the order's issuing lock)."""
        ...

    def update_issued_card(self, card: IssuedCard, expected: IssuedCardState) -> bool:
        """Write ``card`` if its stored state is still ``expected``; say if it did."""
        ...

    def get_order_refund(self, refund_id: str) -> OrderRefund | None: ...

    def order_refunds_for_order(self, order_ref: str) -> list[OrderRefund]:
        """The order's refund plans, oldest first."""
        ...

    def insert_order_refund(self, refund: OrderRefund) -> None:
        """Raises ``LedgerConflict`` when a plan with this id exists (callers look first,
        under the order's refund lock)."""
        ...

    def update_order_refund(self, refund: OrderRefund, expected: OrderRefundState) -> bool:
        """Write ``refund`` if its stored state is still ``expected``; say if it did."""
        ...


class LedgerStore(Protocol):
    """A durable home for reservations and operations."""

    def card_transaction(self, barcode: str) -> AbstractContextManager[LedgerTransaction]:
        """Open a transaction holding the per-card critical section for ``barcode``."""
        ...

    def transaction(self) -> AbstractContextManager[LedgerTransaction]:
        """Open a write transaction with no card lock (state changes that use CAS only)."""
        ...

    def snapshot(self) -> AbstractContextManager[LedgerTransaction]:
        """A consistent read-only view (``check`` uses it; it takes no write lock)."""
        ...

    def get_reservation(self, reservation_id: str) -> Reservation | None: ...

    def get_operation(self, operation_id: str) -> Operation | None: ...

    def list_reservations(
        self, states: Iterable[ReservationState] | None = None, order_ref: str | None = None
    ) -> list[Reservation]: ...

    def list_operations(
        self,
        states: Iterable[OperationState] | None = None,
        kind: OperationKind | None = None,
    ) -> list[Operation]: ...

    def get_issued_card(self, card_id: str) -> IssuedCard | None: ...

    def list_issued_cards(
        self, states: Iterable[IssuedCardState] | None = None, order_ref: str | None = None
    ) -> list[IssuedCard]: ...

    def list_order_refunds(
        self, states: Iterable[OrderRefundState] | None = None, order_ref: str | None = None
    ) -> list[OrderRefund]: ...

    def close(self) -> None: ...
