"""The Redis ledger: per-card locks, card-sized atomic reads, buffered writes committed by script.

Redis has no multi-statement transactions that can read and then decide, so this store builds
the protocol's guarantees from three pieces:

- **A per-card lock** ``<prefix>lock:<barcode>``: ``SET NX PX`` with a random token, released
  with a compare-and-delete script so that a holder whose lock expired cannot free someone
  else's. ``card_transaction`` takes it before reading. Every *write* to a card's records also
  takes it (lazily, inside ``transaction()`` too), so under the lock a card's records cannot
  change: the compare-and-set done at ``update_*`` time stays true until commit, exactly like a
  SQL row lock.
- **Card images**: a card's reservations and operations live in two hashes,
  ``<prefix>cr:<barcode>`` and ``<prefix>co:<barcode>`` (id -> JSON). The first read about a
  card in a transaction loads both hashes in one ``MULTI``/``EXEC`` (atomic), and later reads
  about that card answer from that image plus the transaction's own pending writes. This is
  what makes ``snapshot()`` consistent: it never mixes two moments of one card. (Across cards
  it is per-card consistent only; nothing in the provider compares two cards.)
- **Buffered writes, one commit script**: inserts and updates are kept in memory and applied
  by one Lua script that first checks that every lock token is still ours (a transaction that
  outlived ``lock_ttl_ms`` is refused instead of overwriting the next holder's work), that
  inserted ids are new and that updated records still have the state the compare-and-set saw;
  then it writes, maintains the indexes and releases the locks. A script runs atomically, so
  readers see all of a transaction or none of it. An exception inside the block just drops the
  buffer (rollback) and releases the locks. A refused commit raises ``LedgerConflict`` and
  writes nothing.

Indexes (sets of ids per state, order reference, reservation and parent operation; hashes
id -> barcode) serve the listings. Amounts are stored as their exact Decimal text and times
as fixed-width ISO-8601 UTC text, as in SQLite. Scripts touch keys derived from the prefix,
so use a standalone Redis (or put a ``{hash tag}`` in ``key_prefix`` on a cluster).

``locking=False`` takes no locks at all: the read-then-write of ``card_transaction`` is then
unprotected (which the contention tests show), while compare-and-set is still checked at
commit. Redis keeps this ledger only as durably as its own persistence settings (AOF with
``appendfsync always`` for the crash-safety invariant).
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Literal, TypeVar

import redis

from fourws_pay.errors import ConfigurationError, FourWSError
from fourws_pay.logs import mask_barcode
from fourws_pay.payments.models import (
    Operation,
    OperationKind,
    OperationState,
    Reservation,
    ReservationState,
)

_DECIMALS = ("amount", "forfeited", "balance_before")
_TIMES = ("created_at", "expires_at", "updated_at", "deadline", "settled_at")
# (index key part, attribute): sets of ids kept per value, for listings and lookups.
_RES_INDEXES = (("rs:", "state"), ("ro:", "order_ref"))
_OP_INDEXES = (("os:", "state"), ("ori:", "reservation_id"), ("opi:", "parent_id"))

Record = TypeVar("Record", Reservation, Operation)
Kind = Literal["r", "o"]

_RELEASE = """
local released = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    released = released + redis.call('DEL', KEYS[i])
  end
