"""What a new user hits first (issue 11), through the real ``fourws-pay`` command.

Every test runs ``python -m fourws_pay.cli`` in a subprocess, as a person would type it,
against a sandbox served on loopback in this process (the ``served`` fixture), with an
environment that holds no ``FOURWS_*`` variable but the ones the test sets, in a fresh
working directory (no stray ``.env``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fourws_pay.sandbox import Sandbox
from fourws_pay.sandbox.ean import make_ean13
from fourws_pay.sandbox.seed import EXAMPLE_CARD, NEVER_ACTIVATED_CARD, PRODUCT
from fourws_pay.sandbox.server import ServedSandbox

pytestmark = pytest.mark.slow

TAKEN_BARCODE = "3314254119515"  # the demo seed has it on MAGLIA123, size 2 / Y4


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


Cli = Callable[..., Done]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOURWS_")}
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> Done:
    done = subprocess.run(
        [sys.executable, "-m", "fourws_pay.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return Done(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(served: ServedSandbox, tmp_path: Path) -> Cli:
    """``fourws-pay`` configured for the served sandbox and a ledger in ``tmp_path``."""
    env = clean_env(**served.env(), FOURWS_LEDGER_URL=f"sqlite:///{tmp_path / 'ledger.db'}")

    def run(*args: str) -> Done:
        return run_cli(*args, env=env, cwd=tmp_path)

    return run


@pytest.fixture
def bare(tmp_path: Path) -> Cli:
    """``fourws-pay`` with no configuration at all."""

    def run(*args: str, **env: str) -> Done:
        return run_cli(*args, env=clean_env(**env), cwd=tmp_path)

    return run


# 1. barcodes import: a rejection stays a rejection on re-run


def test_barcode_rejected_on_run_1_is_still_rejected_on_run_2(
    cli: Cli, served: ServedSandbox, tmp_path: Path
) -> None:
    ok_code = make_ean13("806", 1)
    csv_file = tmp_path / "barcodes.csv"
    csv_file.write_text(
        "item_code,barcode,barcode_type,dimension_level1,dimension_level2\n"
        f"{PRODUCT},{TAKEN_BARCODE},EAN13,1,Y4\n"  # 4WS has it on size 2
        f"{PRODUCT},{ok_code},EAN13,1,Y4\n",
        encoding="utf-8",
    )
    first = cli("barcodes", "import", str(csv_file), "--rate", "0", "--json")
    assert first.code == 1, first.stderr
    assert first.json()["rejected_by_4ws"] == 1
    assert first.json()["inserted"] == 1

    second = cli("barcodes", "import", str(csv_file), "--rate", "0", "--json")
    assert second.code == 1, second.stdout
    summary = second.json()
    assert summary["already_present"] == 0
    assert summary["rejected_by_4ws"] == 1
    assert summary["skipped_already_inserted"] == 1
    rejections = (tmp_path / "barcodes.csv.rejected.csv").read_text(encoding="utf-8")
    assert TAKEN_BARCODE in rejections
    assert "already used by item" in rejections

    state = [
        json.loads(line)
        for line in (tmp_path / "barcodes.csv.state.jsonl").read_text().splitlines()
    ]
    taken = [e for e in state if e["barcode"] == TAKEN_BARCODE]
    assert {e["status"] for e in taken} == {"sending", "rejected"}
    assert all("already used" in e["reason"] for e in taken if e["status"] == "rejected")
    # 4WS still has it where it was
    assert served.sandbox.barcode_record(TAKEN_BARCODE)["dimension_level1"] == "2"


def test_barcode_resumed_after_a_lost_answer_counts_only_when_on_the_requested_sku(
    cli: Cli, tmp_path: Path
) -> None:
    """A state file saying "sending" (a crash after the POST) is resumed by looking the
    barcode up: on the requested SKU it is present, on another it is a rejection."""
    mine = make_ean13("806", 2)
    csv_file = tmp_path / "resume.csv"
    csv_file.write_text(
        "item_code,barcode,dimension_level1,dimension_level2\n"
        f"{PRODUCT},{TAKEN_BARCODE},1,Y4\n"
        f"{PRODUCT},{mine},XL,RED\n",
        encoding="utf-8",
    )
    first = cli("barcodes", "import", str(csv_file), "--rate", "0", "--json")
    assert first.code == 1
    state_file = tmp_path / "resume.csv.state.jsonl"
    # forget the outcomes, as if the run had crashed after sending both
    state_file.write_text(
        "".join(
            json.dumps({"barcode": b, "item_code": PRODUCT, "status": "sending"}) + "\n"
            for b in (TAKEN_BARCODE, mine)
        )
    )
    again = cli("barcodes", "import", str(csv_file), "--rate", "0", "--json")
    assert again.code == 1
    assert again.json()["already_present"] == 1  # ours, really on XL/RED
    assert again.json()["rejected_by_4ws"] == 1  # not ours


# 2. giftcard activate is safe to re-run


def test_activate_twice_loads_the_card_once(cli: Cli, served: ServedSandbox) -> None:
    first = cli("giftcard", "activate", NEVER_ACTIVATED_CARD, "--amount", "50", "--json")
    assert first.code == 0, first.stderr
    assert first.json()["state"] == "activated"
    assert served.sandbox.balance(NEVER_ACTIVATED_CARD) == Decimal("50")

    again = cli("giftcard", "activate", NEVER_ACTIVATED_CARD, "--amount", "50")
    assert again.code == 6, again.stderr
    assert "already active" in again.stderr
    assert "--top-up" in again.stderr
    assert NEVER_ACTIVATED_CARD not in again.stderr  # masked
    assert served.sandbox.balance(NEVER_ACTIVATED_CARD) == Decimal("50")

    top_up = cli(
        "giftcard", "activate", NEVER_ACTIVATED_CARD, "--amount", "5", "--top-up", "--json"
    )
    assert top_up.code == 0, top_up.stderr
    assert top_up.json()["state"] == "topped_up"
    assert served.sandbox.balance(NEVER_ACTIVATED_CARD) == Decimal("55")


def test_a_card_4ws_does_not_know_yet_can_be_activated_once(
    cli: Cli, served: ServedSandbox
) -> None:
    """Whether Get Giftcard finds a generated card before activation is undocumented:
    "not found" must not block the activation, and the re-run is still refused."""
    fresh = make_ean13("444", 4242)
    assert served.sandbox.card_wire(fresh) is None
    first = cli("giftcard", "activate", fresh, "--amount", "20", "--json")
    assert first.code == 0, first.stdout + first.stderr
    again = cli("giftcard", "activate", fresh, "--amount", "20")
    assert again.code == 6
    assert served.sandbox.balance(fresh) == Decimal("20")


def test_top_up_refuses_a_card_that_is_not_active(cli: Cli, served: ServedSandbox) -> None:
    result = cli("giftcard", "activate", NEVER_ACTIVATED_CARD, "--amount", "5", "--top-up")
    assert result.code == 6
    assert "not active" in result.stderr
    assert served.sandbox.balance(NEVER_ACTIVATED_CARD) == 0


# 4. sandbox fault add


def test_fault_add_with_seconds(cli: Cli, served: ServedSandbox) -> None:
    result = cli(
        "sandbox", "fault", "add", "hang", "--endpoint", "update_giftcard", "--seconds", "2.5"
    )
    assert result.code == 0, result.stderr
    (pending,) = served.sandbox.faults.pending()
    assert pending["kind"] == "hang"
    assert pending["seconds"] == 2.5
    assert pending["after_enqueue"] is True  # as Fault.hang() defaults


def test_fault_add_accepts_the_spec_form_of_the_readme(cli: Cli, served: ServedSandbox) -> None:
    result = cli("sandbox", "fault", "add", "update_giftcard:hang:seconds=20", "--json")
    assert result.code == 0, result.stderr
    (listed,) = result.json()
    assert (listed["endpoint"], listed["kind"]) == ("update_giftcard", "hang")
    assert Decimal(str(listed["seconds"])) == 20
    assert listed["after_enqueue"] is True


@pytest.mark.parametrize(
    "args",
    [
        ["meteor"],
        ["update_giftcard:meteor"],
        ["nowhere:hang"],
        ["hang", "--endpoint", "nowhere"],
        ["invalid_json", "--before-enqueue"],
    ],
)
def test_bad_faults_are_usage_errors(cli: Cli, served: ServedSandbox, args: list[str]) -> None:
    result = cli("sandbox", "fault", "add", *args)
    assert result.code == 2, (result.code, result.stderr)
    assert served.sandbox.faults.pending() == []


@pytest.mark.parametrize("kind", ["invalid_json", "truncated_body"])
def test_answer_faults_apply_without_after_enqueue(
    cli: Cli, served: ServedSandbox, kind: str
) -> None:
    # every call, or the client's retry of an unreadable read would get a clean answer
    added = cli("sandbox", "fault", "add", kind, "--endpoint", "get_giftcard", "--times", "0")
    assert added.code == 0, added.stderr
    shown = cli("giftcard", "show", EXAMPLE_CARD)
    assert shown.code == 10, (shown.code, shown.stdout, shown.stderr)  # unreadable answer


# 5. configuration


def test_missing_configuration_exits_3_naming_the_settings(bare: Cli, tmp_path: Path) -> None:
    result = bare("giftcard", "show", EXAMPLE_CARD)
    assert result.code == 3, (result.code, result.stderr)
    for name in ("FOURWS_DOCUMENTS_BASE_URL", "FOURWS_USERNAME", "FOURWS_PASSWORD"):
        assert name in result.stderr
    partial = bare("giftcard", "show", EXAMPLE_CARD, FOURWS_DOCUMENTS_BASE_URL="http://127.0.0.1:9")
    assert partial.code == 3
    assert "FOURWS_DOCUMENTS_BASE_URL" not in partial.stderr
    assert "FOURWS_USERNAME" in partial.stderr


def test_sandbox_mode_fills_the_sandbox_credentials(bare: Cli, served: ServedSandbox) -> None:
    """FOURWS_SANDBOX=1 is the explicit way to go without the tenant's variables: the
    sandbox's own credentials fill them (here only the served sandbox's port is given)."""
    shown = bare(
        "giftcard", "show", EXAMPLE_CARD, FOURWS_SANDBOX="1", FOURWS_DOCUMENTS_BASE_URL=served.url
    )
    assert shown.code == 0, (shown.code, shown.stderr)
    assert "1814" in shown.stdout
    assert bare("giftcard", "show", EXAMPLE_CARD, FOURWS_SANDBOX="0").code == 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_errors_name_the_url(bare: Cli, served: ServedSandbox) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {**served.env(), "FOURWS_DOCUMENTS_BASE_URL": url}
    result = bare("giftcard", "show", EXAMPLE_CARD, **env)
    assert result.code == 8
    assert url in result.stderr
    data = bare("giftcard", "show", EXAMPLE_CARD, "--json", **env).json()
    assert data["error"]["url"] == url


# 8. --json errors, options after the subcommand, ledger commands


def test_json_errors_are_json_on_stdout(bare: Cli, served: ServedSandbox) -> None:
    missing = bare("giftcard", "show", EXAMPLE_CARD, "--json")
    assert missing.code == 3
    error = missing.json()["error"]
    assert error["type"] == "MissingConfigurationError"
    assert error["exit_code"] == 3
    assert "FOURWS_USERNAME" in error["missing"]

    not_found = bare("giftcard", "show", "2000000000000", "--json", **served.env())
    assert not_found.code == 5
    assert not_found.json()["error"]["exit_code"] == 5

    usage = bare("--json", "giftcard", "show", "--no-such-option")
    assert usage.code == 2
    assert usage.json()["error"]["type"] == "UsageError"


def test_global_options_after_the_subcommand(bare: Cli, served: ServedSandbox) -> None:
    env = {k: v for k, v in served.env().items() if k != "FOURWS_DOCUMENTS_BASE_URL"}
    result = bare("giftcard", "show", EXAMPLE_CARD, "--base-url", served.url, "--json", **env)
    assert result.code == 0, result.stdout + result.stderr
    assert result.json()["amount"] == "390.00"
    equals = bare("giftcard", "show", f"--base-url={served.url}", EXAMPLE_CARD, **env)
    assert equals.code == 0, equals.stderr


def test_reservations_list_never_creates_a_ledger(bare: Cli, tmp_path: Path) -> None:
    result = bare("reservations", "list")
    assert result.code == 3, result.stderr
    assert "no ledger at" in result.stderr
    assert list(tmp_path.iterdir()) == []
    elsewhere = tmp_path / "nope" / "ledger.db"
    other = bare("reservations", "list", "--ledger", f"sqlite:///{elsewhere}", "--json")
    assert other.code == 3
    assert str(elsewhere) in other.json()["error"]["message"]
    assert not elsewhere.exists()


def test_a_hold_being_captured_is_not_shown_as_active(bare: Cli, tmp_path: Path) -> None:
    from fourws_pay.ledger import SQLiteStore
    from fourws_pay.payments import GiftCardPayments

    sandbox = Sandbox(seed="demo")
    ledger = tmp_path / "shop-ledger.db"
    payments = GiftCardPayments(client=sandbox.client(), store=SQLiteStore(ledger))
    held = payments.reserve(EXAMPLE_CARD, amount="10.00", currency="EUR", order_ref="A")
    capturing = payments.reserve(EXAMPLE_CARD, amount="20.00", currency="EUR", order_ref="B")
    payments.capture(capturing.id)  # enqueued: 4WS has not applied it yet
    payments.close()

    # ledger-only commands need no 4WS configuration
    result = bare("reservations", "list", "--ledger", f"sqlite:///{ledger}", "--json")
    assert result.code == 0, result.stderr
    states = {r["id"]: r["state"] for r in result.json()}
    assert states == {held.id: "active", capturing.id: "capturing"}
    table = bare("reservations", "list", "--ledger", f"sqlite:///{ledger}")
    row = next(line for line in table.stdout.splitlines() if capturing.id in line)
    assert "capturing" in row


def test_sandbox_serve_prints_the_demo_cards(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fourws_pay.cli", "sandbox", "serve", "--port", str(free_port())],
        env=clean_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    killer = threading.Timer(60, proc.kill)  # a hung server must not hang the suite
    killer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if NEVER_ACTIVATED_CARD in line:
                break
    finally:
        killer.cancel()
        proc.terminate()
        proc.wait(timeout=20)
    text = "".join(lines)
    assert "Demo gift cards:" in text
    card_line = next(line for line in lines if EXAMPLE_CARD in line)
    assert "390" in card_line
    assert "EUR" in card_line


# 7. fixtures with only the base install


def test_fixture_without_the_sandbox_extra_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "import sys\n"
        "# as if only `pip install fourws-pay` were done (other plugins may have loaded them)\n"
        "for name in list(sys.modules):\n"
        "    if name.split('.')[0] in ('starlette', 'uvicorn', 'sniffio') or name.startswith(\n"
        "        'fourws_pay.sandbox'\n"
        "    ):\n"
        "        del sys.modules[name]\n"
        "for name in ('starlette', 'uvicorn', 'sniffio'):\n"
        "    sys.modules[name] = None\n"
    )
    (tmp_path / "test_shop.py").write_text(
        "def test_checkout(fourws_client):\n    fourws_client.get_giftcard('2000000001814')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shop.py"],
        cwd=tmp_path,
        env=clean_env(PYTEST_ADDOPTS=""),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert "install fourws-pay[sandbox]" in done.stdout
    assert "ModuleNotFoundError" not in done.stdout
