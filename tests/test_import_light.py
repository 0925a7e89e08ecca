"""``import fourws_pay`` stays light: no web framework, database driver, CLI library or
sandbox is imported with it (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = [
    "starlette",
    "uvicorn",
    "typer",
    "rich",
    "django",
    "psycopg",
    "pymysql",
    "redis",
    "fourws_pay.sandbox",
    "fourws_pay.cli",
    "fourws_pay.serving",
]


def modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def loaded() -> set[str]:
    return modules_after("import fourws_pay")


@pytest.fixture(scope="module")
def unavoidable() -> set[str]:
    """What our two import-time dependencies load by themselves.

    ``import httpx`` imports its command-line entry point, and with it ``rich`` (and
    ``click``, ``pygments``), whenever those happen to be installed; that is httpx's doing
    and the same for any httpx user, so it is not counted against us.
    """
    return modules_after("import httpx, pydantic")


def matching(modules: set[str], name: str) -> set[str]:
    return {m for m in modules if m == name or m.startswith(name + ".")}


@pytest.mark.parametrize("module", HEAVY)
def test_import_does_not_load(loaded: set[str], unavoidable: set[str], module: str) -> None:
    assert matching(loaded, module) - unavoidable == set()


@pytest.mark.parametrize("module", [m for m in HEAVY if m != "rich"])
def test_import_does_not_load_even_through_dependencies(loaded: set[str], module: str) -> None:
    assert matching(loaded, module) == set()


def test_the_check_can_see_a_heavy_import() -> None:
    """Self-check: the subprocess does report a module the statement imports."""
    assert "fourws_pay.cli" in modules_after("import fourws_pay, fourws_pay.cli")
