"""The sans-I/O heart of the 4WS client, shared by ``Client`` and ``AsyncClient``.

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
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import cachetools
import httpx
from pydantic import BaseModel, ValidationError

from fourws_pay.api import wirejson
from fourws_pay.api.fields import format_datetime
from fourws_pay.api.models import (
    BarcodeInsert,
    GenerateGiftCardsRequest,
    GiftCard,
    GiftCardPdf,
    GiftCardUpdate,
    InsertedBarcode,
    LoginToken,
    QueuedOperation,
    Sku,
    VoucherPage,
)
from fourws_pay.api.retry import RETRYABLE_STATUSES, backoff, retry_after_seconds
from fourws_pay.clock import Clock, SystemClock
from fourws_pay.errors import (
    AmbiguousOutcomeError,
    APIError,
    APIFailure,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConnectError,
    ConnectTimeout,
    InvalidInputError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ReadTimeout,
    ServerError,
    TransportError,
    UniqueConstraintError,
)
from fourws_pay.logs import get_logger, mask_barcode, protect_httpx_logs, scrub_text
from fourws_pay.settings import Settings

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=APIError)

log = get_logger()

MAX_TOKEN_LIFETIME_MS = 86_400_000  # trust a token for a day at most, whatever 4WS says
MAX_PAGES = 10_000  # a server that always says moreRows=true must not loop us forever


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


@dataclass(frozen=True)
class Endpoint:
    """One 4WS operation, described once for everything that must know it.

    ``ENDPOINTS`` is the single list: the client core builds its requests from it, the
    sandbox routes and scripts faults from it, and the CLI tells which base URL an error
    was about from it, so adding an operation here is what makes all of them know it.
    """

    name: str
    method: str
    family: str  # which API: "documents" (``/api?cmd=``) or "data" (Data management paths)
    idempotent: bool
    setting: str  # the Settings field holding its ``cmd`` (documents) or path (data)
    callback: bool = False  # queued by 4WS, which answers later on the request's callback URL

    def address(self, settings: Settings) -> str:
        """The tenant's ``cmd`` (Documents API) or path template (Data management)."""
        return str(getattr(settings, self.setting))


GET_GIFTCARD = Endpoint("get_giftcard", "GET", "documents", True, "cmd_get_giftcard")
UPDATE_GIFTCARD = Endpoint(
    "update_giftcard", "POST", "documents", False, "cmd_update_giftcard", callback=True
)
GENERATE_GIFTCARDS = Endpoint(
    "generate_giftcards", "POST", "documents", False, "cmd_generate_giftcards", callback=True
)
# the callback is optional here: without one 4WS answers with the PDF's URL at once
GIFTCARD_PDF = Endpoint(
    "giftcard_pdf", "POST", "documents", True, "cmd_giftcard_pdf", callback=True
)
LOYALTY_VOUCHERS = Endpoint("loyalty_vouchers", "GET", "documents", True, "cmd_loyalty_vouchers")
LOYALTY_VOUCHERS_BETWEEN = Endpoint(
    "loyalty_vouchers_between", "GET", "documents", True, "cmd_loyalty_vouchers_between"
)
LAST_LOYALTY_VOUCHERS = Endpoint(
    "last_loyalty_vouchers", "GET", "documents", True, "cmd_last_loyalty_vouchers"
)
LOGIN = Endpoint("login", "POST", "data", True, "path_login")
INSERT_BARCODE = Endpoint("insert_barcode", "POST", "data", True, "path_insert_barcode")
SKU_FROM_BARCODE = Endpoint("sku_from_barcode", "GET", "data", True, "path_sku_from_barcode")
DELETE_BARCODE = Endpoint("delete_barcode", "DELETE", "data", True, "path_delete_barcode")
GENERATE_MISSING_BARCODES = Endpoint(
    "generate_missing_barcodes", "POST", "data", True, "path_generate_missing_barcodes"
)

