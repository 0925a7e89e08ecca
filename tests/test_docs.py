"""The READMEs and docs/ cite only files the repository contains.

A citation is a Markdown link to a local file, a ``*.md`` name anywhere in the text, or a
backticked path with a file extension (``fourws_pay/hookspecs.py``). Each must resolve next
to the citing file or from the repository root (template names: under a ``templates/``
directory). Paths a command *writes* are listed in
``OUTPUTS``: they are not expected to exist in a checkout.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted(
    {
        REPO / "README.md",
        *REPO.glob("plugins/*/README.md"),
        *REPO.glob("examples/**/README.md"),
        *REPO.glob("docs/*.md"),
    }
)
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
MARKDOWN_NAME = re.compile(r"(?<![\w/.$-])(?P<target>[\w.-]+(?:/[\w.-]+)*\.md)\b")
BACKTICKED_PATH = re.compile(
    r"`(?P<target>[\w.-]+(?:/[\w.-]+)+\.(?:py|md|toml|html|json|csv|txt|cfg|ini|yml|yaml))`"
)
OUTPUTS = {"bench/results/latest.md"}  # written by bench/run_all.py


def citations(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    found = {m["target"] for m in MARKDOWN_NAME.finditer(text)}
    found |= {m["target"] for m in BACKTICKED_PATH.finditer(text)}
    for match in LINK.finditer(text):
        target = match["target"].split("#", 1)[0]
        if target and "://" not in target and not target.startswith("mailto:"):
            found.add(target)
    return found - OUTPUTS


def resolves(path: Path, target: str) -> bool:
    """Next to the citing file, from the root, or (a Django template name, possibly
    abbreviated as ``.../name.html``) under some ``templates/`` directory."""
    if (path.parent / target).exists() or (REPO / target).exists():
        return True
    if target.endswith(".html"):
        pattern = f"**/templates/**/{target.removeprefix('.../')}"
        if target.startswith(".../"):
            return any(REPO.glob(pattern))
        return any(REPO.glob(f"**/templates/{target}"))
    return False


def test_there_are_documents_to_check() -> None:
    names = {p.relative_to(REPO).as_posix() for p in DOCUMENTS}
    assert {"README.md", "docs/design.md", "docs/4ws-reference.md", "docs/operations.md"} <= names


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_cited_file_exists(path: Path) -> None:
    missing = sorted(t for t in citations(path) if not resolves(path, t))
    assert not missing, f"{path.relative_to(REPO)} cites files the repository lacks: {missing}"


def test_the_checker_catches_a_missing_file(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text(
        "How money stays safe (DESIGN.md §5); see [the guide](docs/nowhere.md) and "
        "`fourws_pay/no_such_module.py`, but not `fourws_pay/errors.py`.\n",
        encoding="utf-8",
    )
    missing = sorted(t for t in citations(doc) if not resolves(doc, t))
    assert missing == ["DESIGN.md", "docs/nowhere.md", "fourws_pay/no_such_module.py"]


def test_the_license_the_metadata_declares_is_there() -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'license = { text = "MIT" }' in pyproject
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the fourws-pay authors" in text


# Shell commands in the READMEs run without an activated venv


SHELL_FENCE = re.compile(r"^```(?:bash|sh)\s*$")
READMES = [REPO / "README.md", *sorted(REPO.glob("plugins/*/README.md"))]
VENV_PREFIX = re.compile(r"^(?:\.\./)*\.venv/bin/")


def shell_lines(path: Path) -> list[str]:
    """The commands of the ``bash``/``sh`` blocks, comments dropped, ``&&`` split."""
    lines, inside = [], False
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.startswith("```"):
            inside = bool(SHELL_FENCE.match(raw)) and not inside
            continue
        command = re.sub(r"\s#\s.*$", "", raw).strip().rstrip("\\").strip()
        if inside and command and not command.startswith("#"):
            lines += [part.strip() for part in command.split("&&") if part.strip()]
    return lines


def program(command: str) -> str:
    """The program a command runs, after ``VAR=value`` assignments."""
    words = [w for w in command.split() if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)]
    return words[0] if words else ""


@pytest.mark.parametrize("path", READMES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_python_and_pytest_commands_name_the_venv(path: Path) -> None:
    """``pytest ...`` or ``python ...`` would need the venv activated; the READMEs say
    ``.venv/bin/python -m pytest`` (relative to where the reader is) instead."""
    bare = [
        c
        for c in shell_lines(path)
        if re.match(r"^(?:python3?|pytest)$", program(c)) and not c.startswith("python3 -m venv")
    ]
    assert not bare, f"{path.relative_to(REPO)}: commands that need an activated venv: {bare}"
    for command in shell_lines(path):
        if "-m pytest" in command:
            assert VENV_PREFIX.match(program(command)), command


PLUGIN_TEST_COMMANDS = sorted(
    {
        c
        for p in READMES[1:]
        for c in shell_lines(p)
        if program(c) == ".venv/bin/python" and " -m pytest " in c
    }
)


def test_plugin_readmes_have_test_commands() -> None:
    assert any("plugins/oscar/tests" in c for c in PLUGIN_TEST_COMMANDS)
    assert any("plugins/saleor/tests" in c for c in PLUGIN_TEST_COMMANDS)


@pytest.mark.parametrize("command", PLUGIN_TEST_COMMANDS)
def test_plugin_test_commands_collect_from_the_repository_root(command: str) -> None:
    """Each command, run from the root as written (this interpreter for the venv's), finds
    its tests: the paths and marker expressions are right."""
    import shlex
    import subprocess
    import sys

    words = [w for w in shlex.split(command) if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)]
    assert words[:3] == [".venv/bin/python", "-m", "pytest"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *words[3:], "--collect-only", "-q", "-p", "no:randomly"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # "N tests collected", or per-file counts when the command's own -q makes it -qq
    counts = re.findall(
        r"(?:^|\s)([1-9]\d*)(?:/\d+)? tests? collected\b|\.py: ([1-9]\d*)$", done.stdout, re.M
    )
    assert counts, done.stdout[-1000:]
