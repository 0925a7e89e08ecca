"""Without the 4WS tenant's settings the App refuses to start, naming them; sandbox mode
(``FOURWS_SANDBOX=1``) still starts with nothing else set.

The console script and uvicorn's factory run as a new user would run them, in a subprocess
with every ``FOURWS_*`` variable removed: an App that started anyway would be installed in
Saleor and fail every payment with 4WS's "Access Denied".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fourws_pay.errors import MissingConfigurationError

TENANT = (
    "FOURWS_DOCUMENTS_BASE_URL",
    "FOURWS_APPLICATION_ID",
    "FOURWS_NAMESPACE",
    "FOURWS_USERNAME",
    "FOURWS_PASSWORD",
    "FOURWS_COMPANY_ID",
)
SCRIPT = str(Path(sys.executable).with_name("fourws-pay-saleor"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOURWS_")}
    env.update(
        FOURWS_LEDGER_URL=f"sqlite:///{tmp_path / 'ledger.db'}",  # not a tenant setting
        FOURWS_SALEOR_STORE_PATH=str(tmp_path / "app.db"),
        **extra,
    )
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # a command that wrongly starts serving is stopped by the timeout, failing the test
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    "command",
    [["serve", "--port", "0"], ["manifest"]],
    ids=["serve", "manifest"],
)
def test_the_console_script_exits_3_naming_the_missing_settings(
    tmp_path: Path, command: list[str]
) -> None:
    if command[0] == "serve":
        command[-1] = str(_free_port())
    done = _run([SCRIPT, *command], _env(tmp_path), tmp_path)
    assert done.returncode == 3, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    for name in TENANT:
        assert name in done.stderr
    assert "FOURWS_SANDBOX=1" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""  # no manifest, no "Manifest: ..." banner
    assert not (tmp_path / "ledger.db").exists()  # refused before opening anything


def test_a_partial_tenant_names_only_what_is_missing(tmp_path: Path) -> None:
    env = _env(tmp_path, FOURWS_DOCUMENTS_BASE_URL="https://tenant.example", FOURWS_NAMESPACE="x")
    done = _run([SCRIPT, "manifest"], env, tmp_path)
    assert done.returncode == 3
    assert "FOURWS_USERNAME" in done.stderr
    assert "FOURWS_DOCUMENTS_BASE_URL" not in done.stderr
    assert "FOURWS_NAMESPACE" not in done.stderr


def test_uvicorn_factory_refuses_to_build_the_app(tmp_path: Path) -> None:
    factory = "fourws_pay_saleor.cli:app_from_env"
    args = [sys.executable, "-m", "uvicorn", "--factory", factory, "--port", str(_free_port())]
    done = _run(args, _env(tmp_path), tmp_path)
    assert done.returncode != 0
    assert "MissingConfigurationError" in done.stderr
    for name in TENANT:
        assert name in done.stderr


def test_app_from_env_raises_naming_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fourws_pay_saleor.cli import app_from_env

    for name, value in _env(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in [n for n in os.environ if n.startswith("FOURWS_") and n not in _env(tmp_path)]:
        monkeypatch.delenv(name)
    with pytest.raises(MissingConfigurationError) as info:
        app_from_env()
    assert info.value.missing == TENANT


def test_a_channel_without_the_tenant_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Channel overrides start from the same environment: the default tenant's absence is
    not hidden by a channel that sets only its entity."""
    from fourws_pay_saleor.cli import tenant_settings
    from fourws_pay_saleor.config import AppConfig

    for name in [n for n in os.environ if n.startswith("FOURWS_")]:
        monkeypatch.delenv(name)
    config = AppConfig(channel_settings={"b2b": {"entity_code": "441", "sandbox": True}})
    with pytest.raises(MissingConfigurationError):
        tenant_settings(config)  # the default tenant is still missing
    monkeypatch.setenv("FOURWS_SANDBOX", "1")
    default, channels = tenant_settings(config)
    assert default.sandbox
    assert channels["b2b"].entity_code == "441"


def test_sandbox_mode_prints_the_manifest(tmp_path: Path) -> None:
    done = _run([SCRIPT, "manifest"], _env(tmp_path, FOURWS_SANDBOX="1"), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["tokenTargetUrl"].endswith("/api/register")


def test_sandbox_mode_builds_the_app_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fourws_pay_saleor.cli import app_from_env

    for name in [n for n in os.environ if n.startswith("FOURWS_")]:
        monkeypatch.delenv(name)
    for name, value in _env(tmp_path, FOURWS_SANDBOX="1").items():
        if name.startswith("FOURWS_"):
            monkeypatch.setenv(name, value)
    app = app_from_env()

    async def manifest() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            return (await http.get("/api/manifest")).status_code

    assert asyncio.run(manifest()) == 200


@pytest.mark.slow
def test_sandbox_mode_serves_with_the_console_script(tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [SCRIPT, "serve", "--port", str(port)],
        env=_env(tmp_path, FOURWS_SANDBOX="1"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        manifest = None
        for _ in range(200):  # bounded: ~20 s of connection attempts, 0.1 s apart
            if process.poll() is not None:
                break
            try:
                manifest = httpx.get(f"http://127.0.0.1:{port}/api/manifest", timeout=1).json()
                break
            except httpx.TransportError:  # not listening yet: wait on the process itself
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.1)
        assert manifest is not None, "the App did not come up in sandbox mode"
        assert manifest["tokenTargetUrl"] == f"http://127.0.0.1:{port}/api/register"
    finally:
        process.terminate()
        process.wait(timeout=10)
