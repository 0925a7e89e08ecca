"""Guessing resistance: failed card lookups are counted per client key and throttled.

A client key is whatever the host uses to tell customers apart (IP address, session id);
the host passes it to ``check``/``reserve``. Once a key has ``limit`` failed lookups within
``window`` seconds, further lookups raise ``ThrottledError`` *before* any call to 4WS, so a
script cannot enumerate card numbers through the shop (invariant 11).

The counter is per process and in memory (bounded by a TTL cache); a shop running many
processes gets a per-process limit, which still bounds guessing to ``limit × processes``.
"""

from __future__ import annotations

import threading
from collections import deque

import cachetools

from fourws_pay.clock import Clock
from fourws_pay.errors import ThrottledError


class LookupThrottle:
    """Sliding-window counter of failed lookups per client key."""

    def __init__(self, *, window: float, limit: int, clock: Clock, max_keys: int = 100_000):
        self.window = window
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: cachetools.TTLCache[str, deque[float]] = cachetools.TTLCache(
            maxsize=max_keys, ttl=window, timer=clock.monotonic
        )

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def check(self, key: str | None) -> None:
        """Raise ``ThrottledError`` if ``key`` has used up its failed lookups."""
        if key is None:
            return
        now = self._clock.monotonic()
        with self._lock:
            times = self._recent(key, now)
            if len(times) >= self.limit:
                retry_after = max(0.0, times[0] + self.window - now)
                raise ThrottledError(
                    "too many failed gift card lookups; try again later",
                    retry_after=retry_after,
                )

    def record_failure(self, key: str | None) -> None:
        if key is None:
            return
        now = self._clock.monotonic()
        with self._lock:
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times  # refreshes the key's TTL
