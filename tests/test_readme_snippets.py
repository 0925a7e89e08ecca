"""Every Python block of README.md and plugins/*/README.md runs as written.

Blocks are fenced with an info string: ``python`` blocks run; ``python pytest`` blocks are
test modules, run by pytest in a subprocess (with the installed fixtures); ``python
no-run`` blocks (very few; the block's first line says why) are only compiled. The blocks of
one file run in order in one namespace, as doctest runs the examples of a docstring.

The world they run in is a new user's: ``FOURWS_*`` variables point ``Settings.from_env()``
at a sandbox served on loopback (demo seed), the ledger is a file in a temporary working
directory, and the shop's callback endpoint is the 4WS sandbox's callback handler, which
hands callbacks to a second ``GiftCardPayments`` on the same ledger (the shop's web process).
Between two blocks 4WS works through its queue (``process_queue``): whatever a block
captured or refunded has been applied and called back before the next block runs.

The README's "Try it" section is checked against the sandbox too: the exported settings
and the table of demo cards are what ``fourws-pay sandbox serve`` prints.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNABLE_READMES = [REPO / "README.md", *sorted(REPO.glob("plugins/*/README.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^`]*)$")
FLAGS = frozenset({"pytest", "no-run"})


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    flags: frozenset[str]
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file (indented fences included, dedented)."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        words = opening["info"].split()
        start, body = i, []
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        found.append(
            Block(
                path,
                start + 1,
                words[0] if words else "",
                frozenset(words[1:]),
                textwrap.dedent("\n".join(body)) + "\n",
            )
        )
    return found


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.language == "python"]


def test_the_extractor_finds_every_kind_of_block() -> None:
    readme = python_blocks(REPO / "README.md")
    assert len(readme) >= 5
    assert any("pytest" in b.flags for b in readme)
    oscar = python_blocks(REPO / "plugins" / "oscar" / "README.md")
    assert any(b.code.startswith("from fourws_pay_oscar.mixins") for b in oscar)  # indented
    for path in RUNNABLE_READMES:
        for block in blocks(path):
            unknown = block.flags - FLAGS
            assert not unknown, f"{block.where}: unknown info string flags {sorted(unknown)}"


def test_no_run_blocks_are_few_and_say_why() -> None:
    skipped = [b for p in RUNNABLE_READMES for b in python_blocks(p) if "no-run" in b.flags]
    assert len(skipped) <= 2, [b.where for b in skipped]
    for block in skipped:
        assert block.code.startswith("# no-run: "), f"{block.where} must say why it cannot run"
        compile(block.code, block.where, "exec")


@pytest.fixture
def new_user_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A served demo sandbox, FOURWS_* pointing at it, a fresh working directory."""
    from fourws_pay import GiftCardPayments, Settings
    from fourws_pay.errors import CallbackRejected
    from fourws_pay.sandbox.server import start_in_thread

    for name in list(os.environ):
        if name.startswith("FOURWS_"):
            monkeypatch.delenv(name)
    # the queue runs only when the test says so (between blocks), never on a timer
    with start_in_thread(seed="demo", worker_interval=3600) as served:
        env = {**served.env(), "FOURWS_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        shop_web = GiftCardPayments(settings=Settings.from_env())

        def callback_view(url: str, body: bytes) -> int:
            try:
                return shop_web.handle_callback(urlsplit(url).path, body).status_code
            except CallbackRejected as exc:
                return exc.status_code

        served.sandbox.set_callback_handler(callback_view)
        try:
            yield served
        finally:
            served.sandbox.set_callback_handler(None)
            shop_web.close()


def test_readme_python_blocks_run_as_written(new_user_world: Any, tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "readme"}
    ran = 0
    for block in python_blocks(REPO / "README.md"):
        if "no-run" in block.flags:
            continue
        if "pytest" in block.flags:
            run_as_pytest_module(block, tmp_path)
        else:
            exec(compile(block.code, block.where, "exec"), namespace)
        ran += 1
        new_user_world.sandbox.process_queue()  # 4WS works; callbacks reach the shop
    assert ran >= 5

    # what the payment blocks did really happened on 4WS's books
    sandbox = new_user_world.sandbox
    payments = namespace["payments"]
    op, refund = namespace["op"], namespace["refund"]
    assert payments.get_operation(op.id).state.value == "succeeded"
    assert payments.get_operation(refund.id).state.value == "succeeded"
    # 390 - 120 captured + 20 refunded, and 50 consumed by the raw client block
    assert sandbox.balance("2000000001814") == Decimal("240.00")

    # "Selling cards": two cards sold and loaded once; the first cancelled, all of it back
    for _ in range(3):  # 4WS finishes what the last blocks started
        sandbox.process_queue()
    payments.reconcile()
    kept, cancelled = namespace["sold"][1], namespace["cancelled"]
    cards = {c.id: c for c in payments.issued_cards("ORD-2001")}
    assert cards[cancelled.id].state.value == "cancelled"
    assert payments.reclaimed_amount(cancelled.id) == Decimal("50.00")
    assert sandbox.balance(cards[cancelled.id].barcode) == Decimal("0.00")
    assert cards[kept.id].state.value == "delivered"
    assert sandbox.balance(cards[kept.id].barcode) == Decimal("50.00")
    loads = [r for r in sandbox.applied_operations() if r.kind == "activation"]
    assert sorted(r.barcode for r in loads) == sorted(c.barcode for c in cards.values())


def run_as_pytest_module(block: Block, tmp_path: Path) -> None:
    folder = tmp_path / f"block_{block.line}"
    folder.mkdir()
    (folder / "test_readme_block.py").write_text(block.code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_readme_block.py"],
        cwd=folder,
        env={k: v for k, v in os.environ.items() if not k.startswith(("FOURWS_", "PYTEST_"))},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{block.where}:\n{done.stdout[-3000:]}"
    assert re.search(r"\b[1-9]\d* passed\b", done.stdout), done.stdout[-2000:]


def test_oscar_readme_python_blocks_run_in_a_django_project(tmp_path: Path) -> None:
    """The Oscar plugin's blocks run inside a configured Oscar project (the plugin's test
    shop settings), in one process, in order."""
    runnable = [
        b
        for b in python_blocks(REPO / "plugins" / "oscar" / "README.md")
        if "no-run" not in b.flags
    ]
    assert len(runnable) >= 2
    script = tmp_path / "run_blocks.py"
    script.write_text(
        "import django, sys\n"
        "django.setup()\n"
        "namespace = {'__name__': 'readme'}\n"
        "for where, code in BLOCKS:\n"
        "    exec(compile(code, where, 'exec'), namespace)\n"
        "    print('ran', where)\n",
        encoding="utf-8",
    )
    prelude = f"BLOCKS = {[(b.where, b.code) for b in runnable]!r}\n"
    script.write_text(prelude + script.read_text(encoding="utf-8"), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOURWS_")}
    env.update(
        DJANGO_SETTINGS_MODULE="oscar_testshop.settings",
        PYTHONPATH=os.pathsep.join([str(REPO / "plugins" / "oscar" / "tests")]),
        FOURWS_PAY_OSCAR_TEST_DB=str(tmp_path / "unused.sqlite3"),
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("ran ") == len(runnable)


# "Try it": what the README tells a new user to type and expect


def try_it_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Try it")
    return text[start : text.index("\n## ", start + 1)]


def test_try_it_exports_the_settings_the_sandbox_prints() -> None:
    from fourws_pay.sandbox import Sandbox

    section = try_it_section()
    (export,) = [line for line in section.splitlines() if line.startswith("export ")]
    exported = dict(pair.split("=", 1) for pair in export.split()[1:])
    assert exported == Sandbox().settings_env("http://127.0.0.1:8765")
    assert "--port 8765" in section


def test_try_it_export_line_is_what_sandbox_serve_prints(tmp_path: Path) -> None:
    """The real command, served on a free port: its printed export lines, port aside, are
    the README's (the Data management URL included)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serving = subprocess.Popen(
        [sys.executable, "-m", "fourws_pay.cli", "sandbox", "serve", "--port", str(port)],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("FOURWS_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    printed: list[str] = []
    try:
        assert serving.stdout is not None
        for line in serving.stdout:
            printed.append(line.strip())
            if line.startswith("Demo gift cards:"):
                break
    finally:
        serving.terminate()
        serving.wait(timeout=30)
    exports = [line.removeprefix("export ") for line in printed if line.startswith("export ")]
    shown = dict(pair.split("=", 1) for pair in exports)
    assert shown["FOURWS_DATA_BASE_URL"] == f"http://127.0.0.1:{port}"
    (export,) = [line for line in try_it_section().splitlines() if line.startswith("export ")]
    readme = dict(pair.split("=", 1) for pair in export.split()[1:])
    assert list(readme) == list(shown)
    assert {k: v.replace(f":{port}", ":8765") for k, v in shown.items()} == readme


def test_try_it_lists_the_demo_cards_the_sandbox_prints() -> None:
    from fourws_pay.cli.sandbox_cmd import demo_card_lines
    from fourws_pay.sandbox import Sandbox

    rows = re.findall(r"^\| (\d{13}) \| (\S+) (\w{3}) \| (.+?) \|$", try_it_section(), re.M)

    class Served:  # what demo_card_lines reads from a ServedSandbox
        sandbox = Sandbox(seed="demo")

    printed = [line.split(None, 3) for line in demo_card_lines(Served())]  # type: ignore[arg-type]
    assert [(b, a, c, note) for b, a, c, note in rows] == [tuple(p) for p in printed]


# "Production": the cron lines run as written (binary and env file swapped for this machine)


def test_production_cron_lines_run_as_written(tmp_path: Path) -> None:
    from fourws_pay.ledger import SQLiteStore
    from fourws_pay.sandbox.server import start_in_thread

    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Production")
    section = text[start : text.index("\n## ", start + 1)]
    (cron,) = [b for b in blocks(REPO / "README.md") if b.language == "sh" and b.code in section]
    lines = cron.code.splitlines()
    assert len(lines) == 2
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert all(line in operations for line in lines)  # the guide shows the same jobs
    ledger = tmp_path / "ledger.db"
    SQLiteStore(ledger).close()  # the shop's ledger exists (the jobs refuse a missing one)
    outputs = []
    with start_in_thread(seed="demo") as served:
        env_file = tmp_path / "fourws-pay.env"
        settings = {**served.env(), "FOURWS_LEDGER_URL": f"sqlite:///{ledger}"}
        env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()), encoding="utf-8")
        for line in lines:
            schedule, command = line.split()[:5], line.split()[5:]
            assert schedule == ["*/5", "*", "*", "*", "*"]
            assert command[0] == "/srv/shop/.venv/bin/fourws-pay"
            args = [str(env_file) if a == "/etc/fourws-pay.env" else a for a in command[1:]]
            done = subprocess.run(
                [sys.executable, "-m", "fourws_pay.cli", *args],
                cwd=tmp_path,
                env={k: v for k, v in os.environ.items() if not k.startswith("FOURWS_")},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout)
    assert "nothing needs manual review" in outputs[0]
    assert "0 reservation(s) expired" in outputs[1]
