"""When to retry and how long to wait, without doing either.

Kept apart from I/O so both client twins share it and tests can assert waits exactly.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from fourws_pay.settings import RetryPolicy

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
