"""Settings: keyword arguments or ``FOURWS_*`` variables; bad values are named, secrets never
shown."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fourws_pay.errors import ConfigurationError
from fourws_pay.settings import RetryPolicy, Settings

SECRET = "pw-S3cret-fixture"

ENV = {
    "FOURWS_DOCUMENTS_BASE_URL": "https://tenant.example/",
    "FOURWS_DATA_BASE_URL": "https://data.example",
    "FOURWS_APPLICATION_ID": "APP",
    "FOURWS_NAMESPACE": "NS",
    "FOURWS_LANGUAGE_ID": "IT",
    "FOURWS_USERNAME": "api.user",
    "FOURWS_PASSWORD": SECRET,
    "FOURWS_COMPANY_ID": "XXXX",
    "FOURWS_SITE_ID": "500",
    "FOURWS_LOAD_ROLES": "false",
    "FOURWS_CONNECT_TIMEOUT": "2.5",
    "FOURWS_CMD_GET_GIFTCARD": "getGiftCard_v2",
    "FOURWS_PARAM_GIFTCARD_BARCODE": "cardBarcode",
    "FOURWS_PATH_LOGIN": "/api/v1/auth/login",
    "FOURWS_TOKEN_REFRESH_MARGIN": "45",
    "FOURWS_RETRY_MAX_ATTEMPTS": "5",
    "FOURWS_RETRY_BACKOFF_BASE": "0.1",
    "FOURWS_RETRY_BACKOFF_MAX": "4",
    "FOURWS_RETRY_RETRY_AFTER_CAP": "30",
    "OTHER_PASSWORD": "not ours",
    "FOURWS_UNKNOWN_THING": "ignored",
}


def test_from_env_reads_every_kind_of_field() -> None:
    s = Settings.from_env(ENV)
    assert s.documents_base_url == "https://tenant.example"  # trailing slash dropped
    assert s.data_url == "https://data.example"
    assert (s.application_id, s.namespace, s.language_id) == ("APP", "NS", "IT")
    assert (s.username, s.company_id, s.site_id) == ("api.user", "XXXX", "500")
    assert s.password.get_secret_value() == SECRET
    assert s.load_roles is False
    assert s.connect_timeout == 2.5
    assert s.cmd_get_giftcard == "getGiftCard_v2"
    assert s.param_giftcard_barcode == "cardBarcode"
    assert s.path_login == "/api/v1/auth/login"
    assert s.token_refresh_margin == 45
    assert s.retry == RetryPolicy(
        max_attempts=5, backoff_base=0.1, backoff_max=4, retry_after_cap=30
    )


def test_every_field_has_an_environment_variable() -> None:
    """No field is unreachable from the environment (retry through its sub-fields)."""
    values = {
        "FOURWS_READ_TIMEOUT": "9",
        "FOURWS_ENTITY_CODE": "440",
        "FOURWS_CALLBACK_BASE_URL": "https://shop.example/cb",
        "FOURWS_LEDGER_URL": "sqlite:///x.db",
    }
    s = Settings.from_env(values)
    assert (s.read_timeout, s.entity_code) == (9, "440")
    assert s.callback_base_url == "https://shop.example/cb"
    assert s.ledger_url == "sqlite:///x.db"


def test_defaults_without_environment() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings().retry == RetryPolicy()


def test_keyword_arguments_do_not_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOURWS_USERNAME", "from-env")
    assert Settings().username == ""
    assert Settings.from_env().username == "from-env"  # os.environ by default


def test_overrides_win() -> None:
    s = Settings.from_env(ENV, username="override", retry=RetryPolicy(max_attempts=2))
    assert s.username == "override"
    assert s.retry.max_attempts == 2
    assert s.namespace == "NS"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FOURWS_CONNECT_TIMEOUT": "soon"}, "FOURWS_CONNECT_TIMEOUT"),
        ({"FOURWS_CONNECT_TIMEOUT": "-1"}, "FOURWS_CONNECT_TIMEOUT"),
        ({"FOURWS_RETRY_MAX_ATTEMPTS": "zero"}, "FOURWS_RETRY_MAX_ATTEMPTS"),
        ({"FOURWS_RETRY_MAX_ATTEMPTS": "99"}, "FOURWS_RETRY_MAX_ATTEMPTS"),
        ({"FOURWS_DOCUMENTS_BASE_URL": "ftp://x"}, "FOURWS_DOCUMENTS_BASE_URL"),
        ({"FOURWS_LOAD_ROLES": "perhaps"}, "FOURWS_LOAD_ROLES"),
        ({"FOURWS_TOKEN_REFRESH_MARGIN": SECRET}, "FOURWS_TOKEN_REFRESH_MARGIN"),
        ({"FOURWS_DOCUMENTS_BASE_URL": SECRET}, "FOURWS_DOCUMENTS_BASE_URL"),
    ],
)
def test_bad_values_name_the_variable_not_the_value(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({**ENV, **env})
    text = f"{info.value!s} {info.value!r}"
    assert named in text
    assert SECRET not in text
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_bad_override_names_the_field() -> None:
    with pytest.raises(ConfigurationError, match="read_timeout"):
        Settings.from_env(ENV, read_timeout="never")
    with pytest.raises(ConfigurationError, match="pasword"):
        Settings.from_env(ENV, pasword=SECRET)


def test_build_maps_errors() -> None:
    with pytest.raises(ConfigurationError, match=r"retry\.backoff_base"):
        Settings.build(retry={"backoff_base": -1})


@pytest.mark.parametrize("render", [repr, str])
def test_password_is_hidden(render: object) -> None:
    s = Settings.from_env(ENV)
    assert SECRET not in render(s)  # type: ignore[operator]
    assert SECRET not in render(s.password)  # type: ignore[operator]
    assert SECRET not in s.model_dump_json()


def test_direct_construction_errors_do_not_echo_values() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(connect_timeout=SECRET)  # type: ignore[arg-type]
    assert SECRET not in str(info.value)


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.username = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "env",
    [
        {"FOURWS_PASSWORD": SECRET + "\r\nX-Evil: 1"},
        {"FOURWS_USERNAME": "user\n"},
        {"FOURWS_NAMESPACE": "ns\x00"},
    ],
)
def test_header_fields_refuse_control_characters(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({**ENV, **env})
    (name,) = env
    assert name in str(info.value)
    assert SECRET not in str(info.value)
