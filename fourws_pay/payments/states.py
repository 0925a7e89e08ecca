"""The ledger's state machines, in one place: the states, the moves, what each state means.

Like h11's ``_state.py``: the tables are data, every grouping the rest of the code relies on
is derived here from them, and stores, flows and host integrations import these names
instead of spelling states or groupings of their own.

Reservations (one-way)::

    active -> captured | released | expired

Operations (a capture or a refund; one-way but for one move back, see below)::

    queued --(its turn)--> prepared -> sending -> enqueued -> succeeded | failed
      |                       |           |          |
      +-> failed              +-> failed  +-> unknown <-+   unknown -> succeeded | failed
                              +-> queued                     | manual_review
                                                           manual_review -> succeeded | failed

- ``queued``: accepted durably while another operation of the card was unresolved; waits
  its turn (oldest first). Its hold counts and never expires (invariants 6, 17). At its turn
  it becomes ``prepared`` (the claim) or, when it can no longer be done (its reservation
  ended), ``failed``. Nothing was sent.
- ``prepared``: the card is claimed for this operation; the card is read for its evidence.
  ``prepared -> queued`` is the only move back: a claim that was never sent (the read
  failed, or its worker stopped) gives its turn back instead of failing what the shop was
  promised. No money moved, so nothing about the money goes backwards.
- ``sending``: committed before the request may leave (invariant 4); ``enqueued``: 4WS took
  it and will call back; ``unknown``: the outcome is ambiguous (reconcile judges it);
  ``manual_review``: reconcile could not judge it; an authenticated callback or an
  operator's ``resolve`` settles it.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum


class ReservationState(StrEnum):
    ACTIVE = "active"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"


class OperationKind(StrEnum):
    """What an operation asks 4WS to do.

    ``capture`` and ``refund`` move a paying card's balance (negative and positive
    updateGiftcard). ``generate`` asks generateGiftcards for the barcodes of sold cards (no
    money; its "card" is the order's issuing lock key, ``issue_lock_key``). ``activate``
    loads a sold card with its paid amount (a positive updateGiftcard on the new barcode).
    """

    CAPTURE = "capture"
    REFUND = "refund"
    GENERATE = "generate"
    ACTIVATE = "activate"


class OperationState(StrEnum):
    QUEUED = "queued"
    PREPARED = "prepared"
    SENDING = "sending"
    ENQUEUED = "enqueued"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"
    MANUAL_REVIEW = "manual_review"


class IssuedCardState(StrEnum):
    """Where a sold card is (``issuing``); every change of a sold card is a change of state,
    so a compare-and-set on the state alone sees every lost race."""

    REQUESTED = "requested"
    GENERATING = "generating"
    GENERATED = "generated"
    ACTIVATING = "activating"
    ACTIVE = "active"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"


class OrderRefundState(StrEnum):
    """An order-level refund (``order_refunds``): ``open`` while a planned part has no
    refund operation yet, ``posted`` once every part has one (their own states say how
    each ended). One move: open -> posted."""

    OPEN = "open"
    POSTED = "posted"


class RefundStrategy(StrEnum):
    """How an order-level refund spreads over the order's settled captures."""

    NEWEST_FIRST = "newest_first"  # the latest capture first, each as far as it goes
    PRO_RATA = "pro_rata"  # in proportion to what each capture has left to refund


_R = ReservationState
_O = OperationState
_I = IssuedCardState

RESERVATION_TRANSITIONS: dict[ReservationState, frozenset[ReservationState]] = {
    _R.ACTIVE: frozenset({_R.CAPTURED, _R.RELEASED, _R.EXPIRED}),
    _R.CAPTURED: frozenset(),
    _R.RELEASED: frozenset(),
    _R.EXPIRED: frozenset(),
}

OPERATION_TRANSITIONS: dict[OperationState, frozenset[OperationState]] = {
    _O.QUEUED: frozenset({_O.PREPARED, _O.FAILED}),
    _O.PREPARED: frozenset({_O.SENDING, _O.FAILED, _O.QUEUED}),
    _O.SENDING: frozenset({_O.ENQUEUED, _O.FAILED, _O.UNKNOWN, _O.SUCCEEDED}),
    _O.ENQUEUED: frozenset({_O.SUCCEEDED, _O.FAILED, _O.UNKNOWN}),
    _O.UNKNOWN: frozenset({_O.SUCCEEDED, _O.FAILED, _O.MANUAL_REVIEW}),
    _O.MANUAL_REVIEW: frozenset({_O.SUCCEEDED, _O.FAILED}),
    _O.SUCCEEDED: frozenset(),
    _O.FAILED: frozenset(),
}

# Sold cards::
#
#     requested -> generating -> generated -> activating -> active -> delivering -> delivered
#
# Two moves back, both of an operation that surely moved no money: ``generating ->
# requested`` (the generation got no callback or was never sent: a new one replaces it, and
# barcodes the old one may still produce are never activated) and ``activating ->
# generated`` (the activation was refused before 4WS enqueued it). ``failed``: 4WS refused
# the generation or the activation. ``cancelling``: cancelled once money may be on the card;
# what is unspent is taken back (``cancelled`` after). Before that, a cancel is immediate.
ISSUED_CARD_TRANSITIONS: dict[IssuedCardState, frozenset[IssuedCardState]] = {
    _I.REQUESTED: frozenset({_I.GENERATING, _I.CANCELLED}),
    _I.GENERATING: frozenset({_I.GENERATED, _I.REQUESTED, _I.FAILED, _I.CANCELLED}),
    _I.GENERATED: frozenset({_I.ACTIVATING, _I.CANCELLED}),
    _I.ACTIVATING: frozenset({_I.ACTIVE, _I.GENERATED, _I.FAILED, _I.CANCELLING}),
    _I.ACTIVE: frozenset({_I.DELIVERING, _I.CANCELLING}),
    _I.DELIVERING: frozenset({_I.DELIVERED, _I.ACTIVE, _I.CANCELLING}),
    _I.DELIVERED: frozenset({_I.DELIVERING, _I.CANCELLING}),
    _I.CANCELLING: frozenset({_I.CANCELLED}),
    _I.CANCELLED: frozenset(),
    _I.FAILED: frozenset(),
}

# ------------------------------------------------------------------ derived groupings

# States nothing leaves: the outcome is final.
TERMINAL_OPERATION_STATES = frozenset(s for s, moves in OPERATION_TRANSITIONS.items() if not moves)
TERMINAL_RESERVATION_STATES = frozenset(
    s for s, moves in RESERVATION_TRANSITIONS.items() if not moves
)
# Sent (or possibly sent) and not settled: 4WS may still apply it, so a callback for it is
# awaited, and the card's balance must stay evidence of its outcome alone (invariant 15).
MAY_BE_APPLIED_STATES = frozenset({_O.SENDING, _O.ENQUEUED, _O.UNKNOWN, _O.MANUAL_REVIEW})
# While one of these is on a card, no other capture or refund of that card is claimed: it is
# queued behind (invariants 15, 17). ``prepared`` holds the card's claim.
CARD_BUSY_STATES = MAY_BE_APPLIED_STATES | {_O.PREPARED}
# A capture in one of these keeps its reservation's hold counting past its expiry, and its
# reservation is never released or swept (invariants 2, 6, 17).
HOLDING_OPERATION_STATES = CARD_BUSY_STATES | {_O.QUEUED}
# Claimed and unsettled, before any review: what ``reconcile`` watches for crashed workers
# and overdue callbacks.
IN_FLIGHT_OPERATION_STATES = frozenset({_O.PREPARED, _O.SENDING, _O.ENQUEUED, _O.UNKNOWN})
# Every state an operation can still leave.
LIVE_OPERATION_STATES = frozenset(OperationState) - TERMINAL_OPERATION_STATES
LIVE_RESERVATION_STATES = frozenset(ReservationState) - TERMINAL_RESERVATION_STATES
TERMINAL_ISSUED_CARD_STATES = frozenset(
    s for s, moves in ISSUED_CARD_TRANSITIONS.items() if not moves
)
# Sold cards the issuing pump still has work for (``delivered`` is done unless resent).
PENDING_ISSUED_CARD_STATES = (
    frozenset(IssuedCardState) - TERMINAL_ISSUED_CARD_STATES - {_I.DELIVERED}
)
# Money may be on the card (or is about to be): a cancel must take it back.
LOADED_ISSUED_CARD_STATES = frozenset({_I.ACTIVE, _I.DELIVERING, _I.DELIVERED})


def may_move(current: OperationState, target: OperationState) -> bool:
    """The operation state machine (invariant 5)."""
    return target in OPERATION_TRANSITIONS[current]


def may_move_issued(current: IssuedCardState, target: IssuedCardState) -> bool:
    """The sold-card state machine."""
    return target in ISSUED_CARD_TRANSITIONS[current]


def issue_lock_key(order_ref: str) -> str:
    """The key of an order's issuing lock (``card_transaction`` takes any key). A ``/``
    never occurs in a barcode (``checkout`` refuses one), so it never names a real card;
    the digest keeps it short (lock tables index their key) whatever the order ref."""
    digest = hashlib.sha256(order_ref.encode()).hexdigest()[:40]
    return f"sale/{digest}"


def order_refund_lock_key(order_ref: str) -> str:
    """The key of the lock under which an order's refund plans are written (see
    ``issue_lock_key`` for why such a key never names a card)."""
    digest = hashlib.sha256(order_ref.encode()).hexdigest()[:40]
    return f"refund/{digest}"


def may_move_reservation(current: ReservationState, target: ReservationState) -> bool:
    """The one-way reservation state machine (invariant 5)."""
    return target in RESERVATION_TRANSITIONS[current]


__all__ = [
    "CARD_BUSY_STATES",
    "HOLDING_OPERATION_STATES",
    "IN_FLIGHT_OPERATION_STATES",
    "ISSUED_CARD_TRANSITIONS",
    "LIVE_OPERATION_STATES",
    "LIVE_RESERVATION_STATES",
    "LOADED_ISSUED_CARD_STATES",
    "MAY_BE_APPLIED_STATES",
    "OPERATION_TRANSITIONS",
    "PENDING_ISSUED_CARD_STATES",
    "RESERVATION_TRANSITIONS",
    "TERMINAL_ISSUED_CARD_STATES",
    "TERMINAL_OPERATION_STATES",
    "TERMINAL_RESERVATION_STATES",
    "IssuedCardState",
    "OperationKind",
    "OperationState",
    "ReservationState",
    "issue_lock_key",
    "may_move",
    "may_move_issued",
    "may_move_reservation",
]
