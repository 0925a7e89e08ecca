"""The Redis ledger: per-card locks, atomic card reads, buffered writes committed by one script.

Redis has no multi-statement transactions that can read and then decide, so this store builds
the protocol's guarantees from three pieces:

- **A per-card lock** ``<prefix>lock:<barcode>``: ``SET NX PX`` with a random token, released
  with a compare-and-delete script so that a holder whose lock expired cannot free someone
  else's. ``card_transaction`` takes it before reading. Every *write* to a card's records also
  takes it (lazily, inside ``transaction()`` too), so under the lock a card's records cannot
  change: the compare-and-set done at ``update_*`` time stays true until commit, exactly like a
  SQL row lock.
- **Card images**: the first read about a card in a transaction runs one script that returns
  the card's *live* records (active reservations, operations not yet succeeded or failed) and
  its ``settled_window`` most recently settled operations, all at one moment. Later reads
  about that card answer from that image plus the transaction's own pending writes, and a
  record in the image always wins over a copy fetched later. A transaction therefore costs
  what the card has *open*, not its whole history, and ``snapshot()`` never mixes two moments
  of one card for what the provider asks (holds, in-flight operations, settlements since a
  recent balance read). Reads beyond the image (terminal records, older settlements, lookups
  by id) are fetched when asked; under the card lock nothing changes between the two reads.
- **Buffered writes, one commit script**: inserts and updates are kept in memory and applied
  by one Lua script that first checks that every lock token is still ours (a transaction that
  outlived ``lock_ttl_ms`` is refused instead of overwriting the next holder's work), that
  inserted ids are new and that updated records still have the state the compare-and-set saw;
  then it writes the records, maintains the indexes and releases the locks. A script runs
  atomically, so readers see all of a transaction or none of it. An exception inside the
  block drops the buffer (rollback) and releases the locks. A refused commit raises
  ``LedgerConflict`` and writes nothing.

Each record is one key (``r:<id>``, ``o:<id>``: JSON with amounts as exact Decimal text and
times as fixed-width ISO-8601 UTC, as in SQLite); sets of ids per state, order reference,
card, reservation and parent operation, and a per-card sorted set of settlement times, are
the indexes. Scripts derive keys from the prefix, so use a standalone Redis (on a cluster, put
a ``{hash tag}`` in ``key_prefix`` so that every key lands in one slot).

``locking=False`` takes no locks at all: the read-then-write of ``card_transaction`` is then
unprotected (which the contention tests show), while compare-and-set is still checked at
commit. Redis keeps this ledger only as durably as its own persistence settings (AOF with
``appendfsync always`` for the crash-safety invariant).

Redis keeps any string, so the widths the SQL stores' columns have (``fourws_pay.limits``)
are checked when a write is buffered: a record another store could not keep is refused here
too (``InvalidInputError``, nothing written), and a ledger moves between stores whole.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Literal, TypeVar

import redis

from fourws_pay.errors import ConfigurationError, LedgerConflict, LedgerLockTimeout
from fourws_pay.ledger._errors import mapped_errors
from fourws_pay.ledger._sql import TEXT_WIDTHS, check_lock_key, split_options
from fourws_pay.limits import check_record
from fourws_pay.logs import mask_barcode
from fourws_pay.payments.models import (
    IssuedCard,
    IssuedCardState,
    Operation,
    OperationKind,
    OperationState,
    OrderRefund,
    OrderRefundState,
    RefundStrategy,
    Reservation,
    ReservationState,
    refund_parts_from_json,
    refund_parts_json,
)
from fourws_pay.payments.states import (
    LIVE_OPERATION_STATES,
    LIVE_RESERVATION_STATES,
    issue_lock_key,
    order_refund_lock_key,
)

_DECIMALS = ("amount", "forfeited", "balance_before")
_TIMES = (
    "created_at",
    "expires_at",
    "updated_at",
    "deadline",
    "settled_at",
    "start_validity",
    "end_validity",
    "delivered_at",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


Record = TypeVar("Record", Reservation, Operation, IssuedCard, OrderRefund)
Kind = Literal["r", "o", "i", "f"]

_RELEASE = """
local released = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    released = released + redis.call('DEL', KEYS[i])
  end
