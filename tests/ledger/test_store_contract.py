"""One contract for every ledger store: SQLite, PostgreSQL, MariaDB and Redis behave alike.

The provider's money invariants rest on these promises (fourws_pay/payments/ports.py): exact
round trips, compare-and-set that detects a lost race, rollback on error, consistent
snapshots, durability across a reopen, and a per-card critical section that holds across
threads *and* processes. The unlocked variants show that the critical section is what stops
two read-then-write transactions from seeing the same count.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fourws_pay.errors import ConfigurationError
from fourws_pay.ledger import LedgerStore, open_store
from fourws_pay.ledger.redis import LedgerConflict
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)
from tests.services import StoreFactory, require, unavailable

NOW = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
CARD = "2000000001814"
ACTIVE = [ReservationState.ACTIVE]


def reservation(n: int = 1, barcode: str = CARD, amount: str = "10.00") -> Reservation:
    return Reservation(
        id=f"res_{n}",
        barcode=barcode,
        amount=Decimal(amount),
        currency="EUR",
        decimals=2,
        entity_code="440",
        order_ref=f"ORD-{n}",
        state=ReservationState.ACTIVE,
        created_at=NOW + timedelta(microseconds=n),
        expires_at=NOW + timedelta(minutes=15),
        updated_at=NOW,
    )


def operation(n: int = 1, reservation_id: str = "res_1", barcode: str = CARD) -> Operation:
    return Operation(
        id=f"op_{n}",
        kind=OperationKind.CAPTURE,
        reservation_id=reservation_id,
        barcode=barcode,
        amount=Decimal("10.00"),
        currency="EUR",
        entity_code="440",
        state=OperationState.PREPARED,
        created_at=NOW + timedelta(microseconds=n),
        updated_at=NOW,
        deadline=NOW + timedelta(minutes=10),
        callback_token_hash="ab" * 32,
        balance_before=Decimal("390.00"),
    )


def test_round_trip_is_exact(any_store: LedgerStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    r = replace(
        reservation(),
        amount=Decimal("0.10"),
        forfeited=Decimal("0.05"),
        created_at=datetime(2026, 6, 1, 14, 0, 0, 999999, tzinfo=plus_two),
        operation_id="op_1",
    )
    op = replace(
        operation(),
        amount=Decimal("123456789.0001"),
        balance_before=Decimal("1E+2"),
        queue_id="Q-7",
        parent_id="op_0",
        message="Carta regalo: importo già usato — ok",
        callback_id="cb-1",
        settled_at=NOW + timedelta(microseconds=1),
    )
    with any_store.card_transaction(r.barcode) as tx:
        tx.insert_reservation(r)
        tx.insert_operation(op)
    loaded_r = any_store.get_reservation(r.id)
    loaded_op = any_store.get_operation(op.id)
    assert loaded_r == r
    assert loaded_op == op
    assert loaded_r is not None
    assert loaded_op is not None
    # Scale survives (not just numeric equality), and times come back as UTC.
    assert str(loaded_r.amount) == "0.10"
    assert str(loaded_op.amount) == "123456789.0001"
    assert loaded_r.created_at.utcoffset() == timedelta(0)
    assert loaded_r.created_at == datetime(2026, 6, 1, 12, 0, 0, 999999, tzinfo=UTC)
    assert loaded_op.balance_before == Decimal(100)
    assert loaded_op.settled_at == NOW + timedelta(microseconds=1)


def test_optional_fields_round_trip_as_none(any_store: LedgerStore) -> None:
    r = replace(reservation(), updated_at=None)
    op = replace(operation(), balance_before=None, callback_token_hash="")
    with any_store.transaction() as tx:
        tx.insert_reservation(r)
        tx.insert_operation(op)
    assert any_store.get_reservation(r.id) == r
    assert any_store.get_operation(op.id) == op
    assert any_store.get_reservation("missing") is None
    assert any_store.get_operation("missing") is None


def test_naive_times_are_refused_and_nothing_is_written(any_store: LedgerStore) -> None:
    naive = replace(reservation(), created_at=datetime(2026, 6, 1, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"), any_store.transaction() as tx:
        tx.insert_reservation(naive)
    assert any_store.get_reservation(naive.id) is None


def test_compare_and_set_refuses_stale_state(any_store: LedgerStore) -> None:
    with any_store.transaction() as tx:
        tx.insert_operation(operation())
    sending = replace(operation(), state=OperationState.SENDING)
    with any_store.transaction() as tx:
        assert tx.update_operation(sending, OperationState.PREPARED)
        assert tx.get_operation("op_1") == sending  # a transaction reads its own writes
    with any_store.transaction() as tx:  # a second writer with a stale view loses
        assert not tx.update_operation(
            replace(operation(), state=OperationState.FAILED), OperationState.PREPARED
        )
    with any_store.transaction() as tx:
        assert not tx.update_reservation(reservation(), ReservationState.ACTIVE)  # no such id
    stored = any_store.get_operation("op_1")
    assert stored is not None
    assert stored.state is OperationState.SENDING


def test_compare_and_set_of_identical_values_still_succeeds(any_store: LedgerStore) -> None:
    """MariaDB reports *changed* rows unless told otherwise; a no-op CAS must still say True."""
    with any_store.transaction() as tx:
        tx.insert_reservation(reservation())
    with any_store.transaction() as tx:
        assert tx.update_reservation(reservation(), ReservationState.ACTIVE)


def test_compare_and_set_chains_within_one_transaction(any_store: LedgerStore) -> None:
    with any_store.card_transaction(CARD) as tx:
        tx.insert_operation(operation())
        sending = replace(operation(), state=OperationState.SENDING)
        assert tx.update_operation(sending, OperationState.PREPARED)
        assert not tx.update_operation(sending, OperationState.PREPARED)
        enqueued = replace(sending, state=OperationState.ENQUEUED, queue_id="Q-1")
        assert tx.update_operation(enqueued, OperationState.SENDING)
    assert any_store.get_operation("op_1") == enqueued
    assert [o.id for o in any_store.list_operations([OperationState.ENQUEUED])] == ["op_1"]
    assert any_store.list_operations([OperationState.PREPARED]) == []


def test_only_one_of_two_racing_writers_wins(any_store: LedgerStore) -> None:
    """Two threads CAS the same operation from ``prepared``; exactly one may succeed."""
    results: list[bool] = []
    barrier = threading.Barrier(2)

    def attempt(op: Operation) -> None:
        barrier.wait()
        with any_store.transaction() as tx:
            results.append(tx.update_operation(op, OperationState.PREPARED))

    for n in range(10):
        with any_store.transaction() as tx:
            tx.insert_operation(operation(n))
        results.clear()
        workers = [
            threading.Thread(target=attempt, args=(replace(operation(n), state=s),))
            for s in (OperationState.SENDING, OperationState.FAILED)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert sorted(results) == [False, True]
        stored = any_store.get_operation(f"op_{n}")
        assert stored is not None
        assert stored.state is not OperationState.PREPARED


def test_rollback_on_error_leaves_nothing(any_store: LedgerStore) -> None:
    with any_store.transaction() as tx:
        tx.insert_operation(operation(1))
    with pytest.raises(RuntimeError, match="boom"), any_store.card_transaction(CARD) as tx:
        tx.insert_reservation(reservation())
        assert tx.update_operation(
            replace(operation(1), state=OperationState.SENDING), OperationState.PREPARED
        )
        raise RuntimeError("boom")
    assert any_store.get_reservation("res_1") is None
    stored = any_store.get_operation("op_1")
    assert stored is not None
    assert stored.state is OperationState.PREPARED
    with any_store.card_transaction(CARD) as tx:  # the card is not left locked
        assert tx.reservations_for_card(CARD, ACTIVE) == []


def test_transactions_do_not_nest(any_store: LedgerStore) -> None:
    with (
        any_store.transaction(),
        pytest.raises(RuntimeError, match="nest"),
        any_store.card_transaction(CARD),
    ):
        pass


def test_survives_reopen(store_factory: StoreFactory) -> None:
    first = store_factory()
    with first.card_transaction(CARD) as tx:
        tx.insert_reservation(reservation())
        tx.insert_operation(operation())
    first.close()
    again = store_factory()
    assert again.get_reservation("res_1") == reservation()
    assert again.get_operation("op_1") == operation()
    with again.card_transaction(CARD) as tx:
        assert [r.id for r in tx.reservations_for_card(CARD, ACTIVE)] == ["res_1"]


def test_listings_filter_by_state_order_and_kind(any_store: LedgerStore) -> None:
    refund = replace(operation(3), kind=OperationKind.REFUND, parent_id="op_1")
    with any_store.transaction() as tx:
        tx.insert_reservation(reservation(1))
        tx.insert_reservation(replace(reservation(2), state=ReservationState.RELEASED))
        tx.insert_reservation(replace(reservation(3, barcode="2000000009999")))
        tx.insert_operation(operation(1))
        tx.insert_operation(replace(operation(2), state=OperationState.SUCCEEDED))
        tx.insert_operation(refund)
    assert [r.id for r in any_store.list_reservations(ACTIVE)] == ["res_1", "res_3"]
    assert [r.id for r in any_store.list_reservations(order_ref="ORD-2")] == ["res_2"]
    assert any_store.list_reservations(ACTIVE, order_ref="ORD-2") == []
    assert any_store.list_reservations([]) == []
    assert [r.id for r in any_store.list_reservations()] == ["res_1", "res_2", "res_3"]
    assert [o.id for o in any_store.list_operations()] == ["op_1", "op_2", "op_3"]
    assert [o.id for o in any_store.list_operations(kind=OperationKind.REFUND)] == ["op_3"]
    states = [OperationState.PREPARED, OperationState.SUCCEEDED]
    assert [o.id for o in any_store.list_operations(states, OperationKind.CAPTURE)] == [
        "op_1",
        "op_2",
    ]
    # A state change moves the record between listings.
    with any_store.transaction() as tx:
        released = replace(reservation(1), state=ReservationState.RELEASED)
        assert tx.update_reservation(released, ReservationState.ACTIVE)
    assert [r.id for r in any_store.list_reservations(ACTIVE)] == ["res_3"]
    released_ids = [r.id for r in any_store.list_reservations([ReservationState.RELEASED])]
    assert released_ids == ["res_1", "res_2"]


def test_card_queries(any_store: LedgerStore) -> None:
    settled_at = NOW + timedelta(seconds=5)
    settled = replace(operation(2), state=OperationState.SUCCEEDED, settled_at=settled_at)
    refund = replace(operation(3), kind=OperationKind.REFUND, parent_id="op_2")
    other_card = replace(operation(4, barcode="2000000009999"), reservation_id="res_9")
    with any_store.transaction() as tx:
        tx.insert_reservation(reservation(1))
        tx.insert_operation(operation(1))
        tx.insert_operation(settled)
        tx.insert_operation(refund)
        tx.insert_operation(other_card)
    with any_store.card_transaction(CARD) as tx:
        prepared = tx.operations_for_card(CARD, [OperationState.PREPARED])
        assert [o.id for o in prepared] == ["op_1", "op_3"]
        assert [o.id for o in tx.operations_settled_since(CARD, NOW)] == ["op_2"]
        assert [o.id for o in tx.operations_settled_since(CARD, settled_at)] == ["op_2"]
        assert tx.operations_settled_since(CARD, NOW + timedelta(seconds=6)) == []
        assert [o.id for o in tx.captures_of_reservation("res_1")] == ["op_1", "op_2"]
        assert [o.id for o in tx.children_of("op_2", OperationKind.REFUND)] == ["op_3"]
        assert tx.children_of("op_2", OperationKind.CAPTURE) == []
        assert [r.id for r in tx.reservations_for_card(CARD, ACTIVE)] == ["res_1"]
        assert tx.reservations_for_card(CARD, [ReservationState.CAPTURED]) == []
        assert tx.reservations_for_card("2000000009999", ACTIVE) == []
        assert [o.id for o in tx.captures_of_reservation("res_9")] == ["op_4"]


def test_card_queries_reach_history_beyond_open_records(any_store: LedgerStore) -> None:
    """Terminal records and long runs of settlements are found too (Redis keeps a card's
    open records and latest settlements in its per-transaction image and fetches the rest)."""
    settlements = 40
    with any_store.transaction() as tx:
        tx.insert_reservation(replace(reservation(1), state=ReservationState.CAPTURED))
        tx.insert_reservation(reservation(2))
        for n in range(settlements):
            tx.insert_operation(
                replace(
                    operation(n),
                    state=OperationState.SUCCEEDED,
                    settled_at=NOW + timedelta(seconds=n),
                )
            )
        tx.insert_operation(replace(operation(99), state=OperationState.FAILED))
        tx.insert_operation(replace(operation(100), state=OperationState.ENQUEUED))
    for opener in (any_store.card_transaction, lambda _: any_store.snapshot()):
        with opener(CARD) as tx:
            assert len(tx.operations_settled_since(CARD, NOW)) == settlements
            latest = tx.operations_settled_since(CARD, NOW + timedelta(seconds=settlements - 3))
            assert [o.id for o in latest] == [
                f"op_{n}" for n in range(settlements - 3, settlements)
            ]
            assert [o.id for o in tx.operations_for_card(CARD, [OperationState.FAILED])] == [
                "op_99"
            ]
            assert [o.id for o in tx.operations_for_card(CARD, [OperationState.ENQUEUED])] == [
                "op_100"
            ]
            everything = tx.operations_for_card(CARD, list(OperationState))
            assert len(everything) == settlements + 2
            captured = tx.reservations_for_card(CARD, [ReservationState.CAPTURED])
            assert [r.id for r in captured] == ["res_1"]
            assert len(tx.reservations_for_card(CARD, list(ReservationState))) == 2
            assert tx.get_operation("op_0") is not None
    # A settlement moves an operation from the open records to the history in one commit.
    with any_store.card_transaction(CARD) as tx:
        settled = replace(
            operation(100), state=OperationState.SUCCEEDED, settled_at=NOW + timedelta(hours=1)
        )
        assert tx.update_operation(settled, OperationState.ENQUEUED)
    with any_store.snapshot() as tx:
        assert tx.operations_for_card(CARD, [OperationState.ENQUEUED]) == []
        recent = tx.operations_settled_since(CARD, NOW + timedelta(minutes=59))
        assert [o.id for o in recent] == ["op_100"]


def test_card_queries_see_the_transactions_own_writes(any_store: LedgerStore) -> None:
    with any_store.card_transaction(CARD) as tx:
        tx.insert_reservation(reservation(1))
        tx.insert_operation(operation(1))
        assert [r.id for r in tx.reservations_for_card(CARD, ACTIVE)] == ["res_1"]
        assert [o.id for o in tx.captures_of_reservation("res_1")] == ["op_1"]
        assert tx.get_reservation("res_1") == reservation(1)


def test_snapshot_is_one_consistent_view(any_store: LedgerStore) -> None:
    """Writes committed while a snapshot is open stay invisible to it."""
    with any_store.transaction() as tx:
        tx.insert_reservation(reservation(1))

    def write_more() -> None:
        with any_store.card_transaction(CARD) as tx:
            tx.insert_reservation(reservation(2))
            tx.insert_operation(operation(2, reservation_id="res_2"))

    with any_store.snapshot() as snap:
        assert [r.id for r in snap.reservations_for_card(CARD, ACTIVE)] == ["res_1"]
        writer = threading.Thread(target=write_more)
        writer.start()
        writer.join()
        assert [r.id for r in snap.reservations_for_card(CARD, ACTIVE)] == ["res_1"]
        assert snap.operations_for_card(CARD, [OperationState.PREPARED]) == []
    assert len(any_store.list_reservations()) == 2


def test_only_one_of_racing_card_transactions_releases(any_store: LedgerStore) -> None:
    """The release path: read the reservation under the card lock, then move it on."""
    with any_store.transaction() as tx:
        tx.insert_reservation(reservation())
    released: list[bool] = []
    barrier = threading.Barrier(4)

    def release() -> None:
        barrier.wait()
        with any_store.card_transaction(CARD) as tx:
            current = tx.get_reservation("res_1")
            assert current is not None
            if current.state is ReservationState.ACTIVE:
                done = replace(current, state=ReservationState.RELEASED)
                released.append(tx.update_reservation(done, ReservationState.ACTIVE))

    workers = [threading.Thread(target=release) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert released == [True]


def test_snapshots_do_not_wait_for_a_card_transaction(any_store: LedgerStore) -> None:
    with any_store.transaction() as tx:
        tx.insert_reservation(reservation())
    holding, finish = threading.Event(), threading.Event()

    def hold_the_card() -> None:
        with any_store.card_transaction(CARD) as tx:
            tx.reservations_for_card(CARD, ACTIVE)
            holding.set()
            finish.wait(30)

    holder = threading.Thread(target=hold_the_card)
    holder.start()
    try:
        assert holding.wait(30)
        seen: list[int] = []

        def look() -> None:
            with any_store.snapshot() as tx:
                seen.append(len(tx.reservations_for_card(CARD, ACTIVE)))

        reader = threading.Thread(target=look)
        reader.start()
        reader.join(20)  # a generous bound; a blocked reader would wait for the holder
        assert seen == [1]
    finally:
        finish.set()
        holder.join()


def read_then_insert(
    store: LedgerStore, tag: str, rounds: int, start: Any, gap: float = 0.0
) -> None:
    """Count the card's active holds, then record a new one carrying the count it saw."""
    start.wait()
    for i in range(rounds):
        with store.card_transaction(CARD) as tx:
            count = len(tx.reservations_for_card(CARD, ACTIVE))
            if gap:
                time.sleep(gap)  # widens the race window for the unlocked variant only
            tx.insert_reservation(replace(reservation(), id=f"res_{tag}_{i}", order_ref=str(count)))


