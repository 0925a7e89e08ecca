"""Reading 4WS answers: error mapping, body checks and model parsing, shared by every flow.

Also the input checks for what goes into a request (codes, path segments, header bytes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from fourws_pay.api import wirejson
from fourws_pay.api.endpoints import Endpoint
from fourws_pay.api.retry import retry_after_seconds
from fourws_pay.errors import (
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
from fourws_pay.logs import scrub_text

M = TypeVar("M", bound=BaseModel)


def status_error(endpoint: Endpoint, response: httpx.Response, now: datetime) -> APIStatusError:
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


def transport_error(endpoint: Endpoint, exc: httpx.HTTPError) -> TransportError:
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


def encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Header values as UTF-8 bytes: httpx would encode ``str`` values as ASCII and raise
    UnicodeEncodeError (carrying the value) for a password like ``pässwort``."""
    return [(name.encode("ascii"), value.encode("utf-8")) for name, value in headers.items()]


def data_success(body: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    """Data management bodies: trust the status, but a ``success: false`` is still a failure."""
    if body.get("success") is False:
        raise APIFailure(
            scrub_text(str(body.get("message") or "4WS reported a failure")[:500]),
            endpoint=endpoint.name,
        )
    return body


def require_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{what} must be a non-empty string")
    if len(value) > 250 or any(ch in value for ch in "\r\n\x00"):
        raise InvalidInputError(f"{what} is not a valid code")
    return value.strip()


def path_part(value: object) -> str:
    text = require_text(value, "path segment")
    if "/" in text or text in (".", ".."):
        raise InvalidInputError("codes may not contain '/'")
    from urllib.parse import quote

    return quote(text, safe="")
