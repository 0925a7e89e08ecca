"""Every Python block of README.md and plugins/*/README.md runs as written.

Blocks are fenced with an info string: ``python`` blocks run; ``python pytest`` blocks are
test modules, run by pytest in a subprocess (with the installed fixtures); ``python
no-run`` blocks (very few; the block's first line says why) are only compiled. The blocks of
one file run in order in one namespace, as doctest runs the examples of a docstring.

The world they run in is a new user's who followed *Try it*: a sandbox served on loopback
(demo seed) that works through its queue on its own and POSTs 4WS's callbacks over HTTP,
``FOURWS_*`` pointing ``Settings.from_env()`` at it (the line *Try it* exports), the ledger a
file in a temporary working directory. The one difference: ``FOURWS_CALLBACK_BASE_URL``
names a free port on 127.0.0.1 instead of the default 8000 (the snippet serves
``payments.callback_app()`` wherever that URL points), so that parallel runs never share a
port. Nothing hands callbacks over in-process and nothing works the queue between blocks:
the payment blocks reach their settlements by waiting as they are written. Only the sold
cards' steps, which the README leaves to 4WS's callbacks, are waited for before the next
block, as a reader reading on would.

The README's "Try it" section is checked against the sandbox too: the exported settings
and the table of demo cards are what ``fourws-pay sandbox serve`` prints.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` (the sandbox and the receiver work on their own threads) until it
    holds; fail naming ``what`` after ``timeout``. Nothing depends on the pause's length."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.02)


UNFINISHED_SALE = frozenset(
    {"requested", "generating", "generated", "activating", "active", "delivering", "cancelling"}
)


@pytest.fixture
def new_user_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A served demo sandbox posting callbacks over HTTP, FOURWS_* pointing at it (the
    README's "Try it" export line), a fresh working directory."""
    from fourws_pay.sandbox import Sandbox
    from fourws_pay.sandbox.server import start_in_thread

    for name in list(os.environ):
        if name.startswith("FOURWS_"):
            monkeypatch.delenv(name)
    with start_in_thread(seed="demo") as served:  # its worker applies updates, calls back
        (export,) = [line for line in try_it_section().splitlines() if line.startswith("export ")]
        exported = dict(pair.split("=", 1) for pair in export.split()[1:])
        assert exported == Sandbox().settings_env("http://127.0.0.1:8765")
        env = {
            **exported,
            "FOURWS_DOCUMENTS_BASE_URL": served.url,  # 8765 where a reader serves it
            "FOURWS_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "FOURWS_CALLBACK_BASE_URL": f"http://127.0.0.1:{free_port()}/fourws/callback",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        yield served


def sales_finished(namespace: dict[str, Any]) -> bool:
    """Every card the blocks sold so far is delivered, cancelled or failed."""
    payments = namespace.get("payments")
    if payments is None:
        return True
    cards = payments.store.list_issued_cards(states=None)
    return all(c.state.value not in UNFINISHED_SALE for c in cards)


def test_readme_python_blocks_run_as_written(new_user_world: Any, tmp_path: Path) -> None:
    sandbox = new_user_world.sandbox
    assert sandbox.callback_sender.handler is None  # callbacks go over HTTP, nothing else
    namespace: dict[str, Any] = {"__name__": "readme"}
    ran = 0
    try:
        for block in python_blocks(REPO / "README.md"):
            if "no-run" in block.flags:
                continue
            if "pytest" in block.flags:
                run_as_pytest_module(block, tmp_path)
            else:
                exec(compile(block.code, block.where, "exec"), namespace)
            ran += 1
            wait_until(lambda: sales_finished(namespace), f"the cards sold by {block.where}")
        assert ran >= 5

        # the payment blocks waited for their settlements themselves: what they hold is
        # the settled operation the receiver they served was called back with
        payments = namespace["payments"]
        op, refund = namespace["op"], namespace["refund"]
        assert op.state.value == "succeeded"
        assert refund.state.value == "succeeded"
        assert (op.amount, refund.amount) == (Decimal("120.00"), Decimal("20.00"))
        receiver = namespace["receiver"]
        assert os.environ["FOURWS_CALLBACK_BASE_URL"].startswith(receiver.url + "/")
        for settled in (op, refund):
            answered = [
                d.status
                for d in sandbox.callbacks
                if d.url.startswith(os.environ["FOURWS_CALLBACK_BASE_URL"] + f"/{settled.id}/")
            ]
            assert answered == [200], (settled.kind, answered)  # one HTTP callback, accepted
        assert payments.get_reservation(op.reservation_id).state.value == "captured"

        # what the payment blocks did really happened on 4WS's books: 390 - 120 captured
        # + 20 refunded, and 50 consumed by the raw client block (applied by 4WS's worker);
        # the order on two cards took 30 of it and gave the 30 back (newest capture first)
        wait_until(lambda: not sandbox.pending(), "4WS's queue")
        assert sandbox.balance("2000000001814") == Decimal("240.00")
        # "Several cards on one order": 100 of 100 taken, 10 of the 40 refunded given back
        assert sandbox.balance("0098260111383") == Decimal("10.00")
        order_refund = namespace["back"].refund
        assert payments.order_refunds("ORD-1002")[0].settled == order_refund.amount

        # "Back office for staff": the console answers staff only, and shows the queue
        from starlette.testclient import TestClient

        with TestClient(namespace["console"]) as staff:
            assert staff.get("/").status_code == 401
            queue = staff.get("/", auth=("alice", "change-me"))
            assert queue.status_code == 200
            assert "Review queue" in queue.text
            report = staff.get("/report.csv", auth=("alice", "change-me"))
            assert report.text.startswith("day,currency,captured,refunded,net")

        # "Selling cards": two cards sold and loaded once; the first cancelled, all of it back
        kept, cancelled = namespace["sold"][1], namespace["cancelled"]
        cards = {c.id: c for c in payments.issued_cards("ORD-2001")}
        assert cards[cancelled.id].state.value == "cancelled"
        assert payments.reclaimed_amount(cancelled.id) == Decimal("50.00")
        assert sandbox.balance(cards[cancelled.id].barcode) == Decimal("0.00")
        assert cards[kept.id].state.value == "delivered"
        assert sandbox.balance(cards[kept.id].barcode) == Decimal("50.00")
        loads = [r for r in sandbox.applied_operations() if r.kind == "activation"]
        assert sorted(r.barcode for r in loads) == sorted(c.barcode for c in cards.values())
    finally:
        if "receiver" in namespace:
            namespace["receiver"].stop()
        if "payments" in namespace:
            namespace["payments"].close()


def section(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    return text[start : text.index("\n## ", start + 1)]


def test_a_new_user_following_the_readme_settles_a_capture_and_a_refund(tmp_path: Path) -> None:
    """Literally: ``fourws-pay sandbox serve`` in its own process, the ``export`` line it
    prints, then the blocks of "Taking a gift-card payment" as one script in another process
    (a fresh working directory, the default SQLite ledger). Only the callback port differs
    from the default 8000, so that parallel runs never share it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FOURWS_", "PYTEST_"))}
    sandbox_port = free_port()
    port = str(sandbox_port)
    serve = subprocess.Popen(
        [str(Path(sys.executable).with_name("fourws-pay")), "sandbox", "serve", "--port", port],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    killer = threading.Timer(120, serve.kill)  # a hung server must not hang the suite
    killer.start()
    try:
        assert serve.stdout is not None
        exported: dict[str, str] = {}
        for line in serve.stdout:  # the banner: where it listens, what to export, cards
            if line.strip().startswith("export "):
                name, value = line.split(None, 1)[1].strip().split("=", 1)
                exported[name] = value
            elif exported:
                break
        (try_it,) = [line for line in try_it_section().splitlines() if line.startswith("export ")]
        printed_line = "export " + " ".join(f"{k}={v}" for k, v in exported.items())
        assert printed_line == try_it.replace(":8765", f":{sandbox_port}")

        payment = section("Taking a gift-card payment")
        shop = [b.code for b in python_blocks(REPO / "README.md") if b.code in payment]
        assert len(shop) == 2  # the payment, then the refund
        script = tmp_path / "shop.py"
        script.write_text("\n".join(shop), encoding="utf-8")
        callback_base = f"http://127.0.0.1:{free_port()}/fourws/callback"
        done = subprocess.run(
            [sys.executable, str(script)],
            env={**env, **exported, "FOURWS_CALLBACK_BASE_URL": callback_base},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.split() == ["succeeded", "succeeded"]  # capture, then refund
        assert (tmp_path / "fourws-pay-ledger.db").is_file()  # the default ledger

        with httpx.Client(base_url=f"http://127.0.0.1:{sandbox_port}", timeout=10) as http:
            card = http.get("/_sandbox/cards/2000000001814").json()["giftcard"]
        assert Decimal(str(card["amount"])) == Decimal("290.00")  # 390 - 120 + 20
    finally:
        killer.cancel()
        serve.terminate()
        serve.wait(timeout=20)


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


def test_try_it_sandbox_mode_alone_gives_the_exported_settings() -> None:
    """*Try it* says ``export FOURWS_SANDBOX=1`` alone does what its export line does for a
    sandbox on the default port: the sandbox defaults are those settings."""
    from fourws_pay import Settings

    section = try_it_section()
    assert "`export FOURWS_SANDBOX=1` alone" in section
    (export,) = [line for line in section.splitlines() if line.startswith("export ")]
    exported = dict(pair.split("=", 1) for pair in export.split()[1:])
    by_line, by_flag = Settings.from_env(exported), Settings.from_env({"FOURWS_SANDBOX": "1"})
    for name in exported:
        field = name.removeprefix("FOURWS_").lower()
        assert getattr(by_flag, field) == getattr(by_line, field), name


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
