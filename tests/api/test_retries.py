"""Retries: reads retry with backoff; a balance change is never re-sent once it may have
reached 4WS (docs/design.md invariant 3)."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime as http_date

import httpx
import pytest

from fourws_pay.clock import ManualClock
from fourws_pay.errors import (
    AmbiguousOutcomeError,
    APIFailure,
    BadRequestError,
    ConnectError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ReadTimeout,
    ServerError,
    TransportError,
    UniqueConstraintError,
)
from fourws_pay.settings import RetryPolicy

from .endpoints import CASE_IDS, CASES, CONSUMPTION, Case
from .fakes import (
    FakeFourWS,
    Reply,
    broken_body_reply,
    expected_backoffs,
    fail,
    fixture_reply,
    json_reply,
    make_async_client,
    make_client,
    make_settings,
    raw_reply,
)

CARD = "2000000001814"
POLICY = RetryPolicy(max_attempts=4, backoff_base=0.5, backoff_max=3.0, retry_after_cap=60)


@pytest.fixture
def fake4() -> FakeFourWS:
    return FakeFourWS(make_settings(retry=POLICY))


def ok_card() -> Reply:
    return fixture_reply("get_giftcard_success.json")


TRANSIENT: dict[str, Reply] = {
    "connect_error": fail(httpx.ConnectError),
    "connect_timeout": fail(httpx.ConnectTimeout),
    "read_timeout": fail(httpx.ReadTimeout),
    "remote_protocol": fail(httpx.RemoteProtocolError),
    "broken_body": broken_body_reply(),
    "408": json_reply({}, 408),
    "429": json_reply({}, 429),
    "500": json_reply({"message": "boom"}, 500),
    "502": raw_reply(b"bad gateway", 502),
    "503": json_reply({}, 503),
    "504": json_reply({}, 504),
    "not_json": raw_reply(b"<html>oops</html>"),
    "truncated": raw_reply(b'{"success": true, "giftcard": {"cardBarcode": "20'),
    "no_success": json_reply({"giftcard": {}}),
}


@pytest.mark.parametrize("fault", list(TRANSIENT))
def test_reads_retry_transient_faults(fake4: FakeFourWS, fault: str) -> None:
    clock = ManualClock()
    fake4.on(fake4.settings.cmd_get_giftcard, TRANSIENT[fault], TRANSIENT[fault], ok_card())
    card = make_client(fake4, clock=clock).get_giftcard(CARD)
    assert card.card_barcode == CARD
    assert len(fake4.requests) == 3
    assert clock.slept == expected_backoffs(POLICY, 2)


def test_backoff_grows_and_is_capped(fake4: FakeFourWS) -> None:
    clock = ManualClock()
    fake4.on(fake4.settings.cmd_get_giftcard, json_reply({}, 503))
    with pytest.raises(ServerError):
        make_client(fake4, clock=clock).get_giftcard(CARD)
    assert len(fake4.requests) == POLICY.max_attempts  # gives up
    assert clock.slept == expected_backoffs(POLICY, POLICY.max_attempts - 1)
    ceilings = [0.5, 1.0, 2.0]
    assert all(0 <= w <= c for w, c in zip(clock.slept, ceilings, strict=True))
    # the seeded jitter is not a constant: another seed waits differently
    other = ManualClock()
    fake = FakeFourWS(make_settings(retry=POLICY)).on("getGiftcard_v1", json_reply({}, 503))
    with pytest.raises(ServerError):
        make_client(fake, clock=other, seed=7).get_giftcard(CARD)
    assert other.slept != clock.slept


def test_backoff_ceiling_is_backoff_max() -> None:
    policy = RetryPolicy(max_attempts=8, backoff_base=1.0, backoff_max=2.0)
    fake = FakeFourWS(make_settings(retry=policy)).on("getGiftcard_v1", json_reply({}, 500))
    clock = ManualClock()
    with pytest.raises(ServerError):
        make_client(fake, clock=clock).get_giftcard(CARD)
    assert len(clock.slept) == 7
    assert max(clock.slept) <= 2.0
    assert clock.slept == expected_backoffs(policy, 7)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("connect_error", ConnectError),
        ("read_timeout", ReadTimeout),
        ("not_json", MalformedResponseError),
        ("429", RateLimitedError),
    ],
)
def test_reads_give_up_with_the_last_error(
    fake4: FakeFourWS, fault: str, error: type[Exception]
) -> None:
    fake4.on(fake4.settings.cmd_get_giftcard, TRANSIENT[fault])
    with pytest.raises(error):
        make_client(fake4, clock=ManualClock()).get_giftcard(CARD)
    assert len(fake4.requests) == POLICY.max_attempts


def test_retry_after_seconds_is_honoured(fake4: FakeFourWS) -> None:
    clock = ManualClock()
    fake4.on(
        fake4.settings.cmd_get_giftcard,
        json_reply({}, 429, {"Retry-After": "7"}),
        json_reply({}, 503, {"Retry-After": "2.5"}),
        ok_card(),
    )
    make_client(fake4, clock=clock).get_giftcard(CARD)
    assert clock.slept == [7.0, 2.5]


def test_retry_after_http_date_is_honoured(fake4: FakeFourWS) -> None:
    clock = ManualClock()
    when = http_date(clock.now() + timedelta(seconds=30), usegmt=True)
    fake4.on(fake4.settings.cmd_get_giftcard, json_reply({}, 429, {"Retry-After": when}), ok_card())
    make_client(fake4, clock=clock).get_giftcard(CARD)
    assert clock.slept == [30.0]


def test_retry_after_beyond_the_cap_gives_up_at_once(fake4: FakeFourWS) -> None:
    clock = ManualClock()
    fake4.on(fake4.settings.cmd_get_giftcard, json_reply({}, 429, {"Retry-After": "61"}))
    with pytest.raises(RateLimitedError) as info:
        make_client(fake4, clock=clock).get_giftcard(CARD)
    assert info.value.retry_after == 61.0
    assert len(fake4.requests) == 1
    assert clock.slept == []


def test_retry_after_at_the_cap_is_waited(fake4: FakeFourWS) -> None:
    clock = ManualClock()
    fake4.on(fake4.settings.cmd_get_giftcard, json_reply({}, 429, {"Retry-After": "60"}), ok_card())
    make_client(fake4, clock=clock).get_giftcard(CARD)
    assert clock.slept == [60.0]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (json_reply({"message": "bad"}, 400), BadRequestError),
        (json_reply({}, 404), NotFoundError),
        (json_reply({}, 422), UniqueConstraintError),
        (json_reply({"success": False, "message": "barcode not found"}), APIFailure),
    ],
)
def test_definite_answers_are_not_retried(
    fake4: FakeFourWS, reply: Reply, error: type[Exception]
) -> None:
    clock = ManualClock()
    fake4.on(fake4.settings.cmd_get_giftcard, reply)
    with pytest.raises(error):
        make_client(fake4, clock=clock).get_giftcard(CARD)
    assert len(fake4.requests) == 1
    assert clock.slept == []


# ------------------------------------------------------------- balance-changing calls

NON_IDEMPOTENT = [case for case in CASES if not case.idempotent]
MAYBE_APPLIED = {
    "read_timeout": ReadTimeout,
    "remote_protocol": TransportError,
    "broken_body": TransportError,
    "500": ServerError,
    "502": ServerError,
    "503": ServerError,
    "504": ServerError,
    "not_json": MalformedResponseError,
    "truncated": MalformedResponseError,
    "no_success": MalformedResponseError,
}


@pytest.mark.parametrize("case", NON_IDEMPOTENT, ids=[c.name for c in NON_IDEMPOTENT])
@pytest.mark.parametrize("fault", list(MAYBE_APPLIED))
def test_balance_changes_are_never_resent_once_maybe_applied(
    fake4: FakeFourWS, case: Case, fault: str
) -> None:
    clock = ManualClock()
    fake4.on(case.route(fake4.settings), TRANSIENT[fault], case.ok())
    with pytest.raises(AmbiguousOutcomeError) as info:
        case.call(make_client(fake4, clock=clock))
    assert len(fake4.requests) == 1
    assert clock.slept == []
    assert isinstance(info.value.__cause__, MAYBE_APPLIED[fault])


@pytest.mark.parametrize("fault", ["connect_error", "connect_timeout"])
def test_update_is_retried_when_never_sent(fake4: FakeFourWS, fault: str) -> None:
    clock = ManualClock()
    fake4.on(fake4.settings.cmd_update_giftcard, TRANSIENT[fault], case_ok_update())
    result = make_client(fake4, clock=clock).update_giftcard(CONSUMPTION)
    assert result.queue_id == "f3ff844b-9ee4-4fac-8c50-123ecd91f76e"
    assert len(fake4.requests) == 2
    assert clock.slept == expected_backoffs(POLICY, 1)


def case_ok_update() -> Reply:
    return fixture_reply("update_giftcard_queued.json")


def test_update_never_sent_gives_up_as_connect_error(fake4: FakeFourWS) -> None:
    fake4.on(fake4.settings.cmd_update_giftcard, TRANSIENT["connect_error"])
    with pytest.raises(ConnectError) as info:
        make_client(fake4, clock=ManualClock()).update_giftcard(CONSUMPTION)
    assert info.value.request_sent is False
    assert len(fake4.requests) == POLICY.max_attempts


@pytest.mark.parametrize("headers", [{}, {"Retry-After": "3"}])
def test_update_rate_limited_is_not_retried(fake4: FakeFourWS, headers: dict[str, str]) -> None:
    clock = ManualClock()
    fake4.on(fake4.settings.cmd_update_giftcard, json_reply({}, 429, headers), case_ok_update())
    with pytest.raises(RateLimitedError) as info:
        make_client(fake4, clock=clock).update_giftcard(CONSUMPTION)
    assert info.value.retry_after == (3.0 if headers else None)
    assert len(fake4.requests) == 1
    assert clock.slept == []


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (json_reply({}, 400), BadRequestError),
        (json_reply({}, 408), Exception),
        (json_reply({}, 422), UniqueConstraintError),
        (json_reply({"success": False, "message": "barcode not found"}), APIFailure),
    ],
)
def test_update_refusals_are_typed_and_single(
    fake4: FakeFourWS, reply: Reply, error: type[Exception]
) -> None:
    fake4.on(fake4.settings.cmd_update_giftcard, reply, case_ok_update())
    with pytest.raises(error) as info:
        make_client(fake4, clock=ManualClock()).update_giftcard(CONSUMPTION)
    assert not isinstance(info.value, AmbiguousOutcomeError)
    assert len(fake4.requests) == 1


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
async def test_async_retries_match(case: Case) -> None:
    """The async twin sleeps the same waits and sends the same number of requests."""
    outcomes = []
    for make in (make_client, make_async_client):
        fake = FakeFourWS(make_settings(retry=POLICY))
        fake.on(case.route(fake.settings), TRANSIENT["503"], TRANSIENT["connect_error"], case.ok())
        clock = ManualClock()
        client = make(fake, clock=clock)
        try:
            result = case.call(client) if make is make_client else await case.acall(client)
            outcome: object = ("ok", type(result).__name__)
        except Exception as exc:
            outcome = ("error", type(exc).__name__, type(exc.__cause__).__name__)
        outcomes.append((outcome, clock.slept, len(fake.requests)))
    assert outcomes[0] == outcomes[1]
    if not case.idempotent:
        assert outcomes[0][0][:2] == ("error", "AmbiguousOutcomeError")


def test_the_resend_check_fails_without_the_protection(
    fake4: FakeFourWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Self-check: were updateGiftcard marked idempotent, the 503 would be re-sent, which is
    exactly what ``test_balance_changes_are_never_resent_once_maybe_applied`` rules out."""
    import dataclasses

    from fourws_pay.api import documents_flows

    monkeypatch.setattr(
        documents_flows,
        "UPDATE_GIFTCARD",
        dataclasses.replace(documents_flows.UPDATE_GIFTCARD, idempotent=True),
    )
    fake4.on(fake4.settings.cmd_update_giftcard, TRANSIENT["503"], case_ok_update())
    make_client(fake4, clock=ManualClock()).update_giftcard(CONSUMPTION)
    assert len(fake4.requests) == 2