# Data management paths in the order the sandbox routes them: ``.../barcodes/generate``
# before the paths whose ``{barcode}`` parameter would also match it.
ENDPOINTS = (
    GET_GIFTCARD,
    UPDATE_GIFTCARD,
    GENERATE_GIFTCARDS,
    GIFTCARD_PDF,
    LOYALTY_VOUCHERS,
    LOYALTY_VOUCHERS_BETWEEN,
    LAST_LOYALTY_VOUCHERS,
    LOGIN,
    GENERATE_MISSING_BARCODES,
    INSERT_BARCODE,
    SKU_FROM_BARCODE,
    DELETE_BARCODE,
)


def _status_error(endpoint: Endpoint, response: httpx.Response, now: datetime) -> APIStatusError:
    status = response.status_code
    message = _message_of(response) or response.reason_phrase or f"HTTP {status}"
    name = endpoint.name
    if status == 429:
        return RateLimitedError(
            message,
            endpoint=name,
            status_code=status,
            retry_after=retry_after_seconds(response.headers, now),
        )
    if status == 422 or (status in (400, 409) and "unique" in message.lower()):
        return UniqueConstraintError(message, endpoint=name, status_code=status)
    classes: dict[int, type[APIStatusError]] = {
        400: BadRequestError,
        401: AuthenticationError,
        403: PermissionDeniedError,
        404: NotFoundError,
    }
    if status >= 500:
        return ServerError(message, endpoint=name, status_code=status)
    return classes.get(status, APIStatusError)(message, endpoint=name, status_code=status)


def _message_of(response: httpx.Response) -> str | None:
    try:
        body = wirejson.loads(response.content)
    except (ValueError, RecursionError):
        return None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return scrub_text(str(body["message"])[:500])
    return None


def _transport_error(endpoint: Endpoint, exc: httpx.HTTPError) -> TransportError:
    name = endpoint.name
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ConnectTimeout(f"timed out connecting to 4WS ({name})", endpoint=name)
    if isinstance(exc, httpx.ConnectError):
        return ConnectError(f"could not connect to 4WS ({name})", endpoint=name)
    if isinstance(exc, httpx.LocalProtocolError | httpx.UnsupportedProtocol):
        # httpx refused to send it (malformed request, unknown URL scheme): nothing left.
        return ConnectError(f"request to 4WS refused before sending ({name})", endpoint=name)
    if isinstance(exc, httpx.TimeoutException):
        return ReadTimeout(f"4WS did not answer in time ({name})", endpoint=name)
    return TransportError(
        f"connection to 4WS failed during {name}: {type(exc).__name__}", endpoint=name
    )


def _validation_summary(exc: ValidationError) -> str:
    """Describe a pydantic error by location and kind only: input values may be secrets."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['type']}"
        for err in exc.errors()[:5]
    )


def parse_model(model: type[M], data: Any, *, endpoint: str) -> M:
    """Validate ``data`` into ``model`` or raise ``MalformedResponseError``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise MalformedResponseError(
            f"4WS answer does not match {model.__name__}: {_validation_summary(exc)}",
            endpoint=endpoint,
        ) from None


def json_body(response: httpx.Response, endpoint: Endpoint) -> dict[str, Any]:
    """The response body as a JSON object, or ``MalformedResponseError``."""
    try:
        body = wirejson.loads(response.content)
    except (ValueError, RecursionError):
        raise MalformedResponseError(
            "4WS answer is not valid JSON", endpoint=endpoint.name, status_code=response.status_code
        ) from None
    if not isinstance(body, dict):
        raise MalformedResponseError(
            "4WS answer is not a JSON object",
            endpoint=endpoint.name,
            status_code=response.status_code,
        )
    return body


