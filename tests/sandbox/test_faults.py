"""Every fault knob, and what the client does about it.

Reads are idempotent and retried (honouring Retry-After); a consumption is never re-sent
once it may have reached 4WS: it surfaces as ``AmbiguousOutcomeError`` and the sandbox's
ledger shows it was applied at most once.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from fourws_pay.api.models import GiftCardUpdate
from fourws_pay.clock import ManualClock
from fourws_pay.errors import (
    AmbiguousOutcomeError,
    APIFailure,
    AuthenticationError,
    RateLimitedError,
    ReadTimeout,
    ServerError,
    TransportError,
)
from fourws_pay.sandbox import Fault, Sandbox
from fourws_pay.sandbox import seed as demo

from .conftest import Either

CB = "http://shop.test/fourws/callback/op/tok"
CARD = demo.EXAMPLE_CARD


def spend(amount: str = "-10.00", **kw: object) -> GiftCardUpdate:
    return GiftCardUpdate(entity_code="440", barcode=CARD, amount=Decimal(amount), **kw)


def posts(sb: Sandbox) -> int:
    return len(sb.requests_to("update_giftcard"))


# ----------------------------------------------------------------- request faults


async def test_latency_delays_the_answer_on_the_clock(api: Either, sb: Sandbox) -> None:
    sb.faults.add("get_giftcard", Fault.latency(2.5))
    before = sb.clock.now()
    assert (await api.get_giftcard(CARD)).amount == 390
    assert (sb.clock.now() - before).total_seconds() == 2.5


async def test_5xx_on_a_read_is_retried(api: Either, sb: Sandbox) -> None:
    sb.faults.add("get_giftcard", Fault.server_error(503), times=2)
    assert (await api.get_giftcard(CARD)).amount == 390
    assert [r.status for r in sb.requests_to("get_giftcard")] == [503, 503, 200]


async def test_5xx_on_reads_gives_up_with_server_error(api: Either, sb: Sandbox) -> None:
    sb.faults.add("get_giftcard", Fault.server_error(502), times=None)
    with pytest.raises(ServerError) as info:
        await api.get_giftcard(CARD)
    assert info.value.status_code == 502
    assert len(sb.requests_to("get_giftcard")) == sb.settings.retry.max_attempts


@pytest.mark.parametrize("after_enqueue", [False, True])
async def test_5xx_on_consumption_is_ambiguous_and_not_resent(
    api: Either, sb: Sandbox, after_enqueue: bool
) -> None:
    sb.faults.add("update_giftcard", Fault.server_error(500, after_enqueue=after_enqueue))
    with pytest.raises(AmbiguousOutcomeError):
        await api.update_giftcard(spend())
    assert posts(sb) == 1
    sb.process_queue()
    expected = Decimal(380) if after_enqueue else Decimal(390)
    assert sb.balance(CARD) == expected
    assert len(sb.applied_operations(CARD)) == (1 if after_enqueue else 0)


async def test_429_on_a_read_honours_retry_after(api: Either, sb: Sandbox) -> None:
    clock = sb.clock
    assert isinstance(clock, ManualClock)
    sb.faults.add("get_giftcard", Fault.rate_limited(retry_after=7))
    assert (await api.get_giftcard(CARD)).amount == 390
    assert clock.slept == [7.0]
    assert [r.status for r in sb.requests_to("get_giftcard")] == [429, 200]


async def test_429_on_consumption_is_a_definite_refusal(api: Either, sb: Sandbox) -> None:
    sb.faults.add("update_giftcard", Fault.rate_limited(retry_after=3))
    with pytest.raises(RateLimitedError) as info:
        await api.update_giftcard(spend())
    assert info.value.retry_after == 3
    assert posts(sb) == 1
    assert sb.pending() == []


async def test_token_bucket_rate_limit(clock: ManualClock) -> None:
    sb = Sandbox(clock=clock, seed="demo", rate_limit=(2, 0.5))
    with sb.client() as client:
        for _ in range(3):
            client.get_giftcard(CARD)
    statuses = [r.status for r in sb.requests_to("get_giftcard")]
    assert statuses == [200, 200, 429, 200]
    assert clock.slept == [2.0]


async def test_hang_on_a_read_times_out_then_retries(api: Either, sb: Sandbox) -> None:
    sb.faults.add("get_giftcard", Fault.hang())
    assert (await api.get_giftcard(CARD)).amount == 390
    assert len(sb.requests_to("get_giftcard")) == 2


async def test_hang_on_consumption_is_ambiguous(api: Either, sb: Sandbox) -> None:
    sb.faults.add("update_giftcard", Fault.hang())
    before = sb.clock.now()
    with pytest.raises(AmbiguousOutcomeError) as info:
        await api.update_giftcard(spend())
    # the manual clock moved by the client's read timeout, as a real wait would have
    assert (sb.clock.now() - before).total_seconds() == sb.settings.read_timeout
    assert isinstance(info.value.__cause__, ReadTimeout)
    assert posts(sb) == 1
    sb.process_queue()
    assert sb.balance(CARD) == Decimal(380)


async def test_reset_after_enqueue_applies_exactly_once(api: Either, sb: Sandbox) -> None:
    sb.faults.add("update_giftcard", Fault.reset_after_enqueue())
    with pytest.raises(AmbiguousOutcomeError) as info:
        await api.update_giftcard(spend("-25.00"))
    assert isinstance(info.value.__cause__, TransportError)
    assert posts(sb) == 1
    sb.process_queue()
    assert sb.total_consumed(CARD) == Decimal(25)


async def test_reset_before_enqueue_on_a_read_is_retried(api: Either, sb: Sandbox) -> None:
    sb.faults.add("get_giftcard", Fault.reset(after_enqueue=False))
    assert (await api.get_giftcard(CARD)).amount == 390


@pytest.mark.parametrize("fault", [Fault.truncated_body(), Fault.invalid_json()])
async def test_unreadable_answers(api: Either, sb: Sandbox, fault: Fault) -> None:
    sb.faults.add("get_giftcard", fault)
    assert (await api.get_giftcard(CARD)).amount == 390  # a read is simply retried
    sb.faults.add("update_giftcard", fault)
    with pytest.raises(AmbiguousOutcomeError):
        await api.update_giftcard(spend())
    assert posts(sb) == 1
    sb.process_queue()
    assert len(sb.applied_operations(CARD)) == 1


async def test_success_false_under_200(api: Either, sb: Sandbox) -> None:
    sb.faults.add("update_giftcard", Fault.success_false("queue is full"))
    with pytest.raises(APIFailure, match="queue is full"):
        await api.update_giftcard(spend())
    assert sb.pending() == []
    sb.faults.add("get_giftcard", Fault.success_false("try later"))
    with pytest.raises(APIFailure, match="try later"):
        await api.get_giftcard(CARD)


async def test_http_401_fault(api: Either, sb: Sandbox) -> None:
    sb.faults.add("get_giftcard", Fault.http_status(401, "Access Denied."))
    with pytest.raises(AuthenticationError):
        await api.get_giftcard(CARD)


async def test_in_shop_spend_behind_our_back(
    api: Either, sb: Sandbox, received: list[tuple[str, bytes]]
) -> None:
    card = await api.get_giftcard(CARD)
    assert card.amount == 390
    sb.faults.add("update_giftcard", Fault.in_shop_spend(CARD, "300"))
    await api.update_giftcard(spend("-100.00", callback=CB))
    sb.process_queue()
    assert json.loads(received[0][1]) == {"success": False, "message": "insufficient balance"}
    kinds = [(r.kind, r.outcome) for r in sb.operations(CARD)]
    assert kinds == [("in_shop_spend", "applied"), ("consumption", "refused")]
    assert sb.balance(CARD) == Decimal(90)


def test_direct_in_shop_spend_is_recorded(sb: Sandbox) -> None:
    rec = sb.spend_in_shop(CARD, "12.34")
    assert rec.kind == "in_shop_spend"
    assert rec.queue_id is None
    assert sb.balance(CARD) == Decimal("377.66")
    assert sb.total_consumed(CARD) == 0
    assert sb.total_consumed(CARD, include_in_shop=True) == Decimal("12.34")
    with pytest.raises(ValueError):
        sb.spend_in_shop(CARD, "1000")


# ---------------------------------------------------------------- callback faults


async def test_dropped_callback(api: Either, sb: Sandbox, received: list) -> None:
    sb.faults.add("update_giftcard", Fault.drop_callback())
    queued = await api.update_giftcard(spend(callback=CB))
    sb.process_queue()
    assert received == []
    assert sb.dropped_callbacks == [queued.queue_id]
    assert sb.balance(CARD) == Decimal(380)  # applied all the same


async def test_duplicated_callback(api: Either, sb: Sandbox, received: list) -> None:
    sb.faults.add("update_giftcard", Fault.duplicate_callback(3))
    await api.update_giftcard(spend(callback=CB, payload="x"))
    sb.process_queue()
    assert len(received) == 3
    assert len({body for _, body in received}) == 1
    assert len(sb.applied_operations(CARD)) == 1


async def test_delayed_callback(api: Either, sb: Sandbox, received: list) -> None:
    clock = sb.clock
    assert isinstance(clock, ManualClock)
    sb.faults.add("update_giftcard", Fault.delay_callback(60))
    await api.update_giftcard(spend(callback=CB))
    sb.process_queue()
    assert received == []
    assert sb.balance(CARD) == Decimal(380)
    clock.advance(59)
    sb.process_queue()
    assert received == []
    clock.advance(1)
    sb.process_queue()
    assert len(received) == 1


async def test_reordered_callbacks(api: Either, sb: Sandbox, received: list) -> None:
    sb.faults.add("update_giftcard", Fault.reorder_callback())
    await api.update_giftcard(spend("-1.00", callback=CB, payload="first"))
    await api.update_giftcard(spend("-2.00", callback=CB, payload="second"))
    sb.process_queue()
    assert [json.loads(b)["payload"] for _, b in received] == ["second", "first"]
    assert [r.payload for r in sb.applied_operations(CARD)] == ["first", "second"]


async def test_callback_before_response(api: Either, sb: Sandbox) -> None:
    returned: list[str] = []
    seen: list[tuple[list[str], dict]] = []

    def handler(url: str, body: bytes) -> int:
        seen.append((list(returned), json.loads(body)))
        return 200

    sb.set_callback_handler(handler)
    sb.faults.add("update_giftcard", Fault.callback_before_response())
    queued = await api.update_giftcard(spend(callback=CB, payload="early"))
    returned.append(queued.queue_id)
    assert seen == [([], {"success": True, "id": seen[0][1]["id"], "payload": "early"})]
    assert sb.pending() == []
    assert sb.process_queue().processed == []
    assert sb.balance(CARD) == Decimal(380)


async def test_callback_receiver_failures_are_recorded(api: Either, sb: Sandbox) -> None:
    def broken(url: str, body: bytes) -> int:
        raise RuntimeError("receiver down")

    sb.set_callback_handler(broken)
    await api.update_giftcard(spend(callback=CB))
    run = sb.process_queue()
    assert run.delivered[0].status is None
    assert "receiver down" in (run.delivered[0].error or "")
    sb.set_callback_handler(lambda url, body: 503)
    await api.update_giftcard(spend(callback=CB))
    assert sb.process_queue().delivered[0].status == 503


def test_fault_plan_counts_and_wildcards(sb: Sandbox) -> None:
    sb.faults.add("*", Fault.server_error(503), times=1)
    sb.faults.add("update_giftcard", Fault.drop_callback(), times=None)
    assert sb.faults.take("login") is not None
    assert sb.faults.take("login") is None
    assert sb.faults.take("update_giftcard", callback=True) is not None
    assert sb.faults.take("update_giftcard", callback=True) is not None
    assert len(sb.faults.pending()) == 1
    sb.faults.clear()
    assert sb.faults.pending() == []
    with pytest.raises(ValueError):
        sb.faults.add("nope", Fault.hang())
    with pytest.raises(ValueError):
        Fault("explode")
    spec = sb.faults.add_spec({"endpoint": "get_giftcard", "kind": "rate_limited", "seconds": 2})
    assert spec == Fault.rate_limited(2)
    with pytest.raises(ValueError):
        sb.faults.add_spec({"kind": "hang", "bogus": 1})


async def test_async_callback_handler(api: Either, sb: Sandbox) -> None:
    got: list[bytes] = []

    async def handler(url: str, body: bytes) -> int:
        got.append(body)
        return 204

    sb.set_callback_handler(handler)
    await api.update_giftcard(spend(callback=CB))
    run = sb.process_queue()
    assert run.delivered[0].status == 204
    assert len(got) == 1
    await api.update_giftcard(spend(callback=CB))
    run = await sb.aprocess_queue()
    assert run.delivered[0].status == 204