def _counts(store: LedgerStore) -> list[int]:
    return sorted(int(r.order_ref) for r in store.list_reservations())


def test_card_transactions_serialise_threads(any_store: LedgerStore) -> None:
    threads, rounds = 4, 25
    barrier = threading.Barrier(threads)
    workers = [
        threading.Thread(target=read_then_insert, args=(any_store, f"t{n}", rounds, barrier))
        for n in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert _counts(any_store) == list(range(threads * rounds))


def _run_processes(store: LedgerStore, processes: int, rounds: int, gap: float, tag: str) -> None:
    """Fork workers that share ``store`` (each must open its own connections after the fork)."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(processes)
    workers = [
        ctx.Process(target=read_then_insert, args=(store, f"{tag}p{n}", rounds, start, gap))
        for n in range(processes)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * processes


def hold_card_until_killed(store: LedgerStore, holding: Any) -> None:
    with store.card_transaction(CARD) as tx:
        tx.insert_reservation(replace(reservation(), id="res_killed"))
        holding.set()
        threading.Event().wait(120)  # the parent kills us long before


def test_a_killed_holder_neither_keeps_the_card_nor_commits(store_factory: StoreFactory) -> None:
    """``kill -9`` inside a card transaction: the lock goes (with the session, or by TTL on
    Redis) and the half-done transaction leaves nothing behind (invariant 14)."""
    options = {"lock_ttl_ms": 300} if store_factory.kind == "redis" else {}
    store = store_factory(**options)
    ctx = multiprocessing.get_context("fork")
    holding = ctx.Event()
    child = ctx.Process(target=hold_card_until_killed, args=(store, holding))
    child.start()
    try:
        assert holding.wait(30)
    finally:
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(30)
    assert child.exitcode == -signal.SIGKILL
    with store.card_transaction(CARD) as tx:
        assert tx.reservations_for_card(CARD, ACTIVE) == []
        tx.insert_reservation(reservation())
    assert [r.id for r in store.list_reservations()] == ["res_1"]


def test_card_transactions_serialise_processes(any_store: LedgerStore) -> None:
    """4 processes x 25 read-then-insert rounds: every count seen exactly once."""
    any_store.list_reservations()  # the parent holds a live connection across the fork
    _run_processes(any_store, processes=4, rounds=25, gap=0.0, tag="a")
    assert _counts(any_store) == list(range(100))


def test_without_the_lock_processes_see_the_same_count(store_factory: StoreFactory) -> None:
    """The same workload with ``locking=False`` double-counts: the lock is what prevents it."""
    unlocked = store_factory(locking=False)
    for attempt in range(5):
        _run_processes(unlocked, processes=4, rounds=10, gap=0.001, tag=f"u{attempt}")
        duplicates = [n for n, seen in Counter(_counts(unlocked)).items() if seen > 1]
        if duplicates:
            break
    assert duplicates, "unlocked read-then-insert never raced; the test proves nothing"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ledger:s3cret-pw@127.0.0.1:1/test",
        "mysql://ledger:s3cret-pw@127.0.0.1:1/test",
        "redis://:s3cret-pw@127.0.0.1:1/0",
    ],
    ids=["postgres", "mysql", "redis"],
)
def test_unreachable_server_is_a_configuration_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match="not reachable") as caught:
        open_store(url)
    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)


def test_bad_names_are_configuration_errors(store_factory: StoreFactory) -> None:
    bad: dict[str, dict[str, Any]] = {
        "postgres": {"table_prefix": "x; DROP TABLE y; --"},
        "mysql": {"table_prefix": "9lives"},
        "redis": {"key_prefix": ""},
    }
    with pytest.raises(ConfigurationError):
        if store_factory.kind == "sqlite":
            open_store("sqlite:///")
        else:
            store_factory(**bad[store_factory.kind])


def test_redis_commit_is_refused_once_its_lock_was_lost(tmp_path: Path) -> None:
    """A holder paused past ``lock_ttl_ms`` must not overwrite the next holder's work."""
    require("redis")
    factory = StoreFactory("redis", tmp_path)
    try:
        store: Any = factory()
        with pytest.raises(LedgerConflict, match="LOCK_LOST"), store.card_transaction(CARD) as tx:
            tx.insert_reservation(reservation())
            # What expiry plus a new holder looks like from the inside:
            store._client.set(f"{store.key_prefix}lock:{CARD}", "someone-else")
        assert store.get_reservation("res_1") is None
        assert store.list_reservations() == []
    finally:
        factory.cleanup()


def test_redis_duplicate_ids_are_refused_at_commit(tmp_path: Path) -> None:
    require("redis")
    factory = StoreFactory("redis", tmp_path)
    try:
        store = factory()
        with store.transaction() as tx:
            tx.insert_reservation(reservation())
        with pytest.raises(LedgerConflict, match="DUPLICATE"), store.transaction() as tx:
            tx.insert_reservation(replace(reservation(), barcode="2000000009999"))
        assert store.get_reservation("res_1") == reservation()
    finally:
        factory.cleanup()


@pytest.mark.parametrize(("required", "outcome"), [("", "skip"), ("1", "fail")])
def test_missing_services_skip_locally_and_fail_in_ci(
    monkeypatch: pytest.MonkeyPatch, required: str, outcome: str
) -> None:
    monkeypatch.setenv("FOURWS_PAY_REQUIRE_SERVICES", required)
    expected = pytest.skip.Exception if outcome == "skip" else pytest.fail.Exception
    with pytest.raises(expected, match=r"PostgreSQL not reachable on 127\.0\.0\.1:1"):
        unavailable("PostgreSQL", "postgresql://u:pw@127.0.0.1:1/test", "refused")


@pytest.mark.services
@pytest.mark.parametrize("kind", ["postgres", "mysql", "redis"])
def test_store_options_can_come_from_the_ledger_url(kind: str, tmp_path: Path) -> None:
    """``Settings.ledger_url`` is the only knob a shop has: prefixes must fit in it."""
    require(kind)
    factory = StoreFactory(kind, tmp_path)
    try:
        (name, prefix), *_ = factory.options.items()
        separator = "&" if "?" in factory.url else "?"
        from_url = open_store(f"{factory.url}{separator}{name}={prefix}")
        with from_url.card_transaction(CARD) as tx:
            tx.insert_reservation(reservation())
        from_url.close()
        assert factory().get_reservation("res_1") == reservation()  # same prefix, same data
        with pytest.raises(ConfigurationError, match="bad ledger URL option"):
            open_store(f"{factory.url}{separator}{name}={prefix}&pool_size=many&lock_ttl_ms=x")
    finally:
        factory.cleanup()
