"""The example shop (``examples/oscar_shop``) as its users run it, in its own processes.

Its logging prints each fourws-pay event once even after Oscar's root-level
``logging.info()`` (which runs ``logging.basicConfig()``); its access and request logs never
keep a callback's secret; ``manage.py runserver`` warns when it listens on another port than
``SHOP_PUBLIC_URL``'s, where 4WS's callbacks would go.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

SHOP = Path(__file__).resolve().parents[3] / "examples" / "oscar_shop"
SECRET = "Jq3kT9xv0b_Wm2Lr8YtZpE5sNcA7uHdG4fKiVoQ1yXw"
CALLBACK = f"/fourws-pay/callback/op_0123456789abcdef0123456789abcdef/{SECRET}"


def shop_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FOURWS_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="shop.settings",
        OSCAR_SHOP_DATA_DIR=str(tmp_path),
        FOURWS_PAY_BACKEND="http",  # no demo sandbox to start: these tests need none
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def run_in_shop(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=SHOP,
        env=shop_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_event_is_logged_once_after_oscar_logs_on_the_root_logger(tmp_path: Path) -> None:
    done = run_in_shop(
        tmp_path,
        textwrap.dedent(
            """
            import logging, sys
            sys.path.insert(0, ".")
            import django
            django.setup()
            logging.info("Symlinking missing image")  # what Oscar's MissingProductImage does
            from fourws_pay.logs import get_logger
            get_logger().info("fourws_pay.payments.reserved", reservation_id="res_1")
            """
        ),
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "fourws_pay.payments.reserved" in line]
    assert len(lines) == 1, done.stderr


def test_request_and_access_logs_mask_callback_secrets(tmp_path: Path) -> None:
    """The plugin installs the redacting filter when Django starts (runserver's access
    line and the 404 warning for a forged callback both name the path)."""
    done = run_in_shop(
        tmp_path,
        textwrap.dedent(
            f"""
            import logging, sys
            sys.path.insert(0, ".")
            import django
            django.setup()
            logging.getLogger("django.server").setLevel(logging.INFO)
            server = logging.getLogger("django.server")
            server.info('"%s" %s %s', "POST {CALLBACK} HTTP/1.1", "404", "13")
            logging.getLogger("django.request").warning("Not Found: %s", "{CALLBACK}")
            """
        ),
    )
    assert done.returncode == 0, done.stderr
    assert "/op_0123456789abcdef0123456789abcdef/****" in done.stderr
    assert done.stderr.count("/****") == 2, done.stderr
    assert SECRET not in done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _runserver_start_output(tmp_path: Path, public_url: str, port: int) -> str:
    """What ``runserver`` prints up to its "Quit the server" banner (the warning, if any,
    comes before it); the server is stopped then."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runserver",
            "--noreload",
            "--skip-checks",
            f"127.0.0.1:{port}",
        ],
        cwd=SHOP,
        env=shop_env(tmp_path, SHOP_PUBLIC_URL=public_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # ends at the banner, or if the server exits early
            seen.append(line)
            if "Quit the server with" in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return "".join(seen)


def test_runserver_warns_when_callbacks_would_go_to_another_port(tmp_path: Path) -> None:
    port = _free_port()
    out = _runserver_start_output(tmp_path, "http://127.0.0.1:8000", port)
    assert "Quit the server with" in out, out  # it started
    assert f"this server listens on port {port}" in out
    assert "callbacks would go to port 8000" in out
    assert f"SHOP_PUBLIC_URL=http://127.0.0.1:{port}" in out
    agreeing = _runserver_start_output(tmp_path, f"http://127.0.0.1:{port}", port)
    assert "Quit the server with" in agreeing, agreeing
    assert "SHOP_PUBLIC_URL" not in agreeing


def test_no_warning_when_the_ports_agree() -> None:
    sys.path.insert(0, str(SHOP))
    try:
        from shop.management.commands.runserver import callback_port_warning
    finally:
        sys.path.remove(str(SHOP))
    assert callback_port_warning("http://127.0.0.1:8000", "8000") is None
    assert callback_port_warning("https://shop.example.com", 8000) is None  # a proxy's name
    assert callback_port_warning("http://localhost:8001", 8000) is not None
