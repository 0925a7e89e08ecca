"""The short card cache behind ``check`` (and only ``check``: it promises nothing)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from fourws_pay.api.models import GiftCard
from fourws_pay.clock import Clock


@dataclass(frozen=True)
class CardRead:
    """A card as read from 4WS, with the instant the read started (for *held*).

    In the ``check`` cache it also keeps ``held`` as computed right after the read, so a
    cache hit costs no ledger query. Any ledger change this provider makes to the card
    evicts the entry; changes by other processes show up within the cache TTL, which is
    acceptable because ``check`` promises nothing: ``reserve`` decides again, fresh and
    under the card's lock.
    """

    card: GiftCard | None
    read_at: datetime
    held: Decimal | None = None


class CardCache:
    """The short TTL cache behind ``check`` (disabled when ``check_cache_ttl`` is 0).

    A plain dict with expiry instants rather than ``cachetools.TTLCache``: this is the
    hot path of ``check`` (goal: a hit in under 20 µs) and expire-on-access bookkeeping
    cost more than the rest of a hit. Size is bounded by dropping expired entries, then
    everything, when ``maxsize`` is reached.
    """

    def __init__(self, ttl: float, clock: Clock, maxsize: int = 10_000) -> None:
        self._ttl = ttl
        self._clock = clock
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._entries: dict[str, tuple[float, CardRead]] = {}

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    def get(self, barcode: str) -> CardRead | None:
        entry = self._entries.get(barcode)  # a dict read is atomic under the GIL
        if entry is None or entry[0] <= self._clock.monotonic():
            return None
        return entry[1]

    def version(self, barcode: str) -> int:
        """Bumped by every eviction; ``put(..., if_version=)`` refuses a stale view."""
        with self._lock:
            return self._versions.get(barcode, 0)

    def put(self, barcode: str, read: CardRead, *, if_version: int | None = None) -> None:
        if self._ttl <= 0:
            return
        now = self._clock.monotonic()
        with self._lock:
            if if_version is not None and self._versions.get(barcode, 0) != if_version:
                return
            if len(self._entries) >= self._maxsize:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= self._maxsize:
                    self._entries.clear()
            self._entries[barcode] = (now + self._ttl, read)

    def evict(self, barcode: str) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._entries.pop(barcode, None)
            if len(self._versions) > 100_000:
                self._versions.clear()  # bounded; a cleared version only skips one put
            self._versions[barcode] = self._versions.get(barcode, 0) + 1
