"""Logging through structlog onto the stdlib logger ``fourws_pay``, without configuring either.

The library never calls ``logging.basicConfig`` or ``structlog.configure``: a host's Django
``LOGGING`` (or anything else) decides where ``fourws_pay`` records go. We wrap the stdlib
logger with a private processor chain so a host's global structlog configuration is neither
required nor changed.

structlog is imported on the first record actually emitted, not when ``fourws_pay`` is
imported: structlog itself imports ``rich`` whenever it is installed, and a library that only
talks to a payment API should not load a terminal toolkit. A record whose level the stdlib
logger would drop costs one ``isEnabledFor`` call and never reaches structlog.

Hygiene (invariant 12): call sites pass barcodes already masked, and a last processor masks
any field named like a barcode and drops any field named like a secret, so a slip at a call
site still does not leak a card number or a credential.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

LOGGER_NAME = "fourws_pay"

_BARCODE_KEYS = frozenset({"barcode", "card_barcode", "cardbarcode", "card", "code"})
_SECRET_KEYS = frozenset(
    {
        "password",
        "token",
        "authorization",
        "secret",
        "callback_token",
        "bearer",
        "auth_token",
        "cookie",
    }
)
_MASK = "*"


def mask_barcode(barcode: object) -> str:
    """Show only the last 4 characters of a card or voucher barcode: ``*********1814``.

    Codes of 4 characters or fewer are hidden entirely, since their "last 4" is all of them.
    """
    text = str(barcode)
    if len(text) <= 4:
        return _MASK * 4
    return _MASK * (len(text) - 4) + text[-4:]


def redact_url(url: str) -> str:
    """Drop the query string and fragment of a URL (callback URLs carry a secret token).

    The last path segment is also masked because our callback URLs put the operation token
    there.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "[unparseable url]"
    path = parts.path
    if path.count("/") >= 2:
        head, _, tail = path.rpartition("/")
        if len(tail) > 12:
            path = f"{head}/{_MASK * 4}"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


_LONG_DIGITS = re.compile(r"\d{8,}")
_URL = re.compile(r"https?://[^\s\"'<>]+")


def scrub_text(text: str) -> str:
    """Mask what free text from 4WS may echo: card numbers (runs of 8+ digits, last 4 kept)
    and URLs (query and long last segment dropped: callback URLs carry a secret token)."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return _LONG_DIGITS.sub(lambda m: mask_barcode(m.group(0)), text)


def _scrub(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        lowered = key.lower()
        value = event_dict[key]
        if any(secret in lowered for secret in _SECRET_KEYS):
            event_dict[key] = "[redacted]"
        elif lowered in _BARCODE_KEYS and value is not None:
            text = str(value)
            if not text.startswith(_MASK):
                event_dict[key] = mask_barcode(text)
        elif lowered.endswith("url") and isinstance(value, str):
            event_dict[key] = redact_url(value)
        elif isinstance(value, str) and lowered in {"error", "message", "detail"}:
            # Free text from 4WS may echo a barcode ("barcode 8050200058081 already exists").
            event_dict[key] = scrub_text(value)
    return event_dict


_stdlib = logging.getLogger(LOGGER_NAME)
# The documented practice for libraries: without it, an application that configured no
# logging would get our warnings on stderr through logging's last-resort handler.
_stdlib.addHandler(logging.NullHandler())

_TOKEN_SEGMENT = re.compile(r"/(op_[0-9a-f]{8,})/[A-Za-z0-9_\-]{16,}")


def redact_logged_url(text: str) -> str:
    """Mask card numbers (digit runs of 8 or more) and callback tokens in a URL string."""
    text = redact_callback_path(text)
    return _LONG_DIGITS.sub(lambda m: mask_barcode(m.group(0)), text)


class HttpxRedactingFilter(logging.Filter):
    """Scrubs URLs in the ``httpx`` logger's records (``HTTP Request: GET <url> ...``).

    httpx logs every request URL at INFO; 4WS's Get Giftcard carries the card number in the
    query string and our callback URLs carry a secret. The filter rewrites those records in
    place and never drops one; it adds no handler and changes no level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                redact_logged_url(str(arg)) if "://" in str(arg) else arg for arg in record.args
            )
        elif isinstance(record.msg, str) and "://" in record.msg:
            record.msg = redact_logged_url(record.msg)
        return True


def protect_httpx_logs() -> None:
    """Attach ``HttpxRedactingFilter`` to the ``httpx`` logger once (idempotent)."""
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, HttpxRedactingFilter) for f in httpx_logger.filters):
        httpx_logger.addFilter(HttpxRedactingFilter())


# Loggers whose records carry request paths: servers' access logs, and Django's request
# log ("Not Found: <path>" for a 4xx answer to a forged or unknown callback).
ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access", "django.server", "django.request")


def redact_callback_path(text: str) -> str:
    """``…/op_<id>/<secret>`` -> ``…/op_<id>/****`` wherever it appears in ``text``."""
    return _TOKEN_SEGMENT.sub(lambda m: f"/{m.group(1)}/****", text)


def _redacted(value: object) -> object:
    return redact_callback_path(value) if isinstance(value, str) and "/op_" in value else value


class AccessLogRedactingFilter(logging.Filter):
    """Masks the secret of callback paths in web-server access-log records.

    4WS calls back on ``<callback base>/<operation id>/<secret>``; the secret is what
    authenticates the callback, and a server's access log would otherwise keep it in clear
    for anyone who reads the logs. The filter rewrites the record's arguments in place
    (uvicorn's tuple, gunicorn's dict of atoms, Django runserver's request line) and its
    message, so every handler and formatter sees ``…/op_<id>/****``; it never drops a
    record, adds no handler and changes no level. Attach it to a logger (see
    ``protect_access_logs``) or to a handler that receives access records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_redacted(arg) for arg in args)
        elif isinstance(args, MutableMapping):  # gunicorn's atoms: keep its mapping class
            for key in list(args):
                args[key] = _redacted(args[key])
        if isinstance(record.msg, str):
            record.msg = redact_callback_path(record.msg)
        return True


def protect_access_logs(*logger_names: str) -> None:
    """Install ``AccessLogRedactingFilter`` on the access loggers of uvicorn, gunicorn and
    Django's runserver and on ``django.request`` (or on ``logger_names``); safe to call more
    than once.

    Call it at start-up, before serving; a later ``logging.config.dictConfig`` keeps it
    (dictConfig replaces a logger's handlers, not its filters).
    """
    for name in logger_names or ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, AccessLogRedactingFilter) for f in logger.filters):
            logger.addFilter(AccessLogRedactingFilter())


def _wrap(initial: dict[str, Any]) -> Any:
    import structlog

    return structlog.wrap_logger(
        _stdlib,
        processors=[
            _scrub,
            structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    ).bind(**initial)


class Logger:
    """A structlog logger bound to the stdlib logger ``fourws_pay``, built on first use.

    Events render as ``event key=value ...`` so they read well under plain stdlib logging.
    """

    __slots__ = ("_bound", "_initial")

    def __init__(self, initial: dict[str, Any]) -> None:
        self._initial = initial
        self._bound: Any = None

    def bind(self, **values: Any) -> Logger:
        return Logger({**self._initial, **values})

    def _emit(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        if not _stdlib.isEnabledFor(level):
            return
        if self._bound is None:
            self._bound = _wrap(self._initial)
        getattr(self._bound, method)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, "error", event, fields)


def get_logger(**initial: Any) -> Logger:
    """The library's logger; ``initial`` fields are bound to every event."""
    return Logger(initial)
