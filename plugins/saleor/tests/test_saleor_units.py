"""Small pieces on their own: response builders, JWS parsing, config, store, JSON."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from fake_saleor import FakeSaleor
from fourws_pay_saleor.config import AppConfig
from fourws_pay_saleor.jsonutil import dumps, loads
from fourws_pay_saleor.jws import (
    SignatureError,
    jwks_url,
    keys_from_jwks,
    parse_signature,
    verify_with_keys,
)
from fourws_pay_saleor.payloads import PayloadError, WebhookEvent, gift_card_code, parse_payload
from fourws_pay_saleor.responses import (
    CHARGE_RESULTS,
    SESSION_RESULTS,
    Result,
    async_response,
    payment_method_details,
    transaction_response,
)
from fourws_pay_saleor.store import AppStore
from hypothesis import given, settings
from hypothesis import strategies as st

from fourws_pay.errors import ConfigurationError

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_success_without_psp_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="pspReference"):
        transaction_response(Result.CHARGE_SUCCESS, allowed=CHARGE_RESULTS)
    with pytest.raises(ValueError, match="pspReference"):
        transaction_response(Result.AUTHORIZATION_REQUEST, allowed=SESSION_RESULTS)
    with pytest.raises(ValueError, match="not a valid result"):
        transaction_response(Result.REFUND_SUCCESS, allowed=SESSION_RESULTS, psp_reference="x")
    with pytest.raises(ValueError):
        async_response("")


def test_empty_or_invalid_external_url_is_omitted() -> None:
    for url in ("", None, "not a url", "ftp://x/y", "https://"):
        body = transaction_response(Result.CHARGE_FAILURE, allowed=CHARGE_RESULTS, external_url=url)
        assert "externalUrl" not in body
    body = transaction_response(
        Result.CHARGE_FAILURE, allowed=CHARGE_RESULTS, external_url="https://4ws.example/op/1"
    )
    assert body["externalUrl"] == "https://4ws.example/op/1"


def test_message_is_cut_to_512_and_time_is_iso() -> None:
    body = transaction_response(
        Result.CHARGE_FAILURE, allowed=CHARGE_RESULTS, message="x" * 600, time=NOW
    )
    assert len(body["message"]) == 512
    assert datetime.fromisoformat(body["time"]) == NOW
    with pytest.raises(ValueError, match="timezone"):
        transaction_response(
            Result.CHARGE_FAILURE, allowed=CHARGE_RESULTS, time=datetime(2026, 1, 1)
        )


def test_payment_method_details_show_at_most_four_characters() -> None:
    assert payment_method_details("Gift", "4WS", "2000000012345")["lastChars"] == "2345"
    short = payment_method_details("Gift", None, "1234")
    assert "lastChars" not in short  # four characters would be the whole code
    assert "brand" not in short


def test_jws_header_rules() -> None:
    saleor = FakeSaleor()
    good = saleor.sign(b"{}")
    parsed = parse_signature(good)
    assert parsed.kid == saleor.kid
    assert parsed.header["b64"] is False
    for bad in (None, "", "a.b", "a.b.c", "..", "e30..AA"):
        with pytest.raises(SignatureError):
            parse_signature(bad)
    keys = keys_from_jwks(saleor.jwks())
    verify_with_keys(parsed, b"{}", keys)
    with pytest.raises(SignatureError):
        verify_with_keys(parsed, b"{ }", keys)  # one byte of whitespace is a different body


def test_jwks_document_tolerates_foreign_keys() -> None:
    saleor = FakeSaleor()
    document = saleor.jwks()
    document["keys"].insert(0, {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"})
    document["keys"].append({"kty": "RSA", "n": "!!", "e": "AQAB", "kid": "broken"})
    document["keys"].append({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"})
    keys = keys_from_jwks(document)
    assert [k.kid for k in keys] == [saleor.kid]


def test_jwks_url_is_at_the_saleor_origin() -> None:
    assert jwks_url("https://shop.example/graphql/") == "https://shop.example/.well-known/jwks.json"
    assert (
        jwks_url("http://127.0.0.1:8000/graphql/") == "http://127.0.0.1:8000/.well-known/jwks.json"
    )


def test_config_from_env_and_allowlist() -> None:
    config = AppConfig.from_env(
        {
            "FOURWS_SALEOR_APP_URL": "https://pay.example/",
            "FOURWS_SALEOR_ALLOWED_SALEOR_API_URLS": "https://a.example/graphql/, https://b.example/graphql/",
            "FOURWS_SALEOR_SEND_PAYMENT_METHOD_DETAILS": "false",
        }
    )
    assert config.app_url == "https://pay.example"
    assert config.is_allowed("https://b.example/graphql")
    assert not config.is_allowed("https://c.example/graphql/")
    assert config.send_payment_method_details is False
    assert AppConfig().is_allowed("https://anything.example/graphql/")
    with pytest.raises(ConfigurationError, match="FOURWS_SALEOR_APP_URL"):
        AppConfig.from_env({"FOURWS_SALEOR_APP_URL": "ftp://x"})


def test_leases_exclude_other_owners_until_they_expire(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "s.db")
    other = AppStore(tmp_path / "s.db")  # another worker process on the same file
    assert store.try_lease("tx", "a", now=100.0, ttl=60)
    assert not other.try_lease("tx", "b", now=110.0, ttl=60)
    assert store.try_lease("tx", "a", now=120.0, ttl=60)  # re-entrant for its owner
    assert other.try_lease("tx", "b", now=181.0, ttl=60)  # a crashed owner's lease lapses
    other.release_lease("tx", "b")
    assert store.try_lease("tx", "a", now=182.0, ttl=60)


def test_json_refuses_non_finite_numbers() -> None:
    for text in ('{"amount": NaN}', '{"amount": Infinity}', "[-Infinity]"):
        with pytest.raises(ValueError, match="not JSON"):
            loads(text)


def test_json_keeps_money_exact() -> None:
    text = dumps({"amount": Decimal("10.10"), "big": Decimal("1E+2"), "n": None, "ok": True})
    assert text == '{"amount":10.10,"big":100,"n":null,"ok":true}'
    assert loads(text)["amount"] == Decimal("10.10")
    with pytest.raises(TypeError):
        dumps({"amount": 10.1})


def test_gift_card_code_is_read_from_data() -> None:
    assert gift_card_code({"code": " 2000000012345 "}) == "2000000012345"
    assert gift_card_code({"giftCardCode": "ABC123"}) == "ABC123"
    for data in (None, "2000", {"code": ""}, {"code": 123}, {"code": "x" * 65}, {"code": "a\nb"}):
        assert gift_card_code(data) is None


def test_readme_shows_the_subscriptions_the_manifest_declares() -> None:
    from fourws_pay_saleor.manifest import SUBSCRIPTIONS

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for event, query in SUBSCRIPTIONS.items():
        assert f"### {event.enum_name}\n```graphql\n{query}\n```" in readme


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
def test_any_signature_header_parses_or_raises_signature_error(text: str) -> None:
    with contextlib.suppress(SignatureError):
        parse_signature(text)


@settings(max_examples=150, deadline=None)
@given(document=json_values, event=st.sampled_from(list(WebhookEvent)))
def test_any_json_parses_or_raises_payload_error(document: object, event: WebhookEvent) -> None:
    with contextlib.suppress(PayloadError):
        parse_payload(event, document)


def test_readme_e2e_command_names_the_real_test_and_a_registered_marker() -> None:
    import re
    import tomllib

    here = Path(__file__).parent
    readme = (here.parent / "README.md").read_text()
    [command] = re.findall(r"pytest (plugins/saleor/tests/\S+) -m (\w+)", readme)
    path, marker = command
    assert (here.parent.parent.parent / path).is_file()
    pyproject = tomllib.loads((here.parent.parent.parent / "pyproject.toml").read_text())
    markers = pyproject["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith(marker + ":") for m in markers)
    assert marker in (here / "test_saleor_e2e.py").read_text()


def test_a_store_written_by_the_previous_app_version_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    from fourws_pay_saleor import AppStore

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE installations (api_url TEXT PRIMARY KEY, domain TEXT NOT NULL,
                token TEXT NOT NULL, app_id TEXT, installed_at TEXT NOT NULL);
            CREATE TABLE transactions (api_url TEXT NOT NULL, transaction_id TEXT NOT NULL,
                action_type TEXT NOT NULL, amount TEXT NOT NULL, currency TEXT NOT NULL,
                reservation_id TEXT, capture_operation_id TEXT, state TEXT NOT NULL,
                response TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                PRIMARY KEY (api_url, transaction_id));
            CREATE TABLE operations (operation_id TEXT PRIMARY KEY, api_url TEXT NOT NULL,
                transaction_id TEXT NOT NULL, kind TEXT NOT NULL, amount TEXT NOT NULL,
                currency TEXT NOT NULL);
            INSERT INTO installations VALUES ('http://s/graphql/', 's', 't', NULL, '2026-01-01');
            INSERT INTO transactions VALUES ('http://s/graphql/', 'tx', 'AUTHORIZATION', '5',
                'EUR', 'res_1', NULL, 'authorized', NULL, '2026-01-01T00:00:00+00:00',
                '2026-01-01T00:00:00+00:00');
            """
        )
    store = AppStore(path)
    installation = store.get_installation("http://s/graphql/")
    assert installation is not None
    assert installation.active
    record = store.find_by_reservation("res_1")
    assert record is not None
    assert (record.transaction_id, record.psp_reference, record.authorized) == ("tx", None, None)
    store.close()