end
return released
"""

# KEYS[1]: the id -> barcode hash. ARGV: key prefix, 'r' or 'o', id.
_LOAD_CARD_OF = """
local barcode = redis.call('HGET', KEYS[1], ARGV[3])
if not barcode then return false end
return {
  barcode,
  redis.call('HGETALL', ARGV[1] .. 'cr:' .. barcode),
  redis.call('HGETALL', ARGV[1] .. 'co:' .. barcode),
}
"""

# KEYS[1]: the id -> barcode hash. ARGV: key prefix, 'cr:' or 'co:', ids...
_FETCH = """
local out = {}
for i = 3, #ARGV do
  local barcode = redis.call('HGET', KEYS[1], ARGV[i])
  if barcode then
    out[#out + 1] = redis.call('HGET', ARGV[1] .. ARGV[2] .. barcode, ARGV[i])
  end
end
return out
"""

# KEYS[1]: an index set, KEYS[2]: the id -> barcode hash. The distinct barcodes of its members.
_BARCODES_OF = """
local seen, out = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local barcode = redis.call('HGET', KEYS[2], id)
  if barcode and not seen[barcode] then
    seen[barcode] = true
    out[#out + 1] = barcode
  end
end
return out
"""

# KEYS[1..n]: held lock keys, then data keys. ARGV[1]: n, ARGV[2..n+1]: lock tokens,
# ARGV[n+2]: JSON checks, ARGV[n+3]: JSON commands (key positions index KEYS).
_COMMIT = """
local n = tonumber(ARGV[1])
for i = 1, n do
  if redis.call('GET', KEYS[i]) ~= ARGV[i + 1] then
    return redis.error_reply('FOURWS_LOCK_LOST a card lock expired before commit')
  end
end
for _, c in ipairs(cjson.decode(ARGV[n + 2])) do
  if c[1] == 'absent' then
    if redis.call('HEXISTS', KEYS[c[2]], c[3]) == 1 then
      return redis.error_reply('FOURWS_DUPLICATE id ' .. c[3] .. ' already exists')
    end
  else
    local ok = redis.call('HGET', KEYS[c[2]], c[3]) == c[4]
    if ok then
      local raw = redis.call('HGET', KEYS[c[5]], c[3])
      ok = raw and cjson.decode(raw)['state'] == c[6]
    end
    if not ok then
      return redis.error_reply('FOURWS_CONFLICT ' .. c[3] .. ' changed before commit')
    end
  end
end
for _, c in ipairs(cjson.decode(ARGV[n + 3])) do
  redis.call(c[1], KEYS[c[2]], unpack(c, 3))
end
for i = 1, n do redis.call('DEL', KEYS[i]) end
return 1
"""


class LedgerConflict(FourWSError):
    """A Redis ledger commit was refused (lock expired, record changed, duplicate id).

    Nothing of the transaction was written; the caller may retry the whole operation.
    """


class LedgerLockTimeout(LedgerConflict):
    """A card stayed locked by another transaction for longer than ``lock_timeout``."""


def _ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return _ts(value)
    return value


def _encode(record: Reservation | Operation) -> str:
    data = {f.name: _plain(getattr(record, f.name)) for f in fields(record)}
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _values(raw: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    for name in _DECIMALS:
        if data.get(name) is not None:
            data[name] = Decimal(data[name])
    for name in _TIMES:
        if data.get(name) is not None:
            data[name] = datetime.fromisoformat(data[name])
    return data


def _reservation(raw: str) -> Reservation:
    data = _values(raw)
    data["state"] = ReservationState(data["state"])
    return Reservation(**data)


def _operation(raw: str) -> Operation:
    data = _values(raw)
    data["state"] = OperationState(data["state"])
    data["kind"] = OperationKind(data["kind"])
    return Operation(**data)


def _order(records: Iterable[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (r.created_at, r.id))


@dataclass
class _Card:
    """One card's records as read at one moment (see "Card images" above)."""

    reservations: dict[str, Reservation]
    operations: dict[str, Operation]
    locked: bool = False


@dataclass
class _Pending:
    """Buffered writes of one record type: what was stored (None: inserted) and what will be."""

    base: dict[str, Any] = field(default_factory=dict)
    new: dict[str, Any] = field(default_factory=dict)


class RedisTransaction:
    """``LedgerTransaction`` over card images and a write buffer (see the module docstring)."""

    def __init__(self, store: RedisStore, *, read_only: bool) -> None:
        self._store = store
        self._read_only = read_only
        self._cards: dict[str, _Card] = {}
        self._locks: dict[str, str] = {}
        self._res = _Pending()
        self._ops = _Pending()

    # -- reads -------------------------------------------------------------------------

    def _card(self, barcode: str) -> _Card:
        card = self._cards.get(barcode)
        if card is None:
            card = self._store._load_card(barcode)
            card.locked = barcode in self._locks
            self._cards[barcode] = card
        return card

    def _card_of(self, kind: Kind, record_id: str) -> _Card | None:
        for card in self._cards.values():
            if record_id in (card.reservations if kind == "r" else card.operations):
                return card
        loaded = self._store._load_card_of(kind, record_id)
        if loaded is None:
            return None
        barcode, card = loaded
        if barcode in self._cards:  # keep the image already used: one moment per card
            return self._cards[barcode]
        card.locked = barcode in self._locks
        self._cards[barcode] = card
        return card

    def _on_card(self, kind: Kind, barcode: str) -> list[Any]:
        card = self._card(barcode)
        merged: dict[str, Any] = dict(card.reservations if kind == "r" else card.operations)
        for record_id, record in (self._res if kind == "r" else self._ops).new.items():
            if record.barcode == barcode:
                merged[record_id] = record
            else:
                merged.pop(record_id, None)
        return _order(merged.values())

    def reservations_for_card(
        self, barcode: str, states: Iterable[ReservationState]
    ) -> list[Reservation]:
        wanted = set(states)
        return [r for r in self._on_card("r", barcode) if r.state in wanted]

    def operations_for_card(
        self, barcode: str, states: Iterable[OperationState]
    ) -> list[Operation]:
        wanted = set(states)
        return [o for o in self._on_card("o", barcode) if o.state in wanted]

    def operations_settled_since(self, barcode: str, since: datetime) -> list[Operation]:
        if since.tzinfo is None:
            raise ValueError("ledger times must be timezone-aware")
        return [
            o
            for o in self._on_card("o", barcode)
            if o.state is OperationState.SUCCEEDED
            and o.settled_at is not None
            and o.settled_at >= since
        ]

    def get_reservation(self, reservation_id: str) -> Reservation | None:
        if reservation_id in self._res.new:
            pending: Reservation = self._res.new[reservation_id]
            return pending
        card = self._card_of("r", reservation_id)
        return None if card is None else card.reservations.get(reservation_id)

    def get_operation(self, operation_id: str) -> Operation | None:
        if operation_id in self._ops.new:
            pending: Operation = self._ops.new[operation_id]
            return pending
        card = self._card_of("o", operation_id)
        return None if card is None else card.operations.get(operation_id)

    def _operations_where(
        self, index: str, value: str, keep: Callable[[Operation], bool]
    ) -> list[Operation]:
        """Operations found through an index set, read from their cards' images."""
        barcodes = set(self._store._barcodes_of(index, value))
        barcodes.update(o.barcode for o in self._ops.new.values() if keep(o))
        found: list[Operation] = []
        for barcode in sorted(barcodes):
            found += (o for o in self._on_card("o", barcode) if keep(o))
        return _order(found)

    def operations_for_reservation(self, reservation_id: str) -> list[Operation]:
        return self._operations_where(
            "ori:",
            reservation_id,
            lambda o: o.reservation_id == reservation_id and o.kind is OperationKind.CAPTURE,
        )

    def children_of(self, operation_id: str, kind: OperationKind) -> list[Operation]:
        return self._operations_where(
            "opi:", operation_id, lambda o: o.parent_id == operation_id and o.kind is kind
        )

    # -- writes ------------------------------------------------------------------------

    def _writable(self) -> None:
        if self._read_only:
            raise RuntimeError("snapshot() is read-only")

    def _lock(self, barcode: str) -> None:
        """Hold ``barcode``'s lock and make sure its image was read under it."""
        if self._store.locking and barcode not in self._locks:
            self._hold(barcode)
        card = self._cards.get(barcode)
        if card is None or not card.locked or not self._store.locking:
            card = self._store._load_card(barcode)
            card.locked = self._store.locking
            self._cards[barcode] = card

    def _insert(self, kind: Kind, record: Reservation | Operation) -> None:
        self._writable()
        pending = self._res if kind == "r" else self._ops
        if self._store.locking and record.barcode not in self._locks:
            self._lock(record.barcode)
        card = self._cards.get(record.barcode)
        seen = {} if card is None else card.reservations if kind == "r" else card.operations
        if record.id in pending.new or record.id in seen:
            raise LedgerConflict(f"id {record.id} already exists")
        pending.base[record.id] = None
        pending.new[record.id] = record

    def _update(self, kind: Kind, record: Reservation | Operation, expected: Enum) -> bool:
        self._writable()
        pending = self._res if kind == "r" else self._ops
        if record.id in pending.new:
            current = pending.new[record.id]
        else:
            self._lock(record.barcode)
            current = self._stored(kind, record.id, record.barcode)
        if current is None or current.state != expected:
            return False
        pending.base.setdefault(record.id, current)
        if record.barcode != current.barcode:
            self._lock(record.barcode)
        pending.new[record.id] = record
        return True

    def _stored(self, kind: Kind, record_id: str, barcode: str) -> Any:
        """The stored record, read under its card's lock (it may live on another card)."""
        card = self._cards[barcode]
        records: dict[str, Any] = card.reservations if kind == "r" else card.operations
        if record_id in records:
            return records[record_id]
        loaded = self._store._load_card_of(kind, record_id)
        if loaded is None:
            return None
        self._lock(loaded[0])
        card = self._cards[loaded[0]]
        return (card.reservations if kind == "r" else card.operations).get(record_id)

    def insert_reservation(self, reservation: Reservation) -> None:
        self._insert("r", reservation)

    def insert_operation(self, operation: Operation) -> None:
        self._insert("o", operation)

    def update_reservation(self, reservation: Reservation, expected: ReservationState) -> bool:
        return self._update("r", reservation, expected)

    def update_operation(self, operation: Operation, expected: OperationState) -> bool:
        return self._update("o", operation, expected)

    # -- end ---------------------------------------------------------------------------

    def _hold(self, barcode: str) -> None:
        self._locks[barcode] = self._store._acquire(barcode)

    def _release(self) -> None:
        if self._locks:
            self._store._release(self._locks)
            self._locks = {}

    def _commit(self) -> None:
        if not self._res.new and not self._ops.new:
            self._release()
            return
        self._store._commit(self._locks, self._res, self._ops)
        self._locks = {}


class RedisStore:
    """``LedgerStore`` in Redis keys under ``key_prefix`` (see the module docstring)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        key_prefix: str = "fourws:",
        locking: bool = True,
        lock_ttl_ms: int = 10_000,
        lock_timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        if not key_prefix or any(c.isspace() for c in key_prefix):
            raise ConfigurationError(f"key_prefix must be non-empty without spaces: {key_prefix!r}")
        if lock_ttl_ms < 100:
            raise ConfigurationError("lock_ttl_ms must be at least 100")
        self.key_prefix = key_prefix
        self.locking = locking
        self.lock_ttl_ms = int(lock_ttl_ms)
        self.lock_timeout = float(lock_timeout)
        self._client: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=connect_timeout,
        )
        try:
            self._client.ping()
        except redis.ConnectionError as exc:
            where = url.partition("://")[2].rpartition("@")[2]
            raise ConfigurationError(
                f"the Redis ledger at {where} is not reachable: {exc}"
            ) from None
        self._release_script = self._client.register_script(_RELEASE)
        self._load_card_of_script = self._client.register_script(_LOAD_CARD_OF)
        self._fetch_script = self._client.register_script(_FETCH)
        self._barcodes_of_script = self._client.register_script(_BARCODES_OF)
        self._commit_script = self._client.register_script(_COMMIT)
        self._local = threading.local()

    def _key(self, *parts: str) -> str:
        return self.key_prefix + "".join(parts)

    # -- pieces used by RedisTransaction ------------------------------------------------

    def _load_card(self, barcode: str) -> _Card:
        pipe = self._client.pipeline(transaction=True)
        pipe.hgetall(self._key("cr:", barcode))
        pipe.hgetall(self._key("co:", barcode))
        res, ops = pipe.execute()
        return _Card(
            {k: _reservation(v) for k, v in res.items()},
            {k: _operation(v) for k, v in ops.items()},
        )

    def _load_card_of(self, kind: Kind, record_id: str) -> tuple[str, _Card] | None:
        index = self._key("ridx" if kind == "r" else "oidx")
        found = self._load_card_of_script(keys=[index], args=[self.key_prefix, kind, record_id])
        if not found:
            return None
        barcode, res, ops = found
        return barcode, _Card(
            {k: _reservation(v) for k, v in zip(res[::2], res[1::2], strict=True)},
            {k: _operation(v) for k, v in zip(ops[::2], ops[1::2], strict=True)},
        )

    def _barcodes_of(self, index: str, value: str) -> list[str]:
        keys = [self._key(index, value), self._key("oidx")]
        result: list[str] = self._barcodes_of_script(keys=keys)
        return result

    def _acquire(self, barcode: str) -> str:
        key = self._key("lock:", barcode)
        token = secrets.token_hex(16)
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.0002
        while not self._client.set(key, token, nx=True, px=self.lock_ttl_ms):
            if time.monotonic() >= deadline:
                raise LedgerLockTimeout(
                    f"card {mask_barcode(barcode)} stayed locked for {self.lock_timeout:g}s"
                )
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.005)
        return token

    def _release(self, locks: dict[str, str]) -> None:
        keys = [self._key("lock:", b) for b in locks]
        self._release_script(keys=keys, args=list(locks.values()))

    def _commit(self, locks: dict[str, str], res: _Pending, ops: _Pending) -> None:
        keys = [self._key("lock:", b) for b in locks]
        positions: dict[str, int] = {}
        checks: list[list[Any]] = []
        commands: list[list[Any]] = []

        def at(key: str) -> int:
            if key not in positions:
                keys.append(key)
                positions[key] = len(keys)  # Lua indexes KEYS from 1
            return positions[key]

        def plan(
            pending: _Pending, card: str, index: str, indexes: Sequence[tuple[str, str]]
        ) -> None:
            index_key = at(self._key(index))
            for record_id, record in pending.new.items():
                old = pending.base[record_id]
                if old is None:
                    checks.append(["absent", index_key, record_id])
                else:
                    old_card = at(self._key(card, old.barcode))
                    check = ["state", index_key, record_id, old.barcode, old_card, old.state.value]
                    checks.append(check)
                    if old.barcode != record.barcode:
                        commands.append(["HDEL", old_card, record_id])
                new_card = at(self._key(card, record.barcode))
                commands.append(["HSET", new_card, record_id, _encode(record)])
                commands.append(["HSET", index_key, record_id, record.barcode])
                for part, name in indexes:
                    before = None if old is None else _plain(getattr(old, name))
                    after = _plain(getattr(record, name))
                    if before is not None and before != after:
                        commands.append(["SREM", at(self._key(part, before)), record_id])
                    if after is not None:
                        commands.append(["SADD", at(self._key(part, after)), record_id])

        plan(res, "cr:", "ridx", _RES_INDEXES)
        plan(ops, "co:", "oidx", _OP_INDEXES)
        args: list[str | int] = [len(locks), *locks.values()]
        args += [json.dumps(checks), json.dumps(commands)]
        try:
            self._commit_script(keys=keys, args=args)
        except redis.ResponseError as exc:
            self._release(locks)
            raise LedgerConflict(str(exc).removeprefix("FOURWS_")) from None
        except BaseException:
            self._release(locks)
            raise

    @contextmanager
    def _tx(self, *, card: str | None = None, read_only: bool = False) -> Iterator[Any]:
        if getattr(self._local, "depth", 0):
            raise RuntimeError("ledger transactions do not nest")
        self._local.depth = 1
        try:
            tx = RedisTransaction(self, read_only=read_only)
            try:
                if card is not None and self.locking:
                    tx._hold(card)
                yield tx
            except BaseException:
                tx._release()
                raise
            tx._commit()
        finally:
            self._local.depth = 0

    # -- LedgerStore -------------------------------------------------------------------

    def card_transaction(self, barcode: str) -> Any:
        """The card lock is taken before anything is read (see the module docstring)."""
        return self._tx(card=barcode)

    def transaction(self) -> Any:
        return self._tx()

    def snapshot(self) -> Any:
        return self._tx(read_only=True)

    def _fetch(self, kind: Kind, ids: Iterable[str]) -> list[str]:
        index = self._key("ridx" if kind == "r" else "oidx")
        wanted = sorted(set(ids))
        found: list[str] = []
        for start in range(0, len(wanted), 500):
            batch = wanted[start : start + 500]
            prefix = "cr:" if kind == "r" else "co:"
            raw = self._fetch_script(keys=[index], args=[self.key_prefix, prefix, *batch])
            found += (item for item in raw if item is not None)
        return found

    def get_reservation(self, reservation_id: str) -> Reservation | None:
        found = self._fetch("r", [reservation_id])
        return _reservation(found[0]) if found else None

    def get_operation(self, operation_id: str) -> Operation | None:
        found = self._fetch("o", [operation_id])
        return _operation(found[0]) if found else None

    def _ids(self, kind: Kind, sets: list[list[str]]) -> set[str]:
        """Ids in each of the unions of index sets in ``sets`` (every id when there are none)."""
        if not sets:
            return {
                str(k) for k in self._client.hkeys(self._key("ridx" if kind == "r" else "oidx"))
            }
        if not all(sets):  # an empty union: e.g. states=[]
            return set()
        pipe = self._client.pipeline(transaction=False)
        for keys in sets:
            pipe.sunion(keys)
        results: list[Iterable[str]] = pipe.execute()
        return set.intersection(*(set(members) for members in results))

    def list_reservations(
        self, states: Iterable[ReservationState] | None = None, order_ref: str | None = None
    ) -> list[Reservation]:
        wanted = None if states is None else {ReservationState(s) for s in states}
        sets: list[list[str]] = []
        if wanted is not None:
            sets.append([self._key("rs:", s.value) for s in wanted])
        if order_ref is not None:
            sets.append([self._key("ro:", order_ref)])
        records = [_reservation(raw) for raw in self._fetch("r", self._ids("r", sets))]
        return _order(
            r
            for r in records
            if (wanted is None or r.state in wanted)
            and (order_ref is None or r.order_ref == order_ref)
        )

    def list_operations(
        self,
        states: Iterable[OperationState] | None = None,
        kind: OperationKind | None = None,
    ) -> list[Operation]:
        wanted = None if states is None else {OperationState(s) for s in states}
        sets: list[list[str]] = []
        if wanted is not None:
            sets.append([self._key("os:", s.value) for s in wanted])
        records = [_operation(raw) for raw in self._fetch("o", self._ids("o", sets))]
        return _order(
            o
            for o in records
            if (wanted is None or o.state in wanted) and (kind is None or o.kind is kind)
        )

    def drop(self) -> None:
        """Delete every key under this prefix (tests use a throw-away prefix per run)."""
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.key_prefix) + "*"
        batch: list[str] = []
        for key in self._client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self._client.delete(*batch)
                batch.clear()
        if batch:
            self._client.delete(*batch)

    def close(self) -> None:
        self._client.close()


def open_store(url: str, **options: Any) -> RedisStore:
    """Entry point for ``fourws_pay.ledger.open_store`` (``redis://``)."""
    return RedisStore(url, **options)
