"""Order-level refunds: one amount given back for an order, spread over its settled captures.

A shop refunds an *order* ("give back 40 of order R"), while money moved per capture, on
possibly several cards. ``refund_order`` turns the request into a **plan** (``OrderRefund``):
which capture refunds how much, newest capture first (``RefundStrategy.NEWEST_FIRST``) or in
proportion to what each has left (``PRO_RATA``). The plan is written once, under the order's
refund lock, with the id of each part's refund operation fixed in it; then each part is
posted as an ordinary refund (claim or queue, read, confirm, POST) under its own card's lock.

Why it is exactly once:

- the plan's id derives from (``order_ref``, ``refund_key``): asking again with the same key
  (a re-run, a retried request, a second worker) finds the plan instead of refunding again;
  the same key with another amount or strategy is refused (``InvalidInputError``);
- a part's operation id is fixed in the plan, and the part is born under its card's lock
  only if no operation has that id (looked up under that lock): however many workers carry
  the plan on, each part becomes at most one refund. A crash between parts leaves the plan
  ``open``; the next ``refund_order`` with the key, or ``reconcile``, posts what is missing.

Which reads each decision relies on, and under which lock:

- *planning* (order refund lock): the order's settled captures, what their refunds that did
  not fail and their store credit already take, and the parts of the order's other open
  plans not yet posted; so two plans of one order never count the same money. Refunds are
  written under *card* locks, not this one, so a refund made by other means (``refund``)
  between planning and posting can make a part no longer fit;
- *posting a part* (its card's lock): what the capture has left, counted as ``refund``
  counts it. A part is posted for at most that (never beyond the capture: invariant 11), so
  such a race *shortens* the part; the shortfall is reported (``OrderRefundOutcome``) and
  logged, and never silently taken from another capture. A part with nothing left is
  skipped. Once every part has its operation or was skipped, the plan is ``posted``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import replace
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING

from fourws_pay.errors import (
    FourWSError,
    InvalidAmountError,
    InvalidInputError,
    NotFoundInLedgerError,
)
from fourws_pay.limits import ORDER_REF_MAX, ORDER_REFUND_TEXT, require_text
from fourws_pay.logs import get_logger
from fourws_pay.money import positive_amount
from fourws_pay.payments.checkout import Checkout
from fourws_pay.payments.crash import crash_point
from fourws_pay.payments.effects import PaymentFlow
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    OrderRefund,
    OrderRefundOutcome,
    OrderRefundPart,
    OrderRefundState,
    RefundStrategy,
    Reservation,
)
from fourws_pay.payments.states import order_refund_lock_key

if TYPE_CHECKING:
    from fourws_pay.payments.ports import LedgerTransaction

log = get_logger()


def order_refund_id(order_ref: str, refund_key: str) -> str:
    digest = hashlib.sha256(f"{order_ref}\x1f{refund_key}".encode()).hexdigest()[:40]
    return f"ordref_{digest}"


def _part_operation_id(plan_id: str, capture_id: str) -> str:
    seed = f"{plan_id}\x1f{capture_id}".encode()
    return f"op_{hashlib.sha256(seed).hexdigest()[:40]}"


def _require_strategy(strategy: object) -> RefundStrategy:
    try:
        return RefundStrategy(str(strategy))
    except ValueError:
        choices = ", ".join(s.value for s in RefundStrategy)
        raise InvalidInputError(f"strategy must be one of {choices}") from None


def allocate(
    requested: Decimal, left: Sequence[tuple[str, Decimal]], strategy: RefundStrategy, unit: Decimal
) -> list[tuple[str, Decimal]]:
    """Spread ``requested`` over captures (``left``: id and refundable amount, newest first).

    Newest first takes each capture as far as it goes. Pro rata gives each its share of
    ``requested`` in proportion to what it has left, rounded down to ``unit``; the units the
    rounding left over go one each to the newest captures with room. Never more than a
    capture has left, and the parts sum to ``requested`` (the caller checked it fits).
    """
    total = sum((amount for _, amount in left), Decimal(0))
    parts: dict[str, Decimal] = {}
    if strategy is RefundStrategy.NEWEST_FIRST:
        missing = requested
        for capture_id, amount in left:
            if missing <= 0:
                break
            take = min(amount, missing)
            if take > 0:
                parts[capture_id] = take
                missing -= take
    else:
        for capture_id, amount in left:
            parts[capture_id] = (requested * amount / total).quantize(unit, rounding=ROUND_DOWN)
        missing = requested - sum(parts.values(), Decimal(0))
        while missing > 0:
            for capture_id, amount in left:
                if missing > 0 and parts[capture_id] < amount:
                    parts[capture_id] += unit
                    missing -= unit
    return [(capture_id, parts[capture_id]) for capture_id, _ in left if parts.get(capture_id)]


class OrderRefunds(Checkout):
    """``refund_order``: plan once, post each part once (see the module docstring)."""

    def refund_order(
        self, order_ref: str, amount: object | None, refund_key: str, strategy: object
    ) -> PaymentFlow[OrderRefundOutcome]:
        order_ref = require_text("order_ref", order_ref, ORDER_REF_MAX)
        refund_key = require_text("refund_key", refund_key, ORDER_REFUND_TEXT["refund_key"])
        chosen = _require_strategy(strategy)
        plan_id = order_refund_id(order_ref, refund_key)
        reservations = self.store.list_reservations(order_ref=order_ref)
        with self.writing(order_refund_lock_key(order_ref)) as tx:
            plan = tx.get_order_refund(plan_id)
            if plan is None:
                plan = self._plan(tx, plan_id, order_ref, refund_key, amount, chosen, reservations)
                tx.insert_order_refund(plan)
            elif chosen is not plan.strategy or (
                amount is not None and positive_amount(amount, plan.decimals) != plan.amount
            ):
                raise InvalidInputError(
                    f"refund_key {refund_key!r} was used for another refund of this order "
                    f"({plan.amount} {plan.currency}, {plan.strategy.value})"
                )
        crash_point("order_refund.after_plan")
        return (yield from self.carry_on_order_refund(plan.id))

    def _plan(
        self,
        tx: LedgerTransaction,
        plan_id: str,
        order_ref: str,
        refund_key: str,
        amount: object | None,
        strategy: RefundStrategy,
        reservations: list[Reservation],
    ) -> OrderRefund:
        captures = [
            (op, reservation)
            for reservation in reservations
            for op in tx.captures_of_reservation(reservation.id)
            if op.state is OperationState.SUCCEEDED
        ]
        if not captures:
            raise InvalidAmountError(f"order {order_ref!r} has no settled capture to refund")
        currencies = {op.currency for op, _ in captures}
        decimals = {reservation.decimals for _, reservation in captures}
        if len(currencies) > 1 or len(decimals) > 1:
            raise InvalidInputError("the order's captures are in several currencies")
        pending = self._unposted_parts(tx, order_ref)
        newest_first = sorted(captures, key=lambda c: (c[0].created_at, c[0].id), reverse=True)
        left = [
            (op.id, self._left_to_refund(tx, op, reservation) - pending.get(op.id, Decimal(0)))
            for op, reservation in newest_first
        ]
        left = [(capture_id, amount) for capture_id, amount in left if amount > 0]
        refundable = sum((a for _, a in left), Decimal(0))
        places = decimals.pop()
        requested = refundable if amount is None else positive_amount(amount, places)
        if refundable <= 0:
            raise InvalidAmountError(f"nothing left to refund on order {order_ref!r}")
        if requested > refundable:
            raise InvalidAmountError(
                f"cannot refund {requested}: only {refundable} of order {order_ref!r} is refundable"
            )
        unit = Decimal(1).scaleb(-places)
        now = self.clock.now()
        return OrderRefund(
            id=plan_id,
            order_ref=order_ref,
            refund_key=refund_key,
            amount=requested,
            currency=currencies.pop(),
            decimals=places,
            strategy=strategy,
            state=OrderRefundState.OPEN,
            created_at=now,
            updated_at=now,
            parts=tuple(
                OrderRefundPart(capture_id, share, _part_operation_id(plan_id, capture_id))
                for capture_id, share in allocate(requested, left, strategy, unit)
            ),
        )

    def _unposted_parts(self, tx: LedgerTransaction, order_ref: str) -> dict[str, Decimal]:
        """Per capture, what the order's open plans will still refund (parts with no
        operation yet): money already promised, so a new plan does not count it again."""
        promised: dict[str, Decimal] = {}
        for other in tx.order_refunds_for_order(order_ref):
            if other.state is not OrderRefundState.OPEN:
                continue
            for part in other.parts:
                if tx.get_operation(part.operation_id) is None:
                    promised[part.capture_id] = promised.get(part.capture_id, 0) + part.amount
        return promised

    def carry_on_order_refund(self, plan_id: str) -> PaymentFlow[OrderRefundOutcome]:
        """Post the plan's parts that have no operation yet; mark it posted when none is
        left. Safe to run by several workers at once and again after a crash."""
        plan = self._order_refund(plan_id)
        operations: list[Operation] = []
        for part in plan.parts:
            try:
                operation = yield from self._post_part(plan, part)
            except FourWSError as exc:  # refused or unreachable: its operation says which
                log.warning(
                    "fourws_pay.order_refund.part_not_posted",
                    order_refund=plan.id,
                    capture=part.capture_id,
                    error=type(exc).__name__,
                )
                operation = self.store.get_operation(part.operation_id)
            if operation is not None:
                operations.append(operation)
        if plan.state is OrderRefundState.OPEN:
            with self.writing(order_refund_lock_key(plan.order_ref)) as tx:
                current = tx.get_order_refund(plan.id)
                assert current is not None
                if current.state is OrderRefundState.OPEN and all(
                    tx.get_operation(p.operation_id) is not None
                    or self._left_or_none(tx, p) is None
                    for p in current.parts
                ):
                    plan = replace(
                        current, state=OrderRefundState.POSTED, updated_at=self.clock.now()
                    )
                    tx.update_order_refund(plan, OrderRefundState.OPEN)
                else:
                    plan = current
        fresh = tuple(self._operation(op.id) for op in operations)
        outcome = OrderRefundOutcome(plan, fresh)
        if outcome.shortfall > 0:
            log.warning(
                "fourws_pay.order_refund.short",
                order_refund=plan.id,
                asked=str(plan.amount),
                posted=str(outcome.posted),
            )
        return outcome

    def _left_or_none(self, tx: LedgerTransaction, part: OrderRefundPart) -> Decimal | None:
        """What the part's capture has left, or None when nothing is (the part is skipped)."""
        capture = tx.get_operation(part.capture_id)
        reservation = None if capture is None else tx.get_reservation(capture.reservation_id)
        if capture is None or reservation is None:
            return None
        left = self._left_to_refund(tx, capture, reservation)
        return left if left > 0 else None

    def _post_part(self, plan: OrderRefund, part: OrderRefundPart) -> PaymentFlow[Operation | None]:
        """The part's refund, born under its card's lock only if no operation has its id."""
        known = self.store.get_operation(part.operation_id)
        if known is not None:
            return known
        capture = self._operation(part.capture_id)
        reservation = self._reservation(capture.reservation_id)
        token = secrets.token_urlsafe(32)
        with self.writing(capture.barcode) as tx:
            existing = tx.get_operation(part.operation_id)
            if existing is not None:
                return existing  # another worker posted it meanwhile
            left = self._left_or_none(tx, part)
            if left is None:
                return None
            if left < part.amount:
                log.warning(
                    "fourws_pay.order_refund.part_shortened",
                    order_refund=plan.id,
                    capture=part.capture_id,
                    planned=str(part.amount),
                    left=str(left),
                )
            operation, blocker = self._claim_or_queue(
                tx,
                OperationKind.REFUND,
                reservation,
                min(left, part.amount),
                self.clock.now(),
                token,
                parent=capture,
                operation_id=part.operation_id,
            )
        if blocker is not None:
            return (yield from self._queued(operation, reservation, blocker))
        crash_point("order_refund.after_part_prepared")
        return (yield from self._confirm_and_send(operation, reservation, token))

    def _order_refund(self, plan_id: str) -> OrderRefund:
        with self.store.snapshot() as tx:
            plan = tx.get_order_refund(plan_id)
        if plan is None:
            raise NotFoundInLedgerError(f"no order refund {plan_id}")
        return plan

    def order_refunds(self, order_ref: str) -> list[OrderRefundOutcome]:
        """The order's refunds, oldest first, each with its parts' operations."""
        outcomes = []
        for plan in self.store.list_order_refunds(order_ref=order_ref):
            ops = [self.store.get_operation(p.operation_id) for p in plan.parts]
            outcomes.append(OrderRefundOutcome(plan, tuple(op for op in ops if op is not None)))
        return outcomes

    def pending_order_refunds(self) -> list[str]:
        """Plans with a part not yet posted (a crash, 4WS unreachable): reconcile's work."""
        return [plan.id for plan in self.store.list_order_refunds([OrderRefundState.OPEN])]
