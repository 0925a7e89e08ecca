"""Log hygiene (docs/design.md invariant 12): at DEBUG, through successes, retries and failures,
no credential, bearer token, callback secret or full barcode reaches a log record or an
exception text; barcodes appear masked to their last 4 characters."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import httpx
import pytest

import fourws_pay.api.data_flows
import fourws_pay.api.documents_flows
import fourws_pay.logs
from fourws_pay.clock import ManualClock
from fourws_pay.errors import FourWSError
from fourws_pay.logs import LOGGER_NAME, mask_barcode

from .endpoints import CASE_IDS, CASES, Case
from .fakes import (
    CALLBACK_SECRET,
    CALLBACK_URL,
    PASSWORD,
    TOKEN,
    FakeFourWS,
    Reply,
    fail,
    json_reply,
    make_client,
)

SECRETS = (PASSWORD, TOKEN, CALLBACK_SECRET)

# Endpoints that log which card they touched (masked); the others log no barcode at all.
LOGGED_BARCODE = {
    "get_giftcard": "2000000001814",
    "update_giftcard": "0098260111383",
    "update_giftcard_activation": "0098260111383",
    "insert_barcode": "8050200058081",
    "sku_from_barcode": "8050200058081",
    "delete_barcode": "8050200058081",
}


def leaks(text: str, barcodes: Iterable[str]) -> list[str]:
    """The secrets and full barcodes found in ``text``."""
    return [s for s in (*SECRETS, *barcodes) if s in text]


def record_text(records: Iterable[logging.LogRecord]) -> str:
    parts = []
    for record in records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
        parts.extend(repr(v) for k, v in vars(record).items() if k not in _STANDARD)
    return "\n".join(parts)


_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message"}


def echo(case: Case) -> dict[str, str]:
    """An error body that repeats everything we sent, as a careless server might.

    A bearer token is ours to hide only once we have it: Documents calls and the login
    itself never had one.
    """
    token = (f"{TOKEN}-1",) if case.family == "data" and case.name != "login" else ()
    said = " ".join((*case.barcodes, PASSWORD, *token, CALLBACK_URL))
    return {"message": f"rejected: {said}"}


def scenarios(case: Case) -> dict[str, list[Reply]]:
    return {
        "success": [case.ok()],
        "retries_then_success": [
            json_reply(echo(case), 503, {"Retry-After": "1"}),
            fail(httpx.ConnectError),
            case.ok(),
        ],
        "read_timeout": [fail(httpx.ReadTimeout, f"timed out {CALLBACK_URL}"), case.ok()],
        "refused_with_echo": [json_reply(echo(case), 400)],
        "success_false_with_echo": [json_reply({"success": False, **echo(case)})],
        "unauthorized": [json_reply(echo(case), 401)],
        "rate_limited": [json_reply(echo(case), 429, {"Retry-After": "600"})],
        "malformed": [json_reply({"weird": list(case.barcodes)})],
    }


SCENARIOS = list(scenarios(CASES[0]))


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_no_secret_or_full_barcode_in_logs_or_errors(
    case: Case, scenario: str, fake: FakeFourWS, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    caplog.set_level(logging.DEBUG, logger="httpx")  # httpx logs each request URL at INFO
    fake.on(case.route(fake.settings), *scenarios(case)[scenario])
    client = make_client(fake, clock=ManualClock())
    error_text = ""
    try:
        case.call(client)
    except FourWSError as exc:
        chain = [exc, exc.__cause__, exc.__context__]
        error_text = " ".join(f"{e!s} {e!r} {getattr(e, 'message', '')}" for e in chain if e)
    records = [r for r in caplog.records if r.name.startswith(LOGGER_NAME)]
    assert records, "every call logs at least its request at DEBUG"
    text = record_text(caplog.records)
    assert leaks(text, case.barcodes) == []
    assert leaks(error_text, case.barcodes) == []
    barcode = LOGGED_BARCODE.get(case.name)
    if barcode is not None:
        assert mask_barcode(barcode) in text


@pytest.mark.parametrize(
    ("message", "leaked"),
    [
        ("fourws_pay.http.request barcode='2000000001814'", True),
        ("fourws_pay.http.request barcode='*********1814'", False),
        (f"login password={PASSWORD}", True),
        (f"Authorization: Bearer {TOKEN}-7", True),
        (f"callback={CALLBACK_URL}", True),
        ("callback=https://shop.example/fourws/callback/op-42/****", False),
    ],
)
def test_the_scanner_sees_leaks(message: str, leaked: bool) -> None:
    """Self-check: the scan above would notice an unmasked barcode or a secret."""
    record = logging.LogRecord(LOGGER_NAME, logging.DEBUG, __file__, 1, message, None, None)
    assert bool(leaks(record_text([record]), ["2000000001814"])) is leaked


def test_the_hygiene_test_fails_without_masking(
    fake: FakeFourWS, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remove masking at the call site and in the log processor: the leak is caught."""
    monkeypatch.setattr(fourws_pay.api.documents_flows, "mask_barcode", str)
    monkeypatch.setattr(fourws_pay.api.data_flows, "mask_barcode", str)
    monkeypatch.setattr(fourws_pay.logs, "mask_barcode", str)
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    case = CASES[0]
    fake.on(case.route(fake.settings), case.ok())
    case.call(make_client(fake))
    assert leaks(record_text(caplog.records), case.barcodes) == ["2000000001814"]


def test_log_processor_masks_slips_at_call_sites(caplog: pytest.LogCaptureFixture) -> None:
    """A future call site that forgets to mask, or logs a secret field, is still safe."""
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    log = fourws_pay.logs.get_logger()
    log.debug(
        "slip",
        barcode="2000000001814",
        card_barcode="0099000001209",
        password=PASSWORD,
        token=f"{TOKEN}-3",
        callback_url=CALLBACK_URL,
        error="barcode 8050200058081 not found",
    )
    text = record_text(caplog.records)
    assert leaks(text, ["2000000001814", "0099000001209", "8050200058081"]) == []
    assert "*********1814" in text
    assert "*********8081" in text


def test_the_library_does_not_configure_logging() -> None:
    """Only the NullHandler the logging docs ask libraries for; no level, records propagate."""
    logger = logging.getLogger(LOGGER_NAME)
    assert all(isinstance(h, logging.NullHandler) for h in logger.handlers)
    assert logger.level == logging.NOTSET
    assert logger.propagate
