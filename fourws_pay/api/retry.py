"""When to retry and how long to wait, without doing either.

Kept apart from I/O so both client twins share it and tests can assert waits exactly.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from fourws_pay.settings import RetryPolicy, Settings

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def retry_after_seconds(headers: Mapping[str, str], now: datetime) -> float | None:
    """The wait 4WS asked for, from ``Retry-After`` (seconds or HTTP date) or
    ``X-RateLimit-Reset``/``RateLimit-Reset`` (seconds, or an epoch timestamp)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    value = lowered.get("retry-after")
    if value is not None:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000" means UTC with no zone information
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    for name in ("x-ratelimit-reset", "ratelimit-reset"):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            number = float(raw.strip())
        except ValueError:
            continue
        if number > 1_000_000_000:  # an epoch timestamp
            return max(0.0, number - now.timestamp())
        return max(0.0, number)
    return None


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter for the wait after ``attempt`` (1-based)."""
    ceiling = min(policy.backoff_max, policy.backoff_base * (2 ** (attempt - 1)))
    return rng.uniform(0, ceiling)


def worst_case_seconds(settings: Settings, *, idempotent: bool) -> float:
    """The longest one call through the client can take before it returns or raises.

    The payments layer derives its "the process must have died" grace periods from this, so
    that ``reconcile`` never declares a live request crashed. Every phase is bounded by the
    httpx timeouts the client sets (``read_timeout`` also bounds the write and the wait for
    a pooled connection; ``connect_timeout`` the connect). A balance-changing POST is
    re-sent only when it certainly never left (pool or connect phase), so its earlier
    attempts cost at most pool + connect + the backoff after them; reads may also wait for
    a ``Retry-After`` of up to ``retry_after_cap``. One read of the body is counted per
    attempt (a server trickling bytes slower than ``read_timeout`` apart is not bounded by
    httpx, and is not by this figure either).
    """
    policy = settings.retry
    pool = write = read = settings.read_timeout
    connect = settings.connect_timeout
    full_attempt = pool + connect + write + read
    total = full_attempt
    for attempt in range(1, policy.max_attempts):
        wait = min(policy.backoff_max, policy.backoff_base * (2 ** (attempt - 1)))
        if idempotent:
            total += full_attempt + max(wait, policy.retry_after_cap)
        else:
            total += pool + connect + wait
    return total
