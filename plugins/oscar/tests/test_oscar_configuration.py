"""The shop refuses to run without the 4WS tenant: system check ``fourws_pay_oscar.E001``
names the ``FOURWS_*`` variables, unless sandbox mode says a sandbox is meant."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

HERE = Path(__file__).resolve().parent
TENANT = (
    "FOURWS_DOCUMENTS_BASE_URL",
    "FOURWS_APPLICATION_ID",
    "FOURWS_NAMESPACE",
    "FOURWS_USERNAME",
    "FOURWS_PASSWORD",
    "FOURWS_COMPANY_ID",
)
GIVEN = {
    "documents_base_url": "https://tenant.example",
    "application_id": "APP",
    "namespace": "NS",
    "username": "shop",
    "password": "pw-not-shown",
    "company_id": "XXXX",
}


def ours() -> list[object]:
    return [m for m in run_checks() if str(m.id).startswith("fourws_pay_oscar.")]


@pytest.fixture
def no_fourws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("FOURWS_") and "_PAY_" not in n]:
        monkeypatch.delenv(name)


def test_the_test_shop_sets_sandbox_mode_and_passes() -> None:
    from django.conf import settings

    assert settings.FOURWS_PAY["SETTINGS"] == {"sandbox": True}
    assert ours() == []


@pytest.mark.usefixtures("no_fourws_env")
def test_without_the_tenant_the_check_names_every_variable() -> None:
    with override_settings(FOURWS_PAY={"BACKEND": "http"}):
        (error,) = ours()
        assert error.id == "fourws_pay_oscar.E001"  # type: ignore[attr-defined]
        for name in TENANT:
            assert name in error.msg  # type: ignore[attr-defined]
        assert "FOURWS_SANDBOX=1" in error.hint  # type: ignore[attr-defined]
        with pytest.raises(SystemCheckError, match=r"fourws_pay_oscar\.E001"):
            call_command("check")


@pytest.mark.usefixtures("no_fourws_env")
def test_settings_keys_and_environment_both_count(monkeypatch: pytest.MonkeyPatch) -> None:
    with override_settings(FOURWS_PAY={"SETTINGS": GIVEN}):
        assert ours() == []
    with override_settings(FOURWS_PAY={"SETTINGS": {**GIVEN, "password": ""}}):
        (error,) = ours()
        assert "FOURWS_PASSWORD" in error.msg  # type: ignore[attr-defined]
        assert "FOURWS_USERNAME" not in error.msg  # type: ignore[attr-defined]
    monkeypatch.setenv("FOURWS_PASSWORD", "from-env")
    without_password = {k: v for k, v in GIVEN.items() if k != "password"}
    with override_settings(FOURWS_PAY={"SETTINGS": without_password}):
        assert ours() == []


@pytest.mark.usefixtures("no_fourws_env")
def test_sandbox_mode_from_the_environment_needs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOURWS_SANDBOX", "1")
    with override_settings(FOURWS_PAY={"BACKEND": "http"}):
        assert ours() == []


@pytest.mark.usefixtures("no_fourws_env")
def test_a_bad_value_is_its_own_error_without_the_secret() -> None:
    with override_settings(FOURWS_PAY={"SETTINGS": {**GIVEN, "username": "a\nb"}}):
        (error,) = ours()
        assert error.id == "fourws_pay_oscar.E002"  # type: ignore[attr-defined]
        assert "username" in error.msg  # type: ignore[attr-defined]
        assert "pw-not-shown" not in error.msg  # type: ignore[attr-defined]


@pytest.mark.parametrize("sandbox", [False, True], ids=["tenant-missing", "sandbox-mode"])
def test_manage_py_check_refuses_in_a_real_process(tmp_path: Path, sandbox: bool) -> None:
    """``django-admin check`` (what ``migrate`` and ``runserver`` run first) on a project
    whose FOURWS_PAY does not configure the tenant."""
    (tmp_path / "tenantless_settings.py").write_text(
        "from oscar_testshop.settings import *  # noqa: F403\n"
        'FOURWS_PAY = {**FOURWS_PAY, "SETTINGS": {}}  # noqa: F405\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOURWS_")}
    env.update(
        DJANGO_SETTINGS_MODULE="tenantless_settings",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(HERE)]),
        FOURWS_PAY_OSCAR_TEST_DB=str(tmp_path / "unused.sqlite3"),
    )
    if sandbox:
        env["FOURWS_SANDBOX"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if sandbox:
        assert done.returncode == 0, done.stderr[-3000:]
        assert "fourws_pay_oscar" not in done.stderr
    else:
        assert done.returncode == 1, (done.stdout[-2000:], done.stderr[-3000:])
        assert "fourws_pay_oscar.E001" in done.stderr
        for name in TENANT:
            assert name in done.stderr
