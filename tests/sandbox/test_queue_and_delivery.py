"""The sandbox queue's own interface and the one callback-delivery policy behind both the
blocking and the event-loop senders."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from fourws_pay.clock import ManualClock
from fourws_pay.sandbox import Sandbox
from fourws_pay.sandbox.callbacks import CallbackDelivery, CallbackSender
from fourws_pay.sandbox.queue import (
    PendingCallback,
    QueueConfig,
    WorkQueue,
    process_item,
    schedule_callback,
)
from fourws_pay.sandbox.state import Books

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_unknown_queue_kind_is_an_error_not_a_pdf(sb: Sandbox) -> None:
    with pytest.raises(ValueError, match="unknown queue item kind 'pdff'"):
        sb.enqueue("pdff", "giftcard_pdf", {"barcodes": []}, None)  # type: ignore[arg-type]
    assert sb.pending() == []


def test_process_item_refuses_an_unknown_kind() -> None:
    queue = WorkQueue()
    item = queue.enqueue("pdf", "giftcard_pdf", {"barcodes": ["1"]}, NOW, 0)
    item.kind = "print"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="unknown queue item kind 'print'"):
        process_item(item, Books(), NOW, QueueConfig(), lambda codes: "unused")


def test_queue_hands_out_copies_and_takes_one_items_callbacks() -> None:
    queue = WorkQueue()
    config = QueueConfig(callback_delay=60)
    first = queue.enqueue("pdf", "giftcard_pdf", {"barcodes": [], "callback": "http://a/1"}, NOW, 0)
    second = queue.enqueue(
        "pdf", "giftcard_pdf", {"barcodes": [], "callback": "http://a/2"}, NOW, 0
    )
    pending = queue.pending()
    pending.clear()  # a copy: the queue is not changed through it
    assert [i.queue_id for i in queue.pending()] == [first.queue_id, second.queue_id]
    for item in queue.take_due(NOW):
        outcome = process_item(item, Books(), NOW, config, lambda codes: "unused")
        schedule_callback(queue, item, outcome, NOW, config)
    assert queue.pending() == []
    mine = queue.take_callbacks(second.queue_id)
    assert [c.url for c in mine] == ["http://a/2"]
    assert queue.take_callbacks(second.queue_id) == []
    assert queue.next_due() == NOW + timedelta(seconds=60)
    assert queue.due_callbacks(NOW) == []  # not due yet
    assert [c.url for c in queue.due_callbacks(NOW + timedelta(seconds=60))] == ["http://a/1"]


def _pending(url: str, copies: int) -> PendingCallback:
    return PendingCallback(url=url, body=b"{}", queue_id="q1", due_at=NOW, copies=copies)


def send(sender: CallbackSender, cb: PendingCallback, mode: str) -> list[CallbackDelivery]:
    if mode == "sync":
        return sender.deliver(cb)
    return asyncio.run(sender.adeliver(cb))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("handler_is_async", [False, True])
def test_both_senders_apply_the_same_policy(mode: str, handler_is_async: bool) -> None:
    """Copies, failures and the loopback rule come out the same from either sender."""
    answers = iter([200, RuntimeError("receiver down"), 503])
    seen: list[str] = []

    def answer(url: str) -> int:
        seen.append(url)
        got = next(answers)
        if isinstance(got, Exception):
            raise got
        return got

    async def async_handler(url: str, body: bytes) -> int:
        return answer(url)

    def sync_handler(url: str, body: bytes) -> int:
        return answer(url)

    sender = CallbackSender(ManualClock(NOW), timeout=1, hosts=(), history_limit=10)
    sender.handler = async_handler if handler_is_async else sync_handler
    cb = _pending("http://127.0.0.1:9/cb", copies=3)
    out = send(sender, cb, mode)
    assert [(d.status, d.error) for d in out] == [
        (200, None),
        (None, "RuntimeError: receiver down"),
        (503, None),
    ]
    assert list(sender.history) == out
    assert len(seen) == 3


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_neither_sender_posts_off_the_machine(mode: str) -> None:
    sender = CallbackSender(ManualClock(NOW), timeout=1, hosts=(), history_limit=10)
    cb = _pending("https://webhook.site/abc", copies=2)
    out = send(sender, cb, mode)
    assert [(d.status, d.error) for d in out] == [
        (None, "not delivered: callback host is not loopback")
    ] * 2
