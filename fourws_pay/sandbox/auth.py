"""Who may call the sandbox: Documents API header credentials, Data management bearer
tokens that expire by the sandbox clock, and an optional token-bucket rate limit.

The rate limit is a simulator choice (the reference says only "respect the retry interval
indicated in the response headers"): 429 with ``Retry-After`` plus ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (seconds). Off unless configured.
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fourws_pay.settings import Settings

LOGIN_COOKIE = "fourws_session"


def documents_credentials_ok(headers: Mapping[str, str], settings: Settings) -> bool:
    """The identity headers of docs/4ws-reference.md §2 must match the sandbox's settings."""
    expected = {
        "applicationid": settings.application_id,
        "username": settings.username,
        "password": settings.password.get_secret_value(),
    }
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, value in expected.items():
        got = lowered.get(name)
        if got is None or not hmac.compare_digest(got.encode(), value.encode()):
            return False
    app_id = lowered.get("appid")
    if app_id is None:
        return True
    return hmac.compare_digest(app_id.encode(), expected["applicationid"].encode())


@dataclass
class TokenStore:
    """Bearer tokens issued by login, each valid until ``issued + ttl`` on the sandbox clock."""

    ttl_ms: int = 285_000
    _tokens: dict[str, datetime] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, now: datetime) -> tuple[str, datetime]:
        token = secrets.token_urlsafe(24)
        expires = now + timedelta(milliseconds=self.ttl_ms)
        with self._lock:
            self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            self._tokens[token] = expires
        return token, expires

    def valid(self, token: str | None, now: datetime) -> bool:
        if not token:
            return False
        with self._lock:
            expires = self._tokens.get(token)
        return expires is not None and now < expires

    def revoke_all(self) -> None:
        with self._lock:
            self._tokens.clear()


@dataclass
class RateLimiter:
    """A token bucket: ``capacity`` requests, refilled at ``per_second``; monotonic seconds."""

    capacity: int
    per_second: float
    _tokens: float = -1.0
    _last: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, now: float) -> tuple[bool, dict[str, str]]:
        """Take one token; return whether allowed and the headers to send."""
        with self._lock:
            if self._last is None:
                self._tokens = float(self.capacity)
            else:
                elapsed = max(0.0, now - self._last)
                self._tokens = min(float(self.capacity), self._tokens + elapsed * self.per_second)
            self._last = now
            allowed = self._tokens >= 1.0
            if allowed:
                self._tokens -= 1.0
            missing = max(0.0, 1.0 - self._tokens)
            wait = missing / self.per_second if self.per_second > 0 else 3600.0
            headers = {
                "X-RateLimit-Limit": str(self.capacity),
                "X-RateLimit-Remaining": str(int(self._tokens)),
                "X-RateLimit-Reset": str(math.ceil(wait)),
            }
            if not allowed:
                headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return allowed, headers
