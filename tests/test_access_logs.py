"""Access logs of the web server never keep a callback's secret.

The callback app is served by a real uvicorn with its access log on; 4WS's real callback
for a real capture reaches it over HTTP; the access-log line uvicorn writes is read back
through a handler and formatter, as a shop's log file would get it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from fourws_pay import AccessLogRedactingFilter, GiftCardPayments, protect_access_logs
from fourws_pay.ledger import SQLiteStore
from fourws_pay.logs import ACCESS_LOGGERS
from fourws_pay.sandbox import Sandbox
from fourws_pay.serving import ThreadServer


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def access_log() -> Iterator[Lines]:
    logger = logging.getLogger("uvicorn.access")
    saved = (logger.level, logger.propagate, list(logger.filters))
    # start unprotected whatever ran before (a Django app's ready() may have installed it)
    logger.filters[:] = [f for f in saved[2] if not isinstance(f, AccessLogRedactingFilter)]
    handler = Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.level, logger.propagate = saved[0], saved[1]
    logger.filters[:] = saved[2]


def served_callback(
    tmp_path: Path, access_log: Lines, *, protect: bool
) -> tuple[str, list[str], str]:
    """A capture settled through a served callback app; (its callback path, the access-log
    lines, the operation's state)."""
    if protect:
        protect_access_logs()
    sandbox = Sandbox(seed="demo")
    apps: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await apps[0](scope, receive, send)

    # bound at construction: the callback URL is known before the provider is built
    server = ThreadServer(app, access_log=True, log_config=None, log_level="info")
    base = f"{server.url}/fourws/callback"
    settings = sandbox.settings.model_copy(update={"callback_base_url": base})
    payments = GiftCardPayments(
        client=sandbox.client(settings),
        store=SQLiteStore(tmp_path / "ledger.db"),
        clock=sandbox.clock,
    )
    apps.append(payments.callback_app())
    seen: list[str] = []

    def over_http(url: str, body: bytes) -> int:
        seen.append(urlsplit(url).path)
        return httpx.post(url, content=body, timeout=10).status_code

    sandbox.set_callback_handler(over_http)
    with server:
        hold = payments.reserve(
            "2000000001814", amount=Decimal("10.00"), currency="EUR", order_ref="ORD-1"
        )
        op = payments.capture(hold.id)
        sandbox.process_queue()
        state = payments.get_operation(op.id).state.value
    payments.close()
    (path,) = seen
    return path, [line for line in access_log.lines if "/fourws/callback/" in line], state


def test_a_served_callback_leaves_no_secret_in_uvicorns_access_log(
    tmp_path: Path, access_log: Lines
) -> None:
    path, lines, state = served_callback(tmp_path, access_log, protect=True)
    assert state == "succeeded"  # the callback really authenticated and settled
    prefix, secret = path.rsplit("/", 1)
    assert len(secret) >= 32
    assert prefix.rsplit("/", 1)[1].startswith("op_")
    (line,) = lines
    assert secret not in line
    assert f"{prefix}/****" in line
    assert '"POST ' in line
    assert " 200" in line


def test_without_the_filter_the_access_log_keeps_the_secret(
    tmp_path: Path, access_log: Lines
) -> None:
    """The twin that shows what the filter protects against (and that the test above sees
    uvicorn's real line)."""
    path, lines, _ = served_callback(tmp_path, access_log, protect=False)
    (line,) = lines
    assert path.rsplit("/", 1)[1] in line


SECRET = "s3cr3t-" + "x" * 40
CALLBACK = f"/fourws/callback/op_0123456789abcdef0123456789abcdef/{SECRET}"


def test_gunicorn_and_django_records_are_masked_too() -> None:
    redact = AccessLogRedactingFilter()
    # gunicorn: the format's atoms are one mapping (a dict subclass), rewritten in place
    atoms = type("SafeAtoms", (dict,), {})({"r": f"POST {CALLBACK} HTTP/1.1", "s": "200"})
    gunicorn = logging.LogRecord("gunicorn.access", 20, "", 0, '"%(r)s" %(s)s', (atoms,), None)
    assert redact.filter(gunicorn)
    assert type(gunicorn.args).__name__ == "SafeAtoms"
    # Django runserver: the request line is the first argument
    django = logging.LogRecord(
        "django.server", 20, "", 0, '"%s" %s %s', (f"POST {CALLBACK} HTTP/1.1", "200", "2"), None
    )
    assert redact.filter(django)
    plain = logging.LogRecord("any", 20, "", 0, f"GET {CALLBACK}", None, None)
    assert redact.filter(plain)
    for record in (gunicorn, django, plain):
        message = record.getMessage()
        assert SECRET not in message
        assert "/op_0123456789abcdef0123456789abcdef/****" in message


def test_protect_access_logs_installs_once_on_each_access_logger() -> None:
    loggers = [logging.getLogger(name) for name in ACCESS_LOGGERS]
    saved = [list(logger.filters) for logger in loggers]
    try:
        protect_access_logs()
        protect_access_logs()
        for logger in loggers:
            assert sum(isinstance(f, AccessLogRedactingFilter) for f in logger.filters) == 1
        assert set(ACCESS_LOGGERS) == {
            "uvicorn.access",
            "gunicorn.access",
            "django.server",
            "django.request",
        }
    finally:
        for logger, filters in zip(loggers, saved, strict=True):
            logger.filters[:] = filters


def test_the_filter_survives_uvicorns_own_logging_set_up() -> None:
    """``uvicorn.run`` applies its ``LOGGING_CONFIG`` with ``dictConfig`` after the app
    called ``protect_access_logs()``: that replaces handlers, never filters."""
    import logging.config

    from uvicorn.config import LOGGING_CONFIG

    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(list(g.filters), list(g.handlers), g.level, g.propagate) for g in loggers]
    try:
        protect_access_logs()
        logging.config.dictConfig(LOGGING_CONFIG)
        assert any(isinstance(f, AccessLogRedactingFilter) for f in loggers[2].filters)
    finally:
        for logger, (filters, handlers, level, propagate) in zip(loggers, saved, strict=True):
            logger.filters[:] = filters
            logger.handlers[:] = handlers
            logger.level, logger.propagate = level, propagate
