"""The sans-I/O exchange every 4WS flow runs on: steps, retries, error mapping, tokens.

Each endpoint is a *flow*: a generator that yields ``Send(request)`` or ``Sleep(seconds)``
steps and receives, for each ``Send``, either the ``httpx.Response`` (already read) or the
``httpx.HTTPError`` raised while sending. The twins only drive flows (a dozen lines each), so
request building, response parsing, error mapping, retry decisions, token caching and
logging exist once.

Retry rules (issue #2, docs/design.md invariant 3):

- idempotent calls (every read, login, barcode insert/delete which 4WS deduplicates by
  uniqueness) retry on connection errors, timeouts, 408/429/5xx and unreadable bodies, with
  backoff and jitter, honouring ``Retry-After`` up to ``retry_after_cap``;
- balance-changing POSTs (``updateGiftcard``) and ``generateGiftcards`` retry only when the
  request certainly never left (connect error/timeout). Once it may have reached 4WS, a
  timeout, 5xx, dropped connection or unreadable 2xx becomes ``AmbiguousOutcomeError``;
  definite refusals (4xx, 429, ``success: false``) raise their own typed errors.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import cachetools
import httpx

from fourws_pay.api import wirejson
from fourws_pay.api.endpoints import LOGIN, Endpoint
from fourws_pay.api.models import LoginToken
from fourws_pay.api.retry import RETRYABLE_STATUSES, backoff, retry_after_seconds
from fourws_pay.api.wire import encoded, json_body, parse_model, status_error, transport_error
from fourws_pay.clock import Clock, SystemClock
from fourws_pay.errors import AmbiguousOutcomeError, APIError, MalformedResponseError, ServerError
from fourws_pay.logs import get_logger, protect_httpx_logs
from fourws_pay.settings import Settings

T = TypeVar("T")
E = TypeVar("E", bound=APIError)

log = get_logger()

MAX_TOKEN_LIFETIME_MS = 86_400_000  # trust a token for a day at most, whatever 4WS says


@dataclass(frozen=True)
class Send:
    """Step: send this request and resume the flow with the response or the error."""

    request: httpx.Request


@dataclass(frozen=True)
class Sleep:
    """Step: wait this many seconds (a retry backoff) and resume the flow with None."""

    seconds: float


Step = Send | Sleep
Outcome = httpx.Response | httpx.HTTPError | None
Flow = Generator[Step, Outcome, T]


class ExchangeCore:
    """Request building, the retrying exchange and the token cache for one tenant; the
    endpoint flows are added by ``DocumentsFlows`` and ``DataFlows``."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        protect_httpx_logs()
        self.clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._token_lock = threading.Lock()
        self._seen_tokens: collections.deque[str] = collections.deque(maxlen=4)
        self._tokens: cachetools.TLRUCache[str, LoginToken] = cachetools.TLRUCache(
            maxsize=1, ttu=self._token_expiry, timer=self.clock.monotonic
        )

    # ------------------------------------------------------------------ request building

    def documents_headers(self) -> dict[str, str]:
        """The credential headers every Documents API call carries (docs/4ws-reference.md §2)."""
        s = self.settings
        headers = {
            "applicationId": s.application_id,
            "appId": s.application_id,
            "namespace": s.namespace,
            "languageId": s.language_id,
            "username": s.username,
            "password": s.password.get_secret_value(),
            "companyId": s.company_id,
            "siteId": s.site_id,
        }
        if s.load_roles:
            headers["loadRoles"] = "Y"
        return headers

    def documents_request(
        self,
        method: str,
        cmd: str,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> httpx.Request:
        s = self.settings
        query = {"cmd": cmd, "applicationId": s.application_id, "appId": s.application_id}
        query.update(params or {})
        headers = self.documents_headers()
        content = None
        if body is not None:
            headers["Content-Type"] = content_type
            content = wirejson.dumps(body).encode()
        return httpx.Request(
            method,
            f"{s.documents_base_url}/api",
            params=query,
            headers=encoded(headers),
            content=content,
        )

    def data_request(
        self,
        method: str,
        path: str,
        token: LoginToken | None,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Request:
        headers: dict[str, str] = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.token.get_secret_value()}"
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = wirejson.dumps(body).encode()
        return httpx.Request(
            method,
            f"{self.settings.data_url}{path}",
            headers=encoded(headers),
            content=content,
            params=params,
        )

    # ------------------------------------------------------------------------ exchange

    def exchange(
        self,
        endpoint: Endpoint,
        build: Callable[[LoginToken | None], httpx.Request],
        parse: Callable[[httpx.Response], T],
        *,
        log_fields: dict[str, Any] | None = None,
    ) -> Flow[T]:
        """Send with retries, re-login once on 401, and parse; see the module docstring."""
        policy = self.settings.retry
        fields = {"endpoint": endpoint.name, "method": endpoint.method, **(log_fields or {})}
        attempt = 0
        relogged = False
        while True:
            attempt += 1
            token: LoginToken | None = None
            if endpoint.family == "data" and endpoint is not LOGIN:
                token = yield from self.token_flow()
            request = build(token)
            started = time.perf_counter()
            outcome = yield Send(request)
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            error: Exception
            wait: float | None = None
            if isinstance(outcome, httpx.HTTPError):
                error = transport_error(endpoint, outcome)
                log.warning(
                    "fourws_pay.http.error",
                    **fields,
                    error=str(error),
                    attempt=attempt,
                    duration_ms=duration_ms,
                )
                if endpoint.idempotent or not error.request_sent:
                    wait = backoff(policy, attempt, self._rng)
                else:
                    raise AmbiguousOutcomeError(
                        f"{endpoint.name} may have reached 4WS: {error}", endpoint=endpoint.name
                    ) from error
            elif outcome is None:
                raise RuntimeError("flow resumed without an outcome")  # driver bug
            else:
                response = outcome
                log.debug(
                    "fourws_pay.http.request",
                    **fields,
                    status=response.status_code,
                    attempt=attempt,
                    duration_ms=duration_ms,
                )
                if response.status_code == 401 and token is not None and not relogged:
                    relogged = True
                    attempt -= 1
                    self.forget_token()
                    continue
                if response.is_success:
                    try:
                        return parse(response)
                    except APIError as exc:
                        self._redact_error(exc)
                        if not isinstance(exc, MalformedResponseError):
                            raise
                        if not endpoint.idempotent:
                            raise AmbiguousOutcomeError(
                                f"{endpoint.name} answer unreadable; it may have been applied",
                                endpoint=endpoint.name,
                            ) from exc
                        error = exc
                        wait = backoff(policy, attempt, self._rng)
                else:
                    error = self._redact_error(status_error(endpoint, response, self.clock.now()))
                    if not endpoint.idempotent and isinstance(error, ServerError):
                        raise AmbiguousOutcomeError(
                            f"{endpoint.name} failed with HTTP {response.status_code}; "
                            "it may have been applied",
                            endpoint=endpoint.name,
                        ) from error
                    if endpoint.idempotent and response.status_code in RETRYABLE_STATUSES:
                        asked = retry_after_seconds(response.headers, self.clock.now())
                        if asked is not None and asked > policy.retry_after_cap:
                            raise error  # waiting less than asked is pointless
                        wait = asked if asked is not None else backoff(policy, attempt, self._rng)
            if wait is None or attempt >= policy.max_attempts:
                raise error
            log.info(
                "fourws_pay.http.retry_scheduled",
                **fields,
                attempt=attempt,
                wait=round(wait, 3),
                error=type(error).__name__,
            )
            yield Sleep(wait)

    def _redact_error(self, error: E) -> E:
        """Take our own secrets out of a message 4WS wrote (it may echo what we sent)."""
        secrets = [self.settings.password.get_secret_value(), *self._seen_tokens]
        message = error.message
        for secret in secrets:
            if secret:
                message = message.replace(secret, "[redacted]")
        if message != error.message:
            error.message = message
            error.args = (message,)
        return error

    # -------------------------------------------------------------------- bearer tokens

    def _token_expiry(self, _key: str, token: LoginToken, now: float) -> float:
        lifetime: float | None = None
        if token.expires_in_ms is not None:
            # clamp first: a huge integer would overflow the float division
            lifetime = min(max(token.expires_in_ms, 0), MAX_TOKEN_LIFETIME_MS) / 1000
        elif token.expires is not None:
            lifetime = (token.expires - self.clock.now()).total_seconds()
        if lifetime is None:
            lifetime = 60.0  # unknown lifetime: re-login every minute rather than trust it
        return now + max(0.0, lifetime - self.settings.token_refresh_margin)

    def cached_token(self) -> LoginToken | None:
        with self._token_lock:
            return self._tokens.get("token")

    def forget_token(self) -> None:
        with self._token_lock:
            self._tokens.pop("token", None)

    def token_flow(self) -> Flow[LoginToken]:
        token = self.cached_token()
        if token is not None:
            return token
        token = yield from self.login()
        return token

    def login(self) -> Flow[LoginToken]:
        """Data management login; the token is cached until shortly before it expires."""
        s = self.settings

        def build(_: LoginToken | None) -> httpx.Request:
            body = {"username": s.username, "password": s.password.get_secret_value()}
            return self.data_request(LOGIN.method, LOGIN.address(s), None, body)

        def parse(response: httpx.Response) -> LoginToken:
            return parse_model(LoginToken, json_body(response, LOGIN), endpoint=LOGIN.name)

        token = yield from self.exchange(LOGIN, build, parse)
        with self._token_lock:
            self._seen_tokens.append(token.token.get_secret_value())
            self._tokens["token"] = token
        return token
