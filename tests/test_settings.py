"""Settings: keyword arguments or ``FOURWS_*`` variables; bad values are named, secrets never
shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fourws_pay.errors import ConfigurationError, MissingConfigurationError
from fourws_pay.settings import REQUIRED_FIELDS, SANDBOX_DEFAULTS, RetryPolicy, Settings

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
    s = Settings.from_env({**ENV, **values})
    assert (s.read_timeout, s.entity_code) == (9, "440")
    assert s.callback_base_url == "https://shop.example/cb"
    assert s.ledger_url == "sqlite:///x.db"


def test_defaults_without_environment() -> None:
    assert Settings.from_env({}, require_tenant=False) == Settings()
    assert Settings().retry == RetryPolicy()
    assert Settings().sandbox is False


def test_keyword_arguments_do_not_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FOURWS_USERNAME", "from-env")
    assert Settings().username == ""
    assert Settings.from_env().username == "from-env"  # os.environ by default


# Without the tenant's settings a shop would start against Settings' defaults (a sandbox
# address on this machine, empty credentials) and fail at its first card.

TENANT_VARIABLES = (
    "FOURWS_DOCUMENTS_BASE_URL",
    "FOURWS_APPLICATION_ID",
    "FOURWS_NAMESPACE",
    "FOURWS_USERNAME",
    "FOURWS_PASSWORD",
    "FOURWS_COMPANY_ID",
)


def test_from_env_refuses_to_run_without_the_tenant_naming_every_variable() -> None:
    assert tuple(f"FOURWS_{f.upper()}" for f in REQUIRED_FIELDS) == TENANT_VARIABLES
    with pytest.raises(MissingConfigurationError) as info:
        Settings.from_env({"FOURWS_LEDGER_URL": "sqlite:///x.db"})
    assert info.value.missing == TENANT_VARIABLES
    assert isinstance(info.value, ConfigurationError)  # one branch of the documented tree
    for name in TENANT_VARIABLES:
        assert name in str(info.value)
    assert "FOURWS_SANDBOX=1" in str(info.value)


@pytest.mark.parametrize("name", TENANT_VARIABLES)
def test_each_tenant_variable_is_required_alone(name: str) -> None:
    for absent in ({k: v for k, v in ENV.items() if k != name}, {**ENV, name: ""}):
        with pytest.raises(MissingConfigurationError) as info:
            Settings.from_env(absent)
        assert info.value.missing == (name,)
        assert SECRET not in str(info.value)
    assert Settings.missing_from_env({k: v for k, v in ENV.items() if k != name}) == (name,)


def test_overrides_count_as_given_and_a_blank_override_as_missing() -> None:
    without_password = {k: v for k, v in ENV.items() if k != "FOURWS_PASSWORD"}
    assert Settings.from_env(without_password, password=SECRET).password.get_secret_value()
    with pytest.raises(MissingConfigurationError) as info:
        Settings.from_env(ENV, username="")
    assert info.value.missing == ("FOURWS_USERNAME",)


def test_require_tenant_false_builds_for_callers_that_never_call_4ws() -> None:
    assert Settings.from_env({}, require_tenant=False).username == ""
    assert Settings.missing_from_env({}) == TENANT_VARIABLES


@pytest.mark.parametrize("flag", ["1", "true", "yes", "on"])
def test_sandbox_mode_needs_nothing_and_fills_the_sandbox_tenant(flag: str) -> None:
    s = Settings.from_env({"FOURWS_SANDBOX": flag})
    assert s.sandbox is True
    assert Settings.missing_from_env({"FOURWS_SANDBOX": flag}) == ()
    assert s.documents_base_url == "http://127.0.0.1:8765"  # `fourws-pay sandbox serve`
    assert (s.application_id, s.username) == ("SANDBOX", "sandbox")
    assert s.password.get_secret_value() == SANDBOX_DEFAULTS["password"]
    assert s == Settings(sandbox=True)


def test_sandbox_defaults_never_replace_what_was_given() -> None:
    s = Settings.from_env(
        {"FOURWS_SANDBOX": "1", "FOURWS_DOCUMENTS_BASE_URL": "http://127.0.0.1:9"}
    )
    assert s.documents_base_url == "http://127.0.0.1:9"
    assert s.namespace == "sandbox"
    assert Settings(sandbox=True, username="me").username == "me"
    blank = Settings(sandbox=True, entity_code="")  # explicitly none: kept, and round-trips
    assert blank.entity_code == ""
    assert Settings(**blank.model_dump()) == blank


@pytest.mark.parametrize("flag", ["0", "false", ""])
def test_sandbox_off_still_requires_the_tenant(flag: str) -> None:
    env = {"FOURWS_SANDBOX": flag} if flag else {}
    with pytest.raises(MissingConfigurationError):
        Settings.from_env(env)


def test_the_sandbox_helpers_settings_are_in_sandbox_mode() -> None:
    from fourws_pay.sandbox import sandbox_settings

    s = sandbox_settings("http://127.0.0.1:9")
    assert s.sandbox is True
    assert (s.documents_base_url, s.username) == ("http://127.0.0.1:9", "sandbox")


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


def test_the_library_entry_points_refuse_to_construct_without_the_tenant(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``GiftCardPayments()`` and ``Client()`` read the environment when given no settings;
    with nothing set they refuse before opening a ledger or a connection."""
    import os

    from fourws_pay import AsyncClient, AsyncGiftCardPayments, Client, GiftCardPayments

    for name in [n for n in os.environ if n.startswith("FOURWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    for build in (GiftCardPayments, AsyncGiftCardPayments, Client, AsyncClient):
        with pytest.raises(MissingConfigurationError) as info:
            build()
        assert info.value.missing == TENANT_VARIABLES
    assert list(tmp_path.iterdir()) == []  # no ledger file was made
    monkeypatch.setenv("FOURWS_SANDBOX", "1")
    with Client() as client:
        assert client.settings.sandbox
