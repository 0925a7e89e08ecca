"""Without its extra, the command and the ledger stores say which extra to install.

Each test runs a fresh interpreter in which the extra's modules cannot be imported (a
meta-path finder refuses them, as if they had never been installed) and calls the real
``fourws-pay`` console-script entry point as installed (``importlib.metadata``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCKER = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    BLOCKED = set(sys.argv[1].split(","))

    class NotInstalled(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    for name in list(sys.modules):
        if name.partition(".")[0] in BLOCKED:
            del sys.modules[name]
    sys.meta_path.insert(0, NotInstalled())
    """
)

RUN_ENTRY_POINT = BLOCKER + textwrap.dedent(
    """
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="fourws-pay")
    sys.argv = ["fourws-pay", *sys.argv[2:]]
    script.load()()
    """
)


def run(code: str, blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, blocked, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("blocked", ["typer", "rich", "dotenv", "uvicorn"])
def test_the_command_without_the_cli_extra_says_what_to_install(blocked: str) -> None:
    done = run(RUN_ENTRY_POINT, blocked, "--help")
    assert done.returncode == 3, done.stderr
    assert 'pip install "fourws-pay[cli]"' in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_the_blocker_blocks_and_the_entry_point_runs_with_the_extra() -> None:
    """The harness itself: with nothing blocked the same entry point prints its help."""
    done = run(RUN_ENTRY_POINT, "no_such_module_here", "--help")
    assert done.returncode == 0, done.stderr
    assert "Exit codes:" in done.stdout
    blocked = run(BLOCKER + "import typer\n", "typer")
    assert "ModuleNotFoundError" in blocked.stderr


def test_a_missing_module_the_extra_does_not_provide_keeps_its_traceback() -> None:
    """Only the extra's own modules are "install the extra"; anything else is a bug."""
    done = run(RUN_ENTRY_POINT, "pydantic", "--help")
    assert done.returncode == 1
    assert "ModuleNotFoundError" in done.stderr
    assert "fourws-pay[cli]" not in done.stderr


@pytest.mark.parametrize(
    ("url", "blocked", "extra"),
    [
        ("postgresql://u:p@127.0.0.1/db", "psycopg", "postgres"),
        ("mysql://u:p@127.0.0.1/db", "pymysql", "mysql"),
        ("redis://127.0.0.1:6379/0", "redis", "redis"),
    ],
)
def test_a_ledger_without_its_driver_names_the_extra(url: str, blocked: str, extra: str) -> None:
    code = BLOCKER + textwrap.dedent(
        f"""
        from fourws_pay.errors import ConfigurationError
        from fourws_pay.ledger import open_store

        try:
            open_store({url!r})
        except ConfigurationError as exc:
            print(exc)
        """
    )
    done = run(code, blocked)
    assert done.returncode == 0, done.stderr
    assert f'pip install "fourws-pay[{extra}]"' in done.stdout
    assert blocked in done.stdout
