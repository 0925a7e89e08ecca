"""Invariant 14: after ``kill -9`` at any named step and a restart, invariants 1-7 hold.

A child process (``crash_child.py``) does the payment step against a served sandbox and is
SIGKILLed at the step named by ``FOURWS_PAY_CRASH_AT``. The parent then plays the restarted
shop on the same ledger file: its callback endpoint receives what 4WS sends, time passes
beyond the callback timeout and reconcile window, ``reconcile`` runs, and the ledger is
audited against the sandbox's books. The twin runs the child without write-ahead and must
see the audit fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fourws_pay import (
    CallbackRejected,
    Client,
    GiftCardPayments,
    ManualClock,
    SQLiteStore,
    make_plugin_manager,
)
from fourws_pay.payments.models import OperationState, ReservationState
from fourws_pay.sandbox.server import ServedSandbox, start_in_thread
from tests.payments.harness import EventRecorder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served() -> Iterator[ServedSandbox]:
    with start_in_thread() as server:
        yield server


@dataclass
class RestartedShop:
    served: ServedSandbox
    ledger: Path
    barcode: str
    clock: ManualClock = field(default_factory=lambda: ManualClock(datetime.now(UTC)))
    held_back: list[tuple[str, bytes]] = field(default_factory=list)
    hold_callbacks: bool = False

    def __post_init__(self) -> None:
        self.store = SQLiteStore(self.ledger)
        settings = self.served.settings
        self.payments = GiftCardPayments(
            settings=settings,
            client=Client(settings, clock=self.clock),
            store=self.store,
            clock=self.clock,
            plugin_manager=make_plugin_manager(load_entrypoints=False, plugins=[EventRecorder()]),
        )
        self.served.sandbox.set_callback_handler(self.receive)

    def receive(self, url: str, body: bytes) -> int:
        """The shop's callback endpoint (it may be a different process from the one that
        crashed: it shares the ledger file)."""
        if self.hold_callbacks:
            self.held_back.append((urlsplit(url).path, body))
            return 503
        try:
            return self.payments.handle_callback(urlsplit(url).path, body).status_code
        except CallbackRejected as exc:
            return exc.status_code

    def child(self, step: str, crash_at: str | None, *, broken: bool = False, **extra: Any) -> int:
        config = {
            "settings": self.served.settings.model_dump(mode="json"),
            "ledger": str(self.ledger),
            "barcode": self.barcode,
            "step": step,
            **extra,
        }
        settings = config["settings"]
        settings["password"] = self.served.settings.password.get_secret_value()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOURWS_PAY_")}
        if crash_at:
            env["FOURWS_PAY_CRASH_AT"] = crash_at
        if broken:
            env["FOURWS_PAY_TEST_BREAK"] = "write_ahead"
        result = subprocess.run(
            [sys.executable, "-m", "tests.payments.crash_child", json.dumps(config)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode in (0, -9), result.stderr[-2000:]
        return result.returncode

    def later(self) -> None:
        """4WS drains its queue; then enough time passes for every deadline and window.

        Twice: a claim the crash left unsent is given its turn again by the first
        reconcile, which posts it; the second pass sees its settlement through."""
        s = self.payments.settings
        for _ in range(2):
            self.served.sandbox.run_until_idle()
            self.clock.advance(s.callback_timeout + s.reconcile_window + s.read_timeout + 60)
            self.payments.reconcile()

    def audit(self) -> None:
        sandbox = self.served.sandbox
        applied: dict[str, int] = {}
        for record in sandbox.applied_operations(self.barcode):
            if isinstance(record.payload, dict) and "operation_id" in record.payload:
                key = str(record.payload["operation_id"])
                applied[key] = applied.get(key, 0) + 1
        ops = [op for op in self.store.list_operations() if op.barcode == self.barcode]
        net = Decimal(0)
        for op in ops:
            times = applied.get(op.id, 0)
            assert times <= 1, "applied twice (invariant 3)"
            assert op.state in (
                OperationState.SUCCEEDED,
                OperationState.FAILED,
                OperationState.MANUAL_REVIEW,
            ), f"{op.state} after reconcile"
            if op.state is OperationState.SUCCEEDED:
                assert times == 1, "succeeded in the ledger, not applied by 4WS"
                net += op.signed_amount
            if op.state is OperationState.FAILED:
                assert times == 0, "failed in the ledger, applied by 4WS (money lost)"
        taken = sum(
            (
                r.amount
                for r in sandbox.applied_operations(self.barcode)
                if isinstance(r.payload, dict)
            ),
            Decimal(0),
        )
        assert taken == net, "conservation (invariant 1)"
        for r in self.store.list_reservations():
            captures = [
                op
                for op in ops
                if op.reservation_id == r.id
                and op.signed_amount < 0
                and op.state is OperationState.SUCCEEDED
            ]
            assert len(captures) <= 1
            assert (r.state is ReservationState.CAPTURED) == bool(captures)
        assert self.payments.sweep() == 0  # everything that could expire already did

    def operator_resolves(self) -> None:
        """What automation could not prove goes to an operator, who asks 4WS (here: its
        books); a hold freed by the verdict may be past its expiry, hence the sweep."""
        for op in self.store.list_operations([OperationState.MANUAL_REVIEW]):
            applied = any(
                isinstance(r.payload, dict) and r.payload.get("operation_id") == op.id
                for r in self.served.sandbox.applied_operations(self.barcode)
            )
            self.payments.resolve(op.id, applied=applied, note="checked with 4WS")
        self.payments.sweep()

    def close(self) -> None:
        self.served.sandbox.set_callback_handler(None)
        self.payments.close()


@pytest.fixture
def restarted(
    served: ServedSandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[RestartedShop]:
    barcode = f"70000{abs(hash(request.node.name)) % 10**8:08d}"
    served.sandbox.add_giftcard(barcode, amount=Decimal("100.00"))
    shop = RestartedShop(served, tmp_path / "ledger.db", barcode)
    yield shop
    shop.close()


ITEM = "GIFTCARD_IVA_TAGLIO_100"
CAPTURE_POINTS = [
    "reserve.before_commit",
    "capture.after_prepare",
    "capture.after_sending",
    "capture.after_post",
]


@pytest.mark.parametrize("point", CAPTURE_POINTS)
def test_capture_survives_kill_9(restarted: RestartedShop, point: str) -> None:
    assert restarted.child("capture", point) == -9
    restarted.later()
    restarted.audit()
    restarted.operator_resolves()
    restarted.audit()
    open_holds = restarted.store.list_reservations([ReservationState.ACTIVE])
    for hold in open_holds:
        restarted.payments.release(hold.id)
    balance = restarted.served.sandbox.balance(restarted.barcode)
    assert balance in (Decimal("100.00"), Decimal("70.00"))


@pytest.mark.parametrize("point", [*CAPTURE_POINTS[1:], None])
def test_second_capture_killed_while_the_first_is_settling(
    restarted: RestartedShop, point: str | None
) -> None:
    """No waiting between captures: 4WS settles the first (its callback reaching the
    restarted shop, a second worker on the same ledger) while another process prepares,
    posts and is killed in the second. Whatever the interleaving, the books balance."""
    assert restarted.child("capture", None) == 0  # enqueued, not settled
    drain = threading.Thread(target=restarted.served.sandbox.run_until_idle)
    drain.start()
    try:
        assert restarted.child("capture_when_idle", point) == (-9 if point else 0)
    finally:
        drain.join(30)
    restarted.later()
    restarted.audit()
    restarted.operator_resolves()
    restarted.audit()
    balance = restarted.served.sandbox.balance(restarted.barcode)
    assert balance in (Decimal("70.00"), Decimal("40.00"))


def test_callback_handler_killed_mid_commit(restarted: RestartedShop) -> None:
    restarted.hold_callbacks = True
    assert restarted.child("capture", None) == 0
    restarted.served.sandbox.run_until_idle()
    assert restarted.held_back, "4WS sent no callback"
    path, body = restarted.held_back[0]
    assert (
        restarted.child("callback", "callback.before_commit", path=path, body=body.decode()) == -9
    )
    (op,) = restarted.store.list_operations()
    assert op.state is OperationState.ENQUEUED  # the killed commit left no trace
    restarted.hold_callbacks = False
    assert restarted.receive("http://x" + path, body) == 200  # 4WS retries
    restarted.later()
    restarted.audit()
    assert restarted.served.sandbox.balance(restarted.barcode) == Decimal("70.00")


def test_refund_killed_while_sending(restarted: RestartedShop) -> None:
    assert restarted.child("capture", None) == 0
    restarted.served.sandbox.run_until_idle()
    (capture,) = restarted.store.list_operations()
    assert capture.state is OperationState.SUCCEEDED
    assert restarted.child("refund", "refund.after_sending", operation_id=capture.id) == -9
    restarted.later()
    restarted.audit()
    assert restarted.served.sandbox.balance(restarted.barcode) == Decimal("70.00")


def test_crash_test_fails_without_write_ahead(restarted: RestartedShop) -> None:
    restarted.hold_callbacks = True  # the callback is lost with the crashed process
    assert restarted.child("capture", "capture.after_post", broken=True) == -9
    restarted.later()
    with pytest.raises(AssertionError):
        restarted.audit()


ISSUE_POINTS = ["generate.after_sending", "generate.after_post"]
ACTIVATE_POINTS = ["activate.after_prepare", "activate.after_sending", "activate.after_post"]


def sale(restarted: RestartedShop) -> str:
    return f"SALE-{restarted.barcode}"  # the served sandbox outlives each test


def issued_once_after_restart(restarted: RestartedShop) -> None:
    """Invariant 18 after ``kill -9``: the restarted shop's callbacks and reconcile (and an
    operator for what only 4WS knows) carry both sold cards to delivery, each loaded once
    with its amount, and no barcode outside them is loaded."""
    sandbox = restarted.served.sandbox
    for _ in range(3):
        restarted.later()
        sandbox.run_until_idle()  # staff ask 4WS once its queue is through (not mid-way)
        for op in restarted.store.list_operations([OperationState.MANUAL_REVIEW]):
            applied = any(
                isinstance(r.payload, dict) and r.payload.get("operation_id") == op.id
                for r in sandbox.applied_operations()
            )
            restarted.payments.resolve(op.id, applied=applied, note="checked with 4WS")
    cards = restarted.payments.issued_cards(sale(restarted))
    assert [c.state.value for c in cards] == ["delivered", "delivered"]
    loads = [r for r in sandbox.applied_operations() if r.kind == "activation"]
    ours = [
        r
        for r in loads
        if isinstance(r.payload, dict) and r.payload.get("order_ref") == sale(restarted)
    ]
    assert sorted(r.barcode for r in ours) == sorted(c.barcode for c in cards)
    for card in cards:
        assert sandbox.balance(card.barcode or "") == Decimal("30.00")


@pytest.mark.parametrize("point", ISSUE_POINTS)
def test_issuing_survives_kill_9_while_generating(restarted: RestartedShop, point: str) -> None:
    restarted.served.sandbox.add_product(ITEM, item_type="FINANCIAL")
    assert restarted.child("issue", point, item=ITEM, order_ref=sale(restarted)) == -9
    issued_once_after_restart(restarted)


@pytest.mark.parametrize("point", ACTIVATE_POINTS)
def test_issuing_survives_kill_9_while_activating(restarted: RestartedShop, point: str) -> None:
    """The generation's callback reaches a process that is killed while it activates."""
    restarted.served.sandbox.add_product(ITEM, item_type="FINANCIAL")
    restarted.hold_callbacks = True
    assert restarted.child("issue", None, item=ITEM, order_ref=sale(restarted)) == 0
    restarted.served.sandbox.run_until_idle()
    (path, body), *_ = restarted.held_back
    restarted.hold_callbacks = False
    assert restarted.child("callback", point, path=path, body=body.decode()) == -9
    issued_once_after_restart(restarted)