end
return released
"""

# image(prefix, barcode, window): live reservations, live operations, the `window` most recently
# settled operations, and 1 when those are all of the card's settled operations.
_IMAGE = """
local function records(prefix, kind, set)
  local out = {}
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    local raw = redis.call('GET', prefix .. kind .. id)
    if raw then out[#out + 1] = raw end
  end
  return out
end
local function image(prefix, barcode, window)
  local settled = {}
  local zset = prefix .. 'osz:' .. barcode
  for _, id in ipairs(redis.call('ZREVRANGE', zset, 0, window - 1)) do
    local raw = redis.call('GET', prefix .. 'o:' .. id)
    if raw then settled[#settled + 1] = raw end
  end
  local complete = 0
  if redis.call('ZCARD', zset) <= window then complete = 1 end
  return {
    records(prefix, 'r:', prefix .. 'rl:' .. barcode),
    records(prefix, 'o:', prefix .. 'ol:' .. barcode),
    settled,
    complete,
  }
end
"""

# ARGV: prefix, window, mode ('card', 'r:' or 'o:'), barcode or id.
# 'card': {image}. 'r:'/'o:': {image of the record's card, record, barcode, operations of the
# reservation ('r:' only)}, or {false} when there is no such record.
_READ = (
    _IMAGE
    + """
local prefix, window = ARGV[1], tonumber(ARGV[2])
if ARGV[3] == 'card' then return {image(prefix, ARGV[4], window)} end
local raw = redis.call('GET', prefix .. ARGV[3] .. ARGV[4])
if not raw then return {false} end
local barcode = cjson.decode(raw)['barcode']
local children = {}
if ARGV[3] == 'r:' then children = records(prefix, 'o:', prefix .. 'ori:' .. ARGV[4]) end
return {image(prefix, barcode, window), raw, barcode, children}
"""
)

# KEYS: index sets. ARGV: prefix, 'r:' or 'o:'. The records of the union of the sets.
_FETCH_SETS = """
local out = {}
for _, id in ipairs(redis.call('SUNION', unpack(KEYS))) do
  local raw = redis.call('GET', ARGV[1] .. ARGV[2] .. id)
  if raw then out[#out + 1] = raw end
end
return out
"""

# KEYS[1]: a card's settlement sorted set. ARGV: prefix, minimum score (microseconds).
_FETCH_SETTLED = """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], '+inf')) do
  local raw = redis.call('GET', ARGV[1] .. 'o:' .. id)
  if raw then out[#out + 1] = raw end
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
  local raw = redis.call('GET', KEYS[c[2]])
  if c[1] == 'absent' then
    if raw then
      return redis.error_reply('FOURWS_DUPLICATE ' .. KEYS[c[2]] .. ' already exists')
    end
  else
    local ok = false
    if raw then
      local stored = cjson.decode(raw)
      ok = stored['state'] == c[5] and stored[c[3]] == c[4]
    end
    if not ok then
      return redis.error_reply('FOURWS_CONFLICT ' .. KEYS[c[2]] .. ' changed before commit')
    end
  end
end
for _, c in ipairs(cjson.decode(ARGV[n + 3])) do
  redis.call(c[1], KEYS[c[2]], unpack(c, 3))
end
for i = 1, n do redis.call('DEL', KEYS[i]) end
return 1
"""


def _ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _micros(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return (value - _EPOCH) // _MICROSECOND


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):  # an order refund's parts
        return refund_parts_json(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return _ts(value)
    return value


def _encode(record: Reservation | Operation | IssuedCard | OrderRefund) -> str:
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


def _issued_card(raw: str) -> IssuedCard:
    data = _values(raw)
    data["state"] = IssuedCardState(data["state"])
    return IssuedCard(**data)


def _order_refund(raw: str) -> OrderRefund:
    data = _values(raw)
    data["state"] = OrderRefundState(data["state"])
    data["strategy"] = RefundStrategy(data["strategy"])
    data["parts"] = refund_parts_from_json(data["parts"])
    return OrderRefund(**data)


def _decode(kind: Kind, raw: str) -> Any:
    if kind == "i":
        return _issued_card(raw)
    if kind == "f":
        return _order_refund(raw)
    return _reservation(raw) if kind == "r" else _operation(raw)


def _order(records: Iterable[Record]) -> list[Record]:
    return sorted(
        records,
        key=lambda r: (
            (r.created_at, r.line_id, r.line_index, r.id)
            if isinstance(r, IssuedCard)
            else (r.created_at, "", 0, r.id)
        ),
    )


def _lock_key(kind: Kind, record: Any) -> str:
    """The lock that guards a record: its card's, or for a sold card its order's issuing
    lock (its barcode arrives later, and its order's lock is what issuing holds); for an
    order refund, its order's refund lock."""
    if kind == "f":
        return order_refund_lock_key(record.order_ref)
    return issue_lock_key(record.order_ref) if kind == "i" else str(record.barcode)


def _set_members(kind: Kind, record: Any) -> set[str]:
    """The index sets (key suffixes) that list ``record``."""
    if kind == "i":
        return {f"is:{record.state.value}", f"io:{record.order_ref}"}
    if kind == "f":
        return {f"fs:{record.state.value}", f"fo:{record.order_ref}"}
    if kind == "r":
        members = {
            f"rs:{record.state.value}",
            f"ro:{record.order_ref}",
            f"ra:{record.barcode}",
        }
        if record.state in LIVE_RESERVATION_STATES:
            members.add(f"rl:{record.barcode}")
        return members
    members = {
        f"os:{record.state.value}",
        f"ori:{record.reservation_id}",
        f"oa:{record.barcode}",
    }
    if record.parent_id is not None:
        members.add(f"opi:{record.parent_id}")
    if record.state in LIVE_OPERATION_STATES:
        members.add(f"ol:{record.barcode}")
    return members


def _settlement(record: Any) -> tuple[str, str] | None:
    """(sorted set key suffix, score) for a succeeded operation with a settlement time."""
    if (
        isinstance(record, Operation)
        and record.state is OperationState.SUCCEEDED
        and record.settled_at is not None
    ):
        return f"osz:{record.barcode}", str(_micros(record.settled_at))
    return None


@dataclass
class _Card:
    """What one script returned about a card at one moment (see "Card images" above)."""

    reservations: dict[str, Reservation]
    operations: dict[str, Operation]
    settled: dict[str, Operation]
    complete: bool
    locked: bool = False

    def covers_settlements_since(self, since: datetime) -> bool:
        if self.complete:
            return True
        times = [o.settled_at for o in self.settled.values() if o.settled_at is not None]
        return bool(times) and since > min(times)

    def find(self, kind: Kind, record_id: str) -> Any:
        if kind in ("i", "f"):
            return None  # sold cards and refund plans are never part of a card image
        if kind == "r":
            return self.reservations.get(record_id)
        return self.operations.get(record_id) or self.settled.get(record_id)


def _card(found: list[Any]) -> _Card:
    res, ops, settled, complete = found
    return _Card(
        {r.id: r for r in map(_reservation, res)},
        {o.id: o for o in map(_operation, ops)},
        {o.id: o for o in map(_operation, settled)},
        bool(complete),
    )


@dataclass
class _Pending:
    """Buffered writes of one record type: what was stored (None: inserted) and what will be."""

    base: dict[str, Any] = field(default_factory=dict)
    new: dict[str, Any] = field(default_factory=dict)


class RedisTransaction:
    """``LedgerTransaction`` over card images and a write buffer (see the module docstring)."""

    def __init__(self, records: RedisRecords, *, read_only: bool) -> None:
        self._records = records
        self._read_only = read_only
        self._cards: dict[str, _Card] = {}
        self._fetched: dict[Kind, dict[str, Any]] = {"r": {}, "o": {}, "i": {}, "f": {}}
        self._locks: dict[str, str] = {}
        self._by_reservation: dict[str, set[str]] = {}
        self._pending: dict[Kind, _Pending] = {
            "r": _Pending(),
            "o": _Pending(),
            "i": _Pending(),
            "f": _Pending(),
        }

    # -- reads -------------------------------------------------------------------------

    def _install(self, barcode: str, card: _Card) -> _Card:
        """Keep the first image of a card: one moment per card."""
        if barcode not in self._cards:
            card.locked = barcode in self._locks
            self._cards[barcode] = card
        return self._cards[barcode]

    def _card(self, barcode: str) -> _Card:
        card = self._cards.get(barcode)
        if card is None:
            card = self._install(barcode, self._records.load_card(barcode))
        return card

    def _known(self, kind: Kind, record_id: str) -> Any:
        for card in self._cards.values():
            record = card.find(kind, record_id)
            if record is not None:
                return record
        return self._fetched[kind].get(record_id)

    def _adopt(self, kind: Kind, raws: Iterable[str]) -> dict[str, Any]:
        """Records fetched beyond the images; a version already seen in this transaction wins."""
        out: dict[str, Any] = {}
        for raw in raws:
            record = _decode(kind, raw)
            known = self._known(kind, record.id)
            if known is None:
                self._fetched[kind][record.id] = known = record
            out[record.id] = known
        return out

    def _merged(self, kind: Kind, found: dict[str, Any], keep: Callable[[Any], bool]) -> list[Any]:
        """``found`` with this transaction's own writes laid over it, filtered and ordered."""
        pending = self._pending[kind].new
        result = {i: r for i, r in found.items() if i not in pending and keep(r)}
        result.update((i, r) for i, r in pending.items() if keep(r))
        return _order(result.values())

    def reservations_for_card(
        self, barcode: str, states: Iterable[ReservationState]
    ) -> list[Reservation]:
        wanted = set(states)
        card = self._card(barcode)
        found: dict[str, Any] = dict(card.reservations)
        if not wanted <= LIVE_RESERVATION_STATES:
            found = {**self._adopt("r", self._records.fetch_sets("r", [f"ra:{barcode}"])), **found}
        return self._merged("r", found, lambda r: r.barcode == barcode and r.state in wanted)

    def operations_for_card(
        self, barcode: str, states: Iterable[OperationState]
    ) -> list[Operation]:
        wanted = set(states)
        card = self._card(barcode)
        found: dict[str, Any] = {**card.settled, **card.operations}
        if not wanted <= LIVE_OPERATION_STATES:
            found = {**self._adopt("o", self._records.fetch_sets("o", [f"oa:{barcode}"])), **found}
        return self._merged("o", found, lambda o: o.barcode == barcode and o.state in wanted)

    def operations_settled_since(self, barcode: str, since: datetime) -> list[Operation]:
        _micros(since)  # refuses a naive time
        card = self._card(barcode)
        found: dict[str, Any] = {**card.settled, **card.operations}
        if not card.covers_settlements_since(since):
            fetched = self._adopt("o", self._records.fetch_settled(barcode, since))
            found = {**fetched, **found}
        return self._merged(
            "o",
            found,
            lambda o: (
                o.barcode == barcode
                and o.state is OperationState.SUCCEEDED
                and o.settled_at is not None
                and o.settled_at >= since
            ),
        )

    def _get(self, kind: Kind, record_id: str) -> Any:
        pending = self._pending[kind].new
        if record_id in pending:
            return pending[record_id]
        known = self._known(kind, record_id)
        if known is not None:
            return known
        if kind in ("i", "f"):
            raw = self._records.client.get(self._records.key(f"{kind}:", record_id))
            return None if raw is None else self._adopt(kind, [str(raw)])[record_id]
        loaded = self._records.load_record(kind, record_id)
        if loaded is None:
            return None
        card, raw, barcode, children = loaded
        self._install(barcode, card)
        if kind == "r":
            self._by_reservation[record_id] = set(self._adopt("o", children))
        return self._adopt(kind, [raw])[record_id]

    def get_reservation(self, reservation_id: str) -> Reservation | None:
        with _mapped():
            found: Reservation | None = self._get("r", reservation_id)
        return found

    def get_operation(self, operation_id: str) -> Operation | None:
        with _mapped():
            found: Operation | None = self._get("o", operation_id)
        return found

    def captures_of_reservation(self, reservation_id: str) -> list[Operation]:
        known = self._by_reservation.get(reservation_id)
        if known is not None:  # read together with the reservation
            found = {i: self._known("o", i) for i in known}
        else:
            found = self._adopt("o", self._records.fetch_sets("o", [f"ori:{reservation_id}"]))
        return self._merged(
            "o",
            found,
            lambda o: o.reservation_id == reservation_id and o.kind is OperationKind.CAPTURE,
        )

    def children_of(self, operation_id: str, kind: OperationKind) -> list[Operation]:
        found = self._adopt("o", self._records.fetch_sets("o", [f"opi:{operation_id}"]))
        return self._merged("o", found, lambda o: o.parent_id == operation_id and o.kind is kind)

    def get_issued_card(self, card_id: str) -> IssuedCard | None:
        with _mapped():
            found: IssuedCard | None = self._get("i", card_id)
        return found

    def issued_cards_for_order(self, order_ref: str) -> list[IssuedCard]:
        found = self._adopt("i", self._records.fetch_sets("i", [f"io:{order_ref}"]))
        return self._merged("i", found, lambda c: c.order_ref == order_ref)

    def get_order_refund(self, refund_id: str) -> OrderRefund | None:
        with _mapped():
            found: OrderRefund | None = self._get("f", refund_id)
        return found

    def order_refunds_for_order(self, order_ref: str) -> list[OrderRefund]:
        found = self._adopt("f", self._records.fetch_sets("f", [f"fo:{order_ref}"]))
        return self._merged("f", found, lambda r: r.order_ref == order_ref)

    # -- writes ------------------------------------------------------------------------

    def _writable(self) -> None:
        if self._read_only:
            raise RuntimeError("snapshot() is read-only")

    def _lock(self, barcode: str) -> None:
        """Hold ``barcode``'s lock and make sure its image was read under it."""
        if not self._records.locking:
            return
        if barcode not in self._locks:
            self._locks[barcode] = self._records.acquire(barcode)
        card = self._cards.get(barcode)
        if card is None or not card.locked:
            card = self._records.load_card(barcode)
            card.locked = True
            self._cards[barcode] = card
            self._by_reservation.clear()
            for kind, fetched in self._fetched.items():  # read before the lock: may be stale
                for stale in [i for i, r in fetched.items() if _lock_key(kind, r) == barcode]:
                    del fetched[stale]

    def _stored(self, kind: Kind, record_id: str, barcode: str) -> Any:
        """The stored record, read under its card's lock (it may live on another card)."""
        self._lock(barcode)
        card = self._cards.get(barcode)
        record = None if card is None or not card.locked else card.find(kind, record_id)
        if record is None:
            record = self._records.get(kind, record_id)
            if record is not None and _lock_key(kind, record) != barcode and self._records.locking:
                self._lock(_lock_key(kind, record))
                record = self._records.get(kind, record_id)
        return record

    def _insert(
        self, kind: Kind, record: Reservation | Operation | IssuedCard | OrderRefund
    ) -> None:
        self._writable()
        _encode(record)  # refuses naive times now rather than at commit
        check_record(record, TEXT_WIDTHS[type(record)])  # the SQL stores' widths, here too
        pending = self._pending[kind]
        self._lock(_lock_key(kind, record))
        if record.id in pending.new or self._known(kind, record.id) is not None:
            raise LedgerConflict(f"id {record.id} already exists")
        pending.base[record.id] = None
        pending.new[record.id] = record

    def _update(
        self,
        kind: Kind,
        record: Reservation | Operation | IssuedCard | OrderRefund,
        expected: Enum,
    ) -> bool:
        self._writable()
        _encode(record)
        check_record(record, TEXT_WIDTHS[type(record)])
        pending = self._pending[kind]
        if record.id in pending.new:
            current = pending.new[record.id]
        else:
            current = self._stored(kind, record.id, _lock_key(kind, record))
        if current is None or current.state != expected:
            return False
        pending.base.setdefault(record.id, current)
        self._lock(_lock_key(kind, record))
        pending.new[record.id] = record
        return True

    def insert_reservation(self, reservation: Reservation) -> None:
        self._insert("r", reservation)

    def insert_operation(self, operation: Operation) -> None:
        self._insert("o", operation)

    def update_reservation(self, reservation: Reservation, expected: ReservationState) -> bool:
        return self._update("r", reservation, expected)

    def update_operation(self, operation: Operation, expected: OperationState) -> bool:
        return self._update("o", operation, expected)

    def insert_issued_card(self, card: IssuedCard) -> None:
        self._insert("i", card)

    def update_issued_card(self, card: IssuedCard, expected: IssuedCardState) -> bool:
        return self._update("i", card, expected)

    def insert_order_refund(self, refund: OrderRefund) -> None:
        self._insert("f", refund)

    def update_order_refund(self, refund: OrderRefund, expected: OrderRefundState) -> bool:
        return self._update("f", refund, expected)

    # -- begin and end (called by RedisStore) ------------------------------------------

    def lock_at_entry(self, barcode: str) -> None:
        """Take ``barcode``'s lock before anything is read: callers stamp times inside the
        critical section and rely on them following the lock order."""
        if self._records.locking and barcode not in self._locks:
            self._locks[barcode] = self._records.acquire(barcode)

    def abort(self) -> None:
        """Drop the buffered writes and release the locks (rollback)."""
        for pending in self._pending.values():
            pending.base.clear()
            pending.new.clear()
        if self._locks:
            locks, self._locks = self._locks, {}
            self._records.release(locks)

    def commit(self) -> None:
        """Apply the buffered writes with one script (which releases the locks)."""
        if not any(p.new for p in self._pending.values()):
            self.abort()
            return
        locks, self._locks = self._locks, {}
        self._records.commit(locks, self._pending)


class RedisRecords:
    """The keys and scripts of one prefix: all that ``RedisTransaction`` and ``RedisStore``
    share. The transaction reads card images and records and takes, releases and commits
    under locks only through these methods; the store hands it one and never looks inside."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        key_prefix: str,
        locking: bool,
        lock_ttl_ms: int,
        lock_timeout: float,
        settled_window: int,
    ) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.locking = locking
        self.lock_ttl_ms = lock_ttl_ms
        self.lock_timeout = lock_timeout
        self.settled_window = settled_window
        self._release_script = client.register_script(_RELEASE)
        self._read_script = client.register_script(_READ)
        self._fetch_sets_script = client.register_script(_FETCH_SETS)
        self._fetch_settled_script = client.register_script(_FETCH_SETTLED)
        self._commit_script = client.register_script(_COMMIT)

    def key(self, *parts: str) -> str:
        return self.key_prefix + "".join(parts)

    def _read(self, mode: str, subject: str) -> Any:
        args: list[str | int] = [self.key_prefix, self.settled_window, mode, subject]
        return self._read_script(args=args)

    def load_card(self, barcode: str) -> _Card:
        return _card(self._read("card", barcode)[0])

    def load_record(self, kind: Kind, record_id: str) -> tuple[_Card, str, str, list[str]] | None:
        """A record, its card's image (read with it) and, for a reservation, its operations."""
        found = self._read(f"{kind}:", record_id)
        if not found[0]:
            return None
        image, raw, barcode, children = found
        return _card(image), raw, barcode, children

    def get(self, kind: Kind, record_id: str) -> Any:
        raw = self.client.get(self.key(kind, ":", record_id))
        return None if raw is None else _decode(kind, str(raw))

    def fetch_sets(self, kind: Kind, sets: list[str]) -> list[str]:
        keys = [self.key(s) for s in sets]
        found: list[str] = self._fetch_sets_script(keys=keys, args=[self.key_prefix, f"{kind}:"])
        return found

    def fetch_settled(self, barcode: str, since: datetime) -> list[str]:
        keys = [self.key("osz:", barcode)]
        args: list[str | int] = [self.key_prefix, _micros(since)]
        found: list[str] = self._fetch_settled_script(keys=keys, args=args)
        return found

    def _retry_locked(self, barcode: str, attempt: Callable[[], Any]) -> Any:
        """Repeat ``attempt`` (which returns 0 while the card is locked) with jittered backoff."""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.0002
        while (result := attempt()) == 0:
            if time.monotonic() >= deadline:
                raise LedgerLockTimeout(
                    f"card {mask_barcode(barcode)} stayed locked for {self.lock_timeout:g}s"
                )
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.004)
        return result

    def acquire(self, barcode: str) -> str:
        key = self.key("lock:", barcode)
        token = secrets.token_hex(16)
        self._retry_locked(
            barcode, lambda: 1 if self.client.set(key, token, nx=True, px=self.lock_ttl_ms) else 0
        )
        return token

    def release(self, locks: dict[str, str]) -> None:
        keys = [self.key("lock:", b) for b in locks]
        self._release_script(keys=keys, args=list(locks.values()))

    def commit(self, locks: dict[str, str], pending: dict[Kind, _Pending]) -> None:
        keys = [self.key("lock:", b) for b in locks]
        positions: dict[str, int] = {}
        checks: list[list[Any]] = []
        commands: list[list[Any]] = []

        def at(suffix: str) -> int:
            key = self.key(suffix)
            if key not in positions:
                keys.append(key)
                positions[key] = len(keys)  # Lua indexes KEYS from 1
            return positions[key]

        for kind, writes in pending.items():
            for record_id, record in writes.new.items():
                old = writes.base[record_id]
                here = at(f"{kind}:{record_id}")
                if old is None:
                    checks.append(["absent", here])
                else:
                    # a plan has no card: its order is what must not have changed
                    field = "order_ref" if kind == "f" else "barcode"
                    checks.append(["state", here, field, getattr(old, field), old.state.value])
                commands.append(["SET", here, _encode(record)])
                before = set() if old is None else _set_members(kind, old)
                after = _set_members(kind, record)
                for suffix in sorted(before - after):
                    commands.append(["SREM", at(suffix), record_id])
                for suffix in sorted(after - before):
                    commands.append(["SADD", at(suffix), record_id])
                was = None if old is None else _settlement(old)
                now = _settlement(record)
                if was is not None and (now is None or was[0] != now[0]):
                    commands.append(["ZREM", at(was[0]), record_id])
                if now is not None and now != was:
                    commands.append(["ZADD", at(now[0]), now[1], record_id])

        args: list[str | int] = [len(locks), *locks.values()]
        args += [json.dumps(checks), json.dumps(commands)]
        try:
            self._commit_script(keys=keys, args=args)
        except redis.ResponseError as exc:
            self.release(locks)
            raise LedgerConflict(str(exc).removeprefix("FOURWS_")) from None
        except BaseException:
            self.release(locks)
            raise


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
        settled_window: int = 16,
        connect_timeout: float = 10.0,
    ) -> None:
        if not key_prefix or any(c.isspace() for c in key_prefix):
            raise ConfigurationError(f"key_prefix must be non-empty without spaces: {key_prefix!r}")
        if lock_ttl_ms < 100:
            raise ConfigurationError("lock_ttl_ms must be at least 100")
        if settled_window < 1:
            raise ConfigurationError("settled_window must be at least 1")
        self.key_prefix = key_prefix
        self.locking = locking
        self.lock_ttl_ms = int(lock_ttl_ms)
        self.lock_timeout = float(lock_timeout)
        self.settled_window = int(settled_window)
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
        self._records = RedisRecords(
            self._client,
            key_prefix=self.key_prefix,
            locking=self.locking,
            lock_ttl_ms=self.lock_ttl_ms,
            lock_timeout=self.lock_timeout,
            settled_window=self.settled_window,
        )
        self._local = threading.local()

    def _key(self, *parts: str) -> str:
        return self._records.key(*parts)

    @contextmanager
    def _tx(
        self, *, card: str | None = None, read_only: bool = False
    ) -> Iterator[RedisTransaction]:
        if getattr(self._local, "depth", 0) and self._local.pid == os.getpid():
            raise RuntimeError("ledger transactions do not nest")
        self._local.depth, self._local.pid = 1, os.getpid()
        try:
            with _mapped():
                tx = RedisTransaction(self._records, read_only=read_only)
                try:
                    if card is not None:
                        tx.lock_at_entry(card)
                    yield tx
                except BaseException:
                    with suppress(redis.RedisError):
                        tx.abort()
                    raise
                tx.commit()
        finally:
            self._local.depth = 0

    # -- LedgerStore -------------------------------------------------------------------

    def card_transaction(self, barcode: str) -> AbstractContextManager[RedisTransaction]:
        """The card lock is taken before anything is read (see the module docstring)."""
        check_lock_key(barcode)
        return self._tx(card=barcode)

    def transaction(self) -> AbstractContextManager[RedisTransaction]:
        return self._tx()

    def snapshot(self) -> AbstractContextManager[RedisTransaction]:
        return self._tx(read_only=True)

    def get_reservation(self, reservation_id: str) -> Reservation | None:
        with _mapped():
            found: Reservation | None = self._records.get("r", reservation_id)
        return found

    def get_operation(self, operation_id: str) -> Operation | None:
        with _mapped():
            found: Operation | None = self._records.get("o", operation_id)
        return found

    def _listed(self, kind: Kind, unions: list[list[str]]) -> list[Any]:
        """Records in each of the unions of index sets (all of them when there is none)."""
        states: type[Enum] = {
            "r": ReservationState,
            "o": OperationState,
            "i": IssuedCardState,
            "f": OrderRefundState,
        }[kind]
        unions = unions or [[f"{kind}s:{s.value}" for s in states]]
        if not all(unions):  # an empty union: e.g. states=[]
            return []
        pipe = self._client.pipeline(transaction=False)
        for sets in unions:
            pipe.sunion([self._key(s) for s in sets])
        members: list[Iterable[str]] = pipe.execute()
        ids = sorted(set.intersection(*(set(m) for m in members)))
        records = []
        for start in range(0, len(ids), 500):
            batch = [self._key(kind, ":", i) for i in ids[start : start + 500]]
            records += [_decode(kind, str(raw)) for raw in self._client.mget(batch) if raw]
        return records

    def list_reservations(
        self, states: Iterable[ReservationState] | None = None, order_ref: str | None = None
    ) -> list[Reservation]:
        wanted = None if states is None else {ReservationState(s) for s in states}
        unions: list[list[str]] = []
        if wanted is not None:
            unions.append([f"rs:{s.value}" for s in wanted])
        if order_ref is not None:
            unions.append([f"ro:{order_ref}"])
        with _mapped():
            records: list[Reservation] = self._listed("r", unions)
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
        unions: list[list[str]] = []
        if wanted is not None:
            unions.append([f"os:{s.value}" for s in wanted])
        with _mapped():
            records: list[Operation] = self._listed("o", unions)
        return _order(
            o
            for o in records
            if (wanted is None or o.state in wanted) and (kind is None or o.kind is kind)
        )

    def get_issued_card(self, card_id: str) -> IssuedCard | None:
        with _mapped():
            found: IssuedCard | None = self._records.get("i", card_id)
        return found

    def list_issued_cards(
        self, states: Iterable[IssuedCardState] | None = None, order_ref: str | None = None
    ) -> list[IssuedCard]:
        wanted = None if states is None else {IssuedCardState(s) for s in states}
        unions: list[list[str]] = []
        if wanted is not None:
            unions.append([f"is:{s.value}" for s in wanted])
        if order_ref is not None:
            unions.append([f"io:{order_ref}"])
        with _mapped():
            records: list[IssuedCard] = self._listed("i", unions)
        return _order(
            c
            for c in records
            if (wanted is None or c.state in wanted)
            and (order_ref is None or c.order_ref == order_ref)
        )

    def list_order_refunds(
        self, states: Iterable[OrderRefundState] | None = None, order_ref: str | None = None
    ) -> list[OrderRefund]:
        wanted = None if states is None else {OrderRefundState(s) for s in states}
        unions: list[list[str]] = []
        if wanted is not None:
            unions.append([f"fs:{s.value}" for s in wanted])
        if order_ref is not None:
            unions.append([f"fo:{order_ref}"])
        with _mapped():
            records: list[OrderRefund] = self._listed("f", unions)
        return _order(
            r
            for r in records
            if (wanted is None or r.state in wanted)
            and (order_ref is None or r.order_ref == order_ref)
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


def _mapped() -> AbstractContextManager[None]:
    """Redis errors as ledger errors (lock timeouts and refused commits are mapped where
    they are detected, in ``_retry_locked`` and ``_commit``)."""
    return mapped_errors(redis.RedisError, store="Redis")


def open_store(url: str, **options: Any) -> RedisStore:
    """Entry point for ``fourws_pay.ledger.open_store`` (``redis://``).

    Store options may also come from the URL query:
    ``key_prefix``, ``lock_ttl_ms``, ``lock_timeout``, ``settled_window``.
    Keyword arguments win over the URL.
    """
    known: dict[str, Callable[[str], Any]] = {
        "key_prefix": str,
        "lock_ttl_ms": int,
        "lock_timeout": float,
        "settled_window": int,
    }
    driver_url, from_url = split_options(url, known)
    return RedisStore(driver_url, **{**from_url, **options})
