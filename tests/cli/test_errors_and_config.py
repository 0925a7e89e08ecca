"""Top-level behaviour: exit codes, one-line errors, configuration precedence, logging."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fourws_pay.cli import exitcodes
from fourws_pay.cli.config import Runtime
from fourws_pay.cli.main import app
from fourws_pay.errors import (
    AmbiguousOutcomeError,
    APIFailure,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    FourWSError,
    InvalidAmountError,
    NotFoundInLedgerError,
    PaymentRefused,
    RateLimitedError,
    ServerError,
)
from fourws_pay.payments import RefusalReason
from fourws_pay.sandbox import Fault, Sandbox
from fourws_pay.sandbox.seed import EXAMPLE_CARD, NEVER_ACTIVATED_CARD

from .conftest import Invoke


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigurationError("x"), 3),
        (InvalidAmountError("x"), 2),
        (AuthenticationError("x", status_code=401), 4),
        (APIFailure("barcode not found"), 5),
        (NotFoundInLedgerError("x"), 5),
        (APIFailure("itemCode is not financial"), 6),
        (PaymentRefused(RefusalReason.EXPIRED, "x", public_message="y"), 6),
        (RateLimitedError("x", retry_after=3), 7),
        (ServerError("x", status_code=503), 8),
        (ConnectError("x"), 8),
        (AmbiguousOutcomeError("x"), 9),
        (FourWSError("x"), 1),
    ],
)
def test_exit_code_per_error_class(error: FourWSError, code: int) -> None:
    assert exitcodes.exit_code_for(error) == code


def test_help_documents_every_exit_code() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for code, text in exitcodes.EXIT_CODES:
        assert f"{code:>3}  {text}" in result.stdout


def test_bad_configuration_is_exit_3(invoke: Invoke) -> None:
    result = invoke("--base-url", "ftp://nowhere", "giftcard", "show", EXAMPLE_CARD)
    assert result.exit_code == 3
    assert "documents_base_url" in result.stderr
    assert "Traceback" not in result.output


def test_unreachable_4ws_is_exit_8(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens
    env = {
        **Sandbox().settings_env(),  # complete credentials, so the address is what fails
        "FOURWS_DOCUMENTS_BASE_URL": f"http://127.0.0.1:{port}",
        "FOURWS_RETRY_MAX_ATTEMPTS": "1",
    }
    result = CliRunner().invoke(
        app, ["giftcard", "show", EXAMPLE_CARD], obj=Runtime(environ=env, read_dotenv=False)
    )
    assert result.exit_code == 8
    assert result.stderr.startswith("fourws-pay: error: ConnectError")
    assert f"http://127.0.0.1:{port}" in result.stderr  # says where it tried


def test_flags_beat_environment_beat_env_file(tmp_path: Path, runtime: Runtime) -> None:
    env_file = tmp_path / "shop.env"
    env_file.write_text("FOURWS_ENTITY_CODE=111\nFOURWS_READ_TIMEOUT=3\n", encoding="utf-8")
    seen = {}

    def spy(settings, clock):  # type: ignore[no-untyped-def]
        seen["settings"] = settings
        return runtime.make_client(settings, clock)

    wired = Runtime(
        make_client=spy,
        clock=runtime.clock,
        environ={**(runtime.environ or {}), "FOURWS_READ_TIMEOUT": "7"},
        read_dotenv=False,
    )
    result = CliRunner().invoke(
        app,
        [
            "--env-file",
            str(env_file),
            "--ledger",
            "sqlite:///x.db",
            "giftcard",
            "show",
            EXAMPLE_CARD,
        ],
        obj=wired,
    )
    assert result.exit_code == 0, result.output
    settings = seen["settings"]
    assert settings.read_timeout == 7.0  # environment over the file
    assert settings.ledger_url == "sqlite:///x.db"  # flag over the environment
    assert settings.entity_code == "440"  # the sandbox env sets it, over the file's 111


def test_missing_env_file_is_a_configuration_error(invoke: Invoke, tmp_path: Path) -> None:
    result = invoke("--env-file", str(tmp_path / "absent.env"), "giftcard", "show", EXAMPLE_CARD)
    assert result.exit_code == 3
    assert "env file not found" in result.stderr


def test_verbose_logs_go_to_stderr_masked(invoke: Invoke) -> None:
    result = invoke("-vv", "giftcard", "show", EXAMPLE_CARD, "--json")
    assert result.exit_code == 0, result.output
    assert "fourws_pay.http.request" in result.stderr
    assert EXAMPLE_CARD not in result.stderr
    assert "sandbox-password" not in result.output
    json.loads(result.stdout)  # stdout stays machine-readable


def test_usage_errors_exit_2(invoke: Invoke) -> None:
    assert invoke("giftcard", "show").exit_code == 2
    assert invoke("no-such-command").exit_code == 2


def test_dotenv_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: Runtime
) -> None:
    seen = {}

    def spy(settings, clock):  # type: ignore[no-untyped-def]
        seen["settings"] = settings
        return runtime.make_client(settings, clock)

    environ = {k: v for k, v in (runtime.environ or {}).items() if k != "FOURWS_ENTITY_CODE"}
    (tmp_path / ".env").write_text("FOURWS_ENTITY_CODE=777\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        ["giftcard", "show", EXAMPLE_CARD],
        obj=Runtime(make_client=spy, clock=runtime.clock, environ=environ),
    )
    assert result.exit_code == 0, result.output
    assert seen["settings"].entity_code == "777"


def test_ambiguous_activation_is_exit_9(invoke: Invoke, sandbox: Sandbox) -> None:
    sandbox.faults.add("update_giftcard", Fault.reset_after_enqueue())
    result = invoke("giftcard", "activate", NEVER_ACTIVATED_CARD, "--amount", "10", "--no-wait")
    assert result.exit_code == 9
    assert result.stderr.startswith("fourws-pay: error: AmbiguousOutcomeError")


def test_rate_limited_is_exit_7_with_the_interval(invoke: Invoke, sandbox: Sandbox) -> None:
    sandbox.faults.add("get_giftcard", Fault.rate_limited(2.0), times=None)
    result = invoke("giftcard", "show", EXAMPLE_CARD)
    assert result.exit_code == 7
    assert "(retry after 2s)" in result.stderr
