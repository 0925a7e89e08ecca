"""The asynchronous side of 4WS: a queue of accepted operations and an outbox of callbacks.

``updateGiftcard``, ``generateGiftcards`` and (with a callback) the PDF request answer
``{"success": true, "queueId"}`` at once; the work happens when the queue is processed,
which the sandbox's clock decides: an item is due ``queue_delay`` seconds after it was
accepted, and its callback is due ``callback_delay`` seconds (plus any ``delay`` fault)
after it was processed. Nothing here does I/O or reads a clock; the ``Sandbox`` passes
``now`` in and delivers the outbox.

Callback bodies follow the reference (docs/4ws-reference.md §6, §8 and §9). The caller's
``payload`` is echoed under a top-level key (``payload`` by default) because the reference
does not say where 4WS puts it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from fourws_pay.api import wirejson
from fourws_pay.sandbox.faults import Fault
from fourws_pay.sandbox.state import Books, LedgerRecord, Refused

ItemKind = Literal["update", "generate", "pdf"]
ITEM_KINDS: frozenset[str] = frozenset(get_args(ItemKind))


@dataclass
class QueueItem:
    """An accepted asynchronous request waiting to be processed."""

    queue_id: str
    kind: ItemKind
    endpoint: str
    body: dict[str, Any]
    enqueued_at: datetime
    due_at: datetime
    callback_fault: Fault | None = None

    @property
    def callback(self) -> str | None:
        url = self.body.get("callback")
        return str(url) if isinstance(url, str) and url else None


@dataclass(frozen=True)
class PendingCallback:
    """A callback POST waiting for its due time in the outbox."""

    url: str
    body: bytes
    queue_id: str
    due_at: datetime
    copies: int = 1
    reorder: bool = False


@dataclass(frozen=True)
class QueueOutcome:
    """What processing one queue item did; ``callback_body`` is what 4WS would POST."""

    queue_id: str
    kind: ItemKind
    success: bool
    message: str | None
    callback_body: dict[str, Any]
    record: LedgerRecord | None = None
    callback_fault: Fault | None = None


@dataclass
class QueueConfig:
    """Timing and shape choices of the simulated queue (all simulator defaults)."""

    queue_delay: float = 0.0
    callback_delay: float = 0.0
    payload_key: str | None = "payload"
    callback_id_is_queue_id: bool = False
    giftcard_validity: timedelta = timedelta(days=365)


@dataclass
class WorkQueue:
    """FIFO of accepted items plus the outbox of callbacks. Thread-safe: every access goes
    through these methods, which hold the lock; the lists themselves are private."""

    _items: list[QueueItem] = field(default_factory=list)
    _outbox: list[PendingCallback] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enqueue(
        self,
        kind: ItemKind,
        endpoint: str,
        body: dict[str, Any],
        now: datetime,
        delay: float,
        callback_fault: Fault | None = None,
    ) -> QueueItem:
        """Accept an item; an unknown ``kind`` is a programming error (``ValueError``), not
        silently some other kind of work."""
        if kind not in ITEM_KINDS:
            raise ValueError(
                f"unknown queue item kind {kind!r}; expected one of {sorted(ITEM_KINDS)}"
            )
        item = QueueItem(
            queue_id=str(uuid.uuid4()),
            kind=kind,
            endpoint=endpoint,
            body=body,
            enqueued_at=now,
            due_at=now + timedelta(seconds=delay),
            callback_fault=callback_fault,
        )
        with self._lock:
            self._items.append(item)
        return item

    def pending(self) -> list[QueueItem]:
        """Accepted items not processed yet, oldest first (a copy)."""
        with self._lock:
            return list(self._items)

    def take_due(self, now: datetime) -> list[QueueItem]:
        with self._lock:
            due = [i for i in self._items if i.due_at <= now]
            self._items = [i for i in self._items if i.due_at > now]
        return due

    def take(self, queue_id: str) -> QueueItem | None:
        with self._lock:
            for item in self._items:
                if item.queue_id == queue_id:
                    self._items.remove(item)
                    return item
        return None

    def post(self, callback: PendingCallback) -> None:
        with self._lock:
            self._outbox.append(callback)

    def due_callbacks(self, now: datetime) -> list[PendingCallback]:
        """Due callbacks in delivery order: FIFO, with ``reorder`` ones moved last."""
        with self._lock:
            due = [c for c in self._outbox if c.due_at <= now]
            self._outbox = [c for c in self._outbox if c.due_at > now]
        return [c for c in due if not c.reorder] + [c for c in due if c.reorder]

    def take_callbacks(self, queue_id: str) -> list[PendingCallback]:
        """Remove and return the callbacks of one item, due or not (for delivering them at
        once, as the ``before_response`` fault does)."""
        with self._lock:
            mine = [c for c in self._outbox if c.queue_id == queue_id]
            self._outbox = [c for c in self._outbox if c.queue_id != queue_id]
        return mine

    def next_due(self) -> datetime | None:
        with self._lock:
            times = [i.due_at for i in self._items] + [c.due_at for c in self._outbox]
        return min(times) if times else None


def process_item(
    item: QueueItem,
    books: Books,
    now: datetime,
    config: QueueConfig,
    pdf_url: Callable[[list[str]], str],
) -> QueueOutcome:
    """Apply one queue item to the books and build its callback body."""
    record: LedgerRecord | None = None
    payload = item.body.get("payload")
    body: dict[str, Any]
    if item.kind == "update":
        record = books.apply_update(
            item.body,
            now=now,
            queue_id=item.queue_id,
            payload=payload,
            default_validity=config.giftcard_validity,
        )
        cid = item.queue_id if config.callback_id_is_queue_id else record.callback_id
        if record.outcome == "applied":
            body = {"success": True, "id": cid}
        else:
            body = {"success": False, "message": record.message}
    elif item.kind == "generate":
        try:
            cards = books.generate(
                str(item.body.get("itemCode", "")),
                int(item.body.get("giftcards", 0)),
                now,
                config.giftcard_validity,
            )
            body = {"success": True, "giftcards": cards}
        except Refused as refusal:
            body = {"success": False, "message": refusal.message}
    elif item.kind == "pdf":
        codes = [str(b) for b in item.body.get("barcodes", [])]
        missing = [b for b in codes if b not in books.cards]
        if missing or not codes:
            body = {"success": False, "message": "barcode not found"}
        else:
            body = {"success": True, "url": pdf_url(codes)}
    else:
        raise ValueError(f"unknown queue item kind {item.kind!r}")
    if config.payload_key and "payload" in item.body:
        body[config.payload_key] = payload
    success = body["success"] is True
    message = None if success else str(body.get("message"))
    return QueueOutcome(
        queue_id=item.queue_id,
        kind=item.kind,
        success=success,
        message=message,
        callback_body=body,
        record=record,
        callback_fault=item.callback_fault,
    )


def schedule_callback(
    queue: WorkQueue, item: QueueItem, outcome: QueueOutcome, now: datetime, config: QueueConfig
) -> PendingCallback | None:
    """Put the callback in the outbox, shaped by the item's callback fault; None if dropped
    or the request carried no callback URL."""
    url = item.callback
    fault = item.callback_fault
    if url is None or (fault is not None and fault.kind == "drop"):
        return None
    delay = config.callback_delay
    if fault is not None and fault.kind == "delay":
        delay += fault.seconds
    callback = PendingCallback(
        url=url,
        body=wirejson.dumps(outcome.callback_body).encode(),
        queue_id=item.queue_id,
        due_at=now + timedelta(seconds=delay),
        copies=fault.copies if fault is not None and fault.kind == "duplicate" else 1,
        reorder=fault is not None and fault.kind == "reorder",
    )
    queue.post(callback)
    return callback
