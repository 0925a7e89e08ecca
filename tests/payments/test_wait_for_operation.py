"""``wait_for_operation``: until the operation is settled, or the timeout on the provider's
clock; the same flow for both twins (``PaymentsCore.wait_for_operation``).

Time is a ``ManualClock``: a pause advances it instead of sleeping, and ``slept`` shows
the pauses asked for. "4WS working meanwhile" is the sandbox processing its queue from
inside one of those pauses, as another thread or process would while the waiter waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fourws_pay.clock import ManualClock
from fourws_pay.errors import InvalidInputError, NotFoundInLedgerError
from fourws_pay.ledger import SQLiteStore
from fourws_pay.payments import AsyncGiftCardPayments, GiftCardPayments, OperationState
from fourws_pay.payments.settlement import WAIT_FIRST_POLL, WAIT_MAX_POLL
from fourws_pay.sandbox import Sandbox

CARD = "2000000001814"  # demo seed: 390.00 EUR


class WorkingClock(ManualClock):
    """A manual clock that lets 4WS work (``work``) during the ``at``-th pause."""

    def __init__(self) -> None:
        super().__init__()
        self.at: int | None = None
        self.work: Callable[[], object] = lambda: None
        self.awork: Callable[[], Awaitable[object]] | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if len(self.slept) == self.at:
            self.work()

    async def asleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if len(self.slept) == self.at and self.awork is not None:
            await self.awork()


@pytest.fixture
def clock() -> WorkingClock:
    return WorkingClock()


@pytest.fixture
def sandbox(clock: WorkingClock) -> Sandbox:
    return Sandbox(clock=clock, seed="demo")


@pytest.fixture
def payments(sandbox: Sandbox, clock: WorkingClock, tmp_path: Path) -> GiftCardPayments:
    shop = GiftCardPayments(
        client=sandbox.client(), store=SQLiteStore(tmp_path / "ledger.db"), clock=clock
    )
    sandbox.set_callback_handler(
        lambda url, body: shop.handle_callback(urlsplit(url).path, body).status_code
    )
    return shop


def capture(payments: GiftCardPayments, amount: str = "30.00") -> str:
    hold = payments.reserve(CARD, amount=Decimal(amount), currency="EUR", order_ref="ORD-1")
    op = payments.capture(hold.id)
    assert op.state is OperationState.ENQUEUED
    return op.id


def test_returns_once_4ws_has_called_back(
    payments: GiftCardPayments, sandbox: Sandbox, clock: WorkingClock
) -> None:
    op_id = capture(payments)
    clock.at, clock.work = 3, sandbox.process_queue  # 4WS applies it during the 3rd pause
    settled = payments.wait_for_operation(op_id, timeout=30)
    assert settled.state is OperationState.SUCCEEDED
    assert clock.slept == [WAIT_FIRST_POLL, 2 * WAIT_FIRST_POLL, 4 * WAIT_FIRST_POLL]
    assert sandbox.balance(CARD) == Decimal("360.00")


def test_a_settled_operation_returns_without_pausing(
    payments: GiftCardPayments, sandbox: Sandbox, clock: WorkingClock
) -> None:
    op_id = capture(payments)
    sandbox.process_queue()
    assert payments.wait_for_operation(op_id, timeout=30).state is OperationState.SUCCEEDED
    assert clock.slept == []


def test_after_the_timeout_it_returns_the_operation_as_it_stands(
    payments: GiftCardPayments, clock: WorkingClock
) -> None:
    op_id = capture(payments)
    started = clock.monotonic()
    pending = payments.wait_for_operation(op_id, timeout=5)
    assert pending.state is OperationState.ENQUEUED  # nothing changed, nothing raised
    assert clock.monotonic() - started == pytest.approx(5)
    assert sum(clock.slept) == pytest.approx(5)  # never past the deadline
    assert max(clock.slept) <= WAIT_MAX_POLL  # polls back off, up to a cap
    assert clock.slept[:3] == [WAIT_FIRST_POLL, 2 * WAIT_FIRST_POLL, 4 * WAIT_FIRST_POLL]
    assert payments.wait_for_operation(op_id, timeout=0).state is OperationState.ENQUEUED


@pytest.mark.parametrize("timeout", [-1, float("nan"), float("inf"), "5", True])
def test_a_bad_timeout_is_refused(payments: GiftCardPayments, timeout: object) -> None:
    op_id = capture(payments)
    with pytest.raises(InvalidInputError):
        payments.wait_for_operation(op_id, timeout=timeout)  # type: ignore[arg-type]


def test_an_unknown_operation_is_not_found(payments: GiftCardPayments) -> None:
    with pytest.raises(NotFoundInLedgerError):
        payments.wait_for_operation("op_nope", timeout=1)


def test_the_async_twin_runs_the_same_flow_awaiting_its_pauses(
    sandbox: Sandbox, clock: WorkingClock, tmp_path: Path
) -> None:
    async def main() -> tuple[OperationState, OperationState]:
        shop = AsyncGiftCardPayments(
            client=sandbox.async_client(), store=SQLiteStore(tmp_path / "a.db"), clock=clock
        )

        async def deliver(url: str, body: bytes) -> int:
            return (await shop.handle_callback(urlsplit(url).path, body)).status_code

        sandbox.set_callback_handler(deliver)
        try:
            hold = await shop.reserve(CARD, amount="30.00", currency="EUR", order_ref="A-1")
            op = await shop.capture(hold.id)
            late = await shop.wait_for_operation(op.id, timeout=1)  # nobody works: timeout
            clock.slept.clear()
            clock.at, clock.awork = 2, sandbox.aprocess_queue
            settled = await shop.wait_for_operation(op.id, timeout=30)
        finally:
            await shop.aclose()
        return late.state, settled.state

    late, settled = asyncio.run(main())
    assert late is OperationState.ENQUEUED
    assert settled is OperationState.SUCCEEDED
    assert clock.slept == [WAIT_FIRST_POLL, 2 * WAIT_FIRST_POLL]  # asleep(), on the loop
    assert sandbox.balance(CARD) == Decimal("360.00")
