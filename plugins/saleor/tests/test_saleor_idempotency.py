"""Replays, retries, races and crashes: never reserve, capture or refund twice."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from fake_saleor import API_URL, action_payload, session_payload
from fourws_pay_saleor import AppStore
from fourws_pay_saleor.jsonutil import loads
from fourws_pay_saleor.payloads import WebhookEvent
from saleor_world import CARD, CARD_BALANCE, World

from fourws_pay.payments import OperationKind

INIT = WebhookEvent.TRANSACTION_INITIALIZE_SESSION
CHARGE = WebhookEvent.TRANSACTION_CHARGE_REQUESTED
REFUND = WebhookEvent.TRANSACTION_REFUND_REQUESTED


def captures(world: World) -> list[Any]:
    return [op for op in world.payments.store.list_operations() if op.kind is OperationKind.CAPTURE]


def refunds(world: World) -> list[Any]:
    return [op for op in world.payments.store.list_operations() if op.kind is OperationKind.REFUND]


async def send(world: World, event: WebhookEvent, payload: dict[str, Any]) -> bytes:
    response = await world.saleor.send(world.client, event, payload)
    assert response.status_code == 200, response.text
    return response.content


async def test_same_key_same_input_gets_the_same_answer(world: World) -> None:
    payload = session_payload("tx-i1", Decimal("25.00"), "AUTHORIZATION", CARD, idempotency_key="k")
    first = await send(world, INIT, payload)
    world.clock.advance(5)
    again = await send(world, INIT, payload)
    assert again == first  # same pspReference, result and time, byte for byte
    assert len(world.payments.store.list_reservations(order_ref="tx-i1")) == 1


async def test_same_key_different_input_is_refused_and_changes_nothing(world: World) -> None:
    first = loads(
        await send(
            world,
            INIT,
            session_payload("tx-i2", Decimal("25.00"), "AUTHORIZATION", CARD, idempotency_key="k"),
        )
    )
    other = loads(
        await send(
            world,
            INIT,
            session_payload("tx-i2", Decimal("99.00"), "AUTHORIZATION", CARD, idempotency_key="k"),
        )
    )
    assert other["result"] == "AUTHORIZATION_FAILURE"
    [reservation] = world.payments.store.list_reservations(order_ref="tx-i2")
    assert reservation.id == world.reservation_for(first["pspReference"]).id
    assert reservation.amount == Decimal("25.00")


async def test_replayed_charge_initialize_captures_once(world: World) -> None:
    payload = session_payload("tx-i3", Decimal("30.00"), "CHARGE", CARD, idempotency_key="c")
    first = await send(world, INIT, payload)
    await world.settle()
    again = await send(world, INIT, payload)
    assert again == first
    assert len(captures(world)) == 1
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("30.00")
    # A new key for the same Saleor transaction still finds the work already done.
    payload["idempotencyKey"] = "c-2"
    third = loads(await send(world, INIT, payload))
    assert third["pspReference"] == loads(first)["pspReference"]
    assert len(captures(world)) == 1


async def test_retried_charge_request_captures_once(world: World) -> None:
    auth = loads(
        await send(world, INIT, session_payload("tx-i4", Decimal("20.00"), "AUTHORIZATION", CARD))
    )
    request = action_payload(
        "tx-i4", Decimal("20.00"), "CHARGE", psp_reference=auth["pspReference"]
    )
    first = await send(world, CHARGE, request)
    second = await send(world, CHARGE, request)
    assert second == first
    await world.settle()
    third = await send(world, CHARGE, request)
    assert third == first
    assert len(captures(world)) == 1
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("20.00")
    assert [r["type"] for r in world.saleor.reports_of("tx-i4")] == ["CHARGE_SUCCESS"]


async def test_retried_refund_request_refunds_once(world: World) -> None:
    await send(world, INIT, session_payload("tx-i5", Decimal("40.00"), "CHARGE", CARD))
    await world.settle()
    request = action_payload("tx-i5", Decimal("15.00"), "REFUND")
    first = await send(world, REFUND, request)
    second = await send(world, REFUND, request)
    assert second == first
    await world.settle()
    assert await send(world, REFUND, request) == first
    assert len(refunds(world)) == 1
    assert world.sandbox.balance(CARD) == CARD_BALANCE - Decimal("25.00")


async def test_concurrent_identical_initializes_reserve_once(world: World) -> None:
    payload = session_payload("tx-i6", Decimal("10.00"), "CHARGE", CARD, idempotency_key="race")
    bodies = await asyncio.gather(*(send(world, INIT, payload) for _ in range(4)))
    assert len(set(bodies)) == 1
    assert len(world.payments.store.list_reservations(order_ref="tx-i6")) == 1
    assert len(captures(world)) == 1


class _CrashOnce:
    """Wraps the gateway; the first call of ``method`` after ``after`` raises (a crash)."""

    def __init__(self, inner: Any, after: str, method: str) -> None:
        self.inner = inner
        self.after = after
        self.method = method
        self.armed = False
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            if name == self.method and self.armed and not self.crashed:
                self.crashed = True
                raise RuntimeError("process died here")
            result = await target(*args, **kwargs)
            if name == self.after:
                self.armed = True
            return result

        return wrapped if asyncio.iscoroutinefunction(target) else target


@pytest.mark.parametrize(
    ("action", "after", "method"),
    [
        ("AUTHORIZATION", "reserve", "get_reservation"),  # reserved, not answered
        ("CHARGE", "reserve", "get_reservation"),  # reserved, not captured
        ("CHARGE", "capture", "get_operation"),  # captured, not linked or answered
    ],
)
async def test_a_crash_mid_request_resumes_without_doing_it_twice(
    world: World, action: str, after: str, method: str
) -> None:
    handlers = world.state.handlers
    crashing = _CrashOnce(handlers.gateway, after, method)
    handlers.gateway = crashing
    payload = session_payload("tx-crash", Decimal("35.00"), action, CARD, idempotency_key="x")
    with pytest.raises(RuntimeError, match="process died here"):
        await world.saleor.send(world.client, INIT, payload)
    assert crashing.crashed
    body = loads(await send(world, INIT, payload))
    assert body["result"] in {"AUTHORIZATION_SUCCESS", "CHARGE_REQUEST"}
    assert len(world.payments.store.list_reservations(order_ref="tx-crash")) == 1
    assert len(captures(world)) == (1 if action == "CHARGE" else 0)
    await world.settle()
    expected = CARD_BALANCE - (Decimal("35.00") if action == "CHARGE" else 0)
    assert world.sandbox.balance(CARD) == expected
    if action == "CHARGE":
        [report] = world.saleor.reports_of("tx-crash")
        assert report["pspReference"] == body["pspReference"]


@pytest.mark.parametrize("action", ["AUTHORIZATION", "CHARGE"])
async def test_a_crash_before_the_reservation_was_recorded_adopts_it(
    world: World, action: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = world.store.save_transaction
    crashed: list[bool] = []

    def save(record: Any) -> None:
        if record.reservation_id is not None and not crashed:
            crashed.append(True)
            raise RuntimeError("process died here")
        real_save(record)

    monkeypatch.setattr(world.store, "save_transaction", save)
    payload = session_payload("tx-adopt", Decimal("45.00"), action, CARD, idempotency_key="a")
    with pytest.raises(RuntimeError, match="process died here"):
        await world.saleor.send(world.client, INIT, payload)
    [held] = world.payments.store.list_reservations(order_ref="tx-adopt")
    body = loads(await send(world, INIT, payload))
    assert world.payments.store.list_reservations(order_ref="tx-adopt") == [
        world.payments.store.get_reservation(held.id)
    ]
    if action == "AUTHORIZATION":
        assert world.reservation_for(body["pspReference"]).id == held.id
    else:
        assert [op.reservation_id for op in captures(world)] == [held.id]


async def test_another_worker_holding_the_transaction_means_try_later_then_recovery(
    world: World,
) -> None:
    payload = session_payload("tx-lease", Decimal("10.00"), "AUTHORIZATION", CARD)
    key = f"{API_URL}\0tx-lease"
    other = AppStore(world.store.path)  # a second uvicorn worker on the same file
    assert other.try_lease(key, "worker-2", world.clock.now().timestamp(), ttl=60)
    busy = await world.saleor.send(world.client, INIT, payload)
    assert busy.status_code == 200  # nothing moved: a failure Saleor can show, not a 5xx
    assert busy.json()["result"] == "AUTHORIZATION_FAILURE"
    assert world.payments.store.list_reservations(order_ref="tx-lease") == []
    world.clock.advance(61)  # worker 2 died; its lease lapses
    body = loads(await send(world, INIT, payload))
    assert body["result"] == "AUTHORIZATION_SUCCESS"
    other.close()