def test_an_order_on_two_cards_killed_between_holds_is_finished_by_the_retry(
    restarted: RestartedShop,
) -> None:
    """kill -9 after the first hold of a two-card order (invariants 14, 20): the hold the
    dead process left counts (until it expires); the shop's retry with the same key finds
    it and places only the missing one; the order is then captured once per card."""
    second = f"71{restarted.barcode[2:]}"
    restarted.served.sandbox.add_giftcard(second, amount=Decimal("50.00"))
    cards = [restarted.barcode, second]
    assert restarted.child("reserve_order", "reserve_order.between_holds", cards=cards) == -9
    (left,) = restarted.store.list_reservations(order_ref="CRASH-ORDER")
    assert left.barcode == second  # same expiry: the smaller balance is held first
    order = restarted.payments.reserve_order(
        "CRASH-ORDER", cards=cards, amount="130.00", currency="EUR"
    )
    assert left.id in {r.id for r in order.reservations}
    assert order.share_of(second) == Decimal("50.00")
    assert order.share_of(restarted.barcode) == Decimal("80.00")
    assert len(restarted.store.list_reservations(order_ref="CRASH-ORDER")) == 2
    captures = restarted.payments.capture_order("CRASH-ORDER")
    restarted.later()
    assert {restarted.store.get_operation(op.id).state for op in captures} == {  # type: ignore[union-attr]
        OperationState.SUCCEEDED
    }
    sandbox = restarted.served.sandbox
    consumed = [r for card in cards for r in sandbox.applied_operations(card) if r.amount < 0]
    assert sorted(r.amount for r in consumed) == [Decimal("-80.00"), Decimal("-50.00")]
    assert sandbox.balance(restarted.barcode) == Decimal("20.00")
    assert sandbox.balance(second) == 0