def require_success(body: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    """Documents API rule: success means ``"success": true`` exactly, whatever the status."""
    success = body.get("success")
    if success is True:
        return body
    if success is False:
        message = body.get("message")
        raise APIFailure(
            scrub_text(str(message)[:500]) if message is not None else "4WS reported a failure",
            endpoint=endpoint.name,
        )
    raise MalformedResponseError("4WS answer has no boolean 'success'", endpoint=endpoint.name)


class ClientCore:
    """Request building, parsing, error mapping, retries and token cache for one tenant."""

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
            headers=_encoded(headers),
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
            headers=_encoded(headers),
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
                error = _transport_error(endpoint, outcome)
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
                    error = self._redact_error(_status_error(endpoint, response, self.clock.now()))
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

    # ----------------------------------------------------------------------- endpoints

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

    def get_giftcard(self, barcode: str) -> Flow[GiftCard]:
        barcode = _require_text(barcode, "barcode")
        s = self.settings

        def build(_: LoginToken | None) -> httpx.Request:
            return self.documents_request(
                GET_GIFTCARD.method, GET_GIFTCARD.address(s), {s.param_giftcard_barcode: barcode}
            )

        def parse(response: httpx.Response) -> GiftCard:
            body = require_success(json_body(response, GET_GIFTCARD), GET_GIFTCARD)
            return parse_model(GiftCard, body.get("giftcard"), endpoint=GET_GIFTCARD.name)

        return (
            yield from self.exchange(
                GET_GIFTCARD, build, parse, log_fields={"barcode": mask_barcode(barcode)}
            )
        )

    def update_giftcard(self, update: GiftCardUpdate) -> Flow[QueuedOperation]:
        if not isinstance(update, GiftCardUpdate):
            raise InvalidInputError("update_giftcard takes a GiftCardUpdate")
        s = self.settings
        body = update.wire()

        def build(_: LoginToken | None) -> httpx.Request:
            return self.documents_request(
                UPDATE_GIFTCARD.method,
                UPDATE_GIFTCARD.address(s),
                body=body,
                content_type=s.update_giftcard_content_type,
            )

        return (
            yield from self.exchange(
                UPDATE_GIFTCARD,
                build,
                self._queued(UPDATE_GIFTCARD),
                log_fields={
                    "barcode": mask_barcode(update.barcode),
                    "kind": update.kind,
                    "amount": str(update.amount),
                },
            )
        )

    def generate_giftcards(self, request: GenerateGiftCardsRequest) -> Flow[QueuedOperation]:
        s = self.settings
        body = request.wire()

        def build(_: LoginToken | None) -> httpx.Request:
            return self.documents_request(
                GENERATE_GIFTCARDS.method, GENERATE_GIFTCARDS.address(s), body=body
            )

        return (
            yield from self.exchange(
                GENERATE_GIFTCARDS,
                build,
                self._queued(GENERATE_GIFTCARDS),
                log_fields={"item_code": request.item_code, "count": request.giftcards},
            )
        )

    def giftcard_pdf(self, barcodes: Iterable[str], callback: str | None) -> Flow[GiftCardPdf]:
        if isinstance(barcodes, str | bytes):
            # a lone barcode string would be iterated character by character
            raise InvalidInputError("giftcard_pdf takes a list of barcodes, not one string")
        codes = [_require_text(b, "barcode") for b in barcodes]
        if not codes:
            raise InvalidInputError("giftcard_pdf needs at least one barcode")
        s = self.settings
        body: dict[str, Any] = {"barcodes": codes}
        if callback is not None:
            body["callback"] = callback

        def build(_: LoginToken | None) -> httpx.Request:
            return self.documents_request(GIFTCARD_PDF.method, GIFTCARD_PDF.address(s), body=body)

        def parse(response: httpx.Response) -> GiftCardPdf:
            body = require_success(json_body(response, GIFTCARD_PDF), GIFTCARD_PDF)
            return parse_model(GiftCardPdf, body, endpoint=GIFTCARD_PDF.name)

        return (
            yield from self.exchange(GIFTCARD_PDF, build, parse, log_fields={"count": len(codes)})
        )

    def voucher_page(
        self, endpoint: Endpoint, cmd: str, params: dict[str, str], start: int
    ) -> Flow[VoucherPage]:
        query = dict(params)
        if start:
            query["start"] = str(start)

        def build(_: LoginToken | None) -> httpx.Request:
            return self.documents_request(endpoint.method, cmd, query)

        def parse(response: httpx.Response) -> VoucherPage:
            body = require_success(json_body(response, endpoint), endpoint)
            return parse_model(VoucherPage, body, endpoint=endpoint.name)

        return (yield from self.exchange(endpoint, build, parse, log_fields={"start": start}))

    def loyalty_vouchers_query(
        self, card_barcode: str, pk_field_name: str | None
    ) -> tuple[Endpoint, str, dict[str, str]]:
        params = {self.settings.param_card_barcode: _require_text(card_barcode, "card_barcode")}
        if pk_field_name:
            params["pkFieldName"] = pk_field_name
        return LOYALTY_VOUCHERS, LOYALTY_VOUCHERS.address(self.settings), params

    def loyalty_vouchers_between_query(
        self, start: datetime, end: datetime, card_barcode: str | None
    ) -> tuple[Endpoint, str, dict[str, str]]:
        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidInputError("start and end must be timezone-aware datetimes")
        if end < start:
            raise InvalidInputError("end is before start")
        s = self.settings
        params = {
            s.param_interval_start: format_datetime(start),
            s.param_interval_end: format_datetime(end),
        }
        if card_barcode:
            params[s.param_card_barcode] = card_barcode
        return LOYALTY_VOUCHERS_BETWEEN, LOYALTY_VOUCHERS_BETWEEN.address(s), params

    def last_loyalty_vouchers_query(self, since: datetime) -> tuple[Endpoint, str, dict[str, str]]:
        if since.tzinfo is None:
            raise InvalidInputError("since must be a timezone-aware datetime")
        s = self.settings
        return (
            LAST_LOYALTY_VOUCHERS,
            LAST_LOYALTY_VOUCHERS.address(s),
            {s.param_last_from: format_datetime(since)},
        )

    @staticmethod
    def check_new_page(page: VoucherPage, previous: VoucherPage | None, endpoint: Endpoint) -> None:
        """Refuse a page identical to the previous one: a server (or a tenant whose paging
        parameter is not ``start``) that ignores ``start`` would otherwise repeat page one
        until ``MAX_PAGES`` and hand the caller the same vouchers thousands of times."""
        if previous is None or not page.value_object_list:
            return
        if [v.id for v in page.value_object_list] == [v.id for v in previous.value_object_list]:
            raise MalformedResponseError(
                "4WS returned the same page again; it does not seem to honour 'start'",
                endpoint=endpoint.name,
            )

    @staticmethod
    def next_start(page: VoucherPage, start: int, pages_read: int) -> int | None:
        """Where the next page starts, or None when the listing is complete."""
        if not page.more_rows or not page.value_object_list or pages_read >= MAX_PAGES:
            return None
        return start + len(page.value_object_list)

    def insert_barcode(self, item_code: str, barcode: BarcodeInsert) -> Flow[InsertedBarcode]:
        path = INSERT_BARCODE.address(self.settings).format(item_code=_path_part(item_code))
        body = barcode.wire()

        def build(token: LoginToken | None) -> httpx.Request:
            return self.data_request(INSERT_BARCODE.method, path, token, body)

        def parse(response: httpx.Response) -> InsertedBarcode:
            data = _data_success(json_body(response, INSERT_BARCODE), INSERT_BARCODE)
            inner = data.get("barcode", data)
            if isinstance(inner, str | int):
                inner = {"barcode": inner}
            return parse_model(InsertedBarcode, inner, endpoint=INSERT_BARCODE.name)

        return (
            yield from self.exchange(
                INSERT_BARCODE,
                build,
                parse,
                log_fields={"item_code": item_code, "barcode": mask_barcode(barcode.barcode)},
            )
        )

    def sku_from_barcode(self, barcode: str) -> Flow[Sku]:
        path = SKU_FROM_BARCODE.address(self.settings).format(barcode=_path_part(barcode))

        def build(token: LoginToken | None) -> httpx.Request:
            return self.data_request(SKU_FROM_BARCODE.method, path, token)

        def parse(response: httpx.Response) -> Sku:
            data = _data_success(json_body(response, SKU_FROM_BARCODE), SKU_FROM_BARCODE)
            inner = data.get("sku") or data.get("product") or data
            return parse_model(Sku, inner, endpoint=SKU_FROM_BARCODE.name)

        return (
            yield from self.exchange(
                SKU_FROM_BARCODE, build, parse, log_fields={"barcode": mask_barcode(barcode)}
            )
        )

    def delete_barcode(
        self, item_code: str, barcode: str, *, ignore_movements: bool = False
    ) -> Flow[None]:
        path = DELETE_BARCODE.address(self.settings).format(
            item_code=_path_part(item_code), barcode=_path_part(barcode)
        )
        params = {"ignore_movements": "true"} if ignore_movements else None

        def build(token: LoginToken | None) -> httpx.Request:
            return self.data_request(DELETE_BARCODE.method, path, token, params=params)

        def parse(response: httpx.Response) -> None:
            if response.content.strip():
                _data_success(json_body(response, DELETE_BARCODE), DELETE_BARCODE)

        return (
            yield from self.exchange(
                DELETE_BARCODE,
                build,
                parse,
                log_fields={"item_code": item_code, "barcode": mask_barcode(barcode)},
            )
        )

    def generate_missing_barcodes(
        self, item_code: str, dimensions: dict[str, str] | None
    ) -> Flow[list[InsertedBarcode]]:
        path = GENERATE_MISSING_BARCODES.address(self.settings).format(
            item_code=_path_part(item_code)
        )
        body = dict(dimensions or {})

        def build(token: LoginToken | None) -> httpx.Request:
            return self.data_request(GENERATE_MISSING_BARCODES.method, path, token, body)

        def parse(response: httpx.Response) -> list[InsertedBarcode]:
            data = _data_success(
                json_body(response, GENERATE_MISSING_BARCODES), GENERATE_MISSING_BARCODES
            )
            items = data.get("barcodes", data.get("insertedObjects", []))
            if not isinstance(items, list):
                raise MalformedResponseError(
                    "barcodes is not a list", endpoint=GENERATE_MISSING_BARCODES.name
                )
            return [
                parse_model(InsertedBarcode, item, endpoint=GENERATE_MISSING_BARCODES.name)
                for item in items
            ]

        return (
            yield from self.exchange(
                GENERATE_MISSING_BARCODES, build, parse, log_fields={"item_code": item_code}
            )
        )

    # ------------------------------------------------------------------------ helpers

    @staticmethod
    def _queued(endpoint: Endpoint) -> Callable[[httpx.Response], QueuedOperation]:
        def parse(response: httpx.Response) -> QueuedOperation:
            body = require_success(json_body(response, endpoint), endpoint)
            return parse_model(QueuedOperation, body, endpoint=endpoint.name)

        return parse


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Header values as UTF-8 bytes: httpx would encode ``str`` values as ASCII and raise
    UnicodeEncodeError (carrying the value) for a password like ``pässwort``."""
    return [(name.encode("ascii"), value.encode("utf-8")) for name, value in headers.items()]


def _data_success(body: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    """Data management bodies: trust the status, but a ``success: false`` is still a failure."""
    if body.get("success") is False:
        raise APIFailure(
            scrub_text(str(body.get("message") or "4WS reported a failure")[:500]),
            endpoint=endpoint.name,
        )
    return body


def _require_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{what} must be a non-empty string")
    if len(value) > 250 or any(ch in value for ch in "\r\n\x00"):
        raise InvalidInputError(f"{what} is not a valid code")
    return value.strip()


def _path_part(value: object) -> str:
    text = _require_text(value, "path segment")
    if "/" in text or text in (".", ".."):
        raise InvalidInputError("codes may not contain '/'")
    from urllib.parse import quote

    return quote(text, safe="")


__all__ = ["ENDPOINTS", "APIError", "ClientCore", "Endpoint", "Flow", "Send", "Sleep"]
