"""The gift-card provider's logic, written once for both twins (sans-I/O).

Every public action is a *flow*: a generator that yields the 4WS calls it needs
(``ReadCard``, ``PostUpdate``) and receives their results (or has their typed errors thrown
into it). ``GiftCardPayments`` and ``AsyncGiftCardPayments`` only execute those effects.
Ledger work happens between yields, never across one: no store transaction is open during
an HTTP call (the async twin runs each step between yields on its own threads).

How money stays safe (docs/design.md §5):

- *held* on a card = active, unexpired reservations + reservations whose capture may still
  be applied (they never expire); a balance read may also miss captures settled after it
  started. ``available = balance − held`` (inv. 2, 7).
- ``reserve`` reads the card, then decides under the card's critical section, reading the
  card again when late settlements change its answer (inv. 2, 16); ``check`` may use a
  short cache because it promises nothing.
- ``capture`` and ``refund`` claim the card under its critical section (``prepared``, only
  if no operation of the card may still be applied, else ``CardBusyError``), then read it,
  then re-check, store the evidence and mark ``sending`` under the critical section, and
  only then post (inv. 4, 10, 15): the balance ``reconcile`` later reads is evidence of
  this operation alone (inv. 3, 6).
- an ambiguous POST leaves the operation ``unknown``; nothing re-posts it (inv. 3);
  ``reconcile`` settles it as succeeded when the balance moved by exactly the amount; an
  unchanged balance proves nothing (4WS may still apply it), so after ``reconcile_window``
  the operation goes to ``manual_review`` with its hold still counted, until an
  authenticated callback or an operator's ``resolve`` settles it.
- callbacks must present the operation's secret (constant-time compare) and only move
  operations that await them; terminal states never change (inv. 5, 8).

Where things are (one job per module; ``PaymentsCore`` puts them together):

- ``effects``: the two 4WS calls a flow yields (``ReadCard``, ``PostUpdate``);
- ``cache``: the short card cache behind ``check``;
- ``base``: settings, ledger, clock, hooks, events, the card's critical section;
- ``transitions``: the state machine: what states mean for the money and every state change;
- ``checkout``: check, reserve, capture, refund, release and the POST;
- ``order_allocation``: one order paid with several cards, held all or nothing;
- ``order_refunds``: one refund for an order, planned over its captures, each part once;
- ``settlement``: callbacks, reconcile, resolve, sweep.

Tests that switch off one protection patch it where it is looked up: methods on
``PaymentsCore``, module-level rules in the module that uses them (e.g.
``transitions.may_move``, ``checkout.RESERVE_READS``).
"""

from __future__ import annotations

from fourws_pay.payments.cache import CardCache, CardRead
from fourws_pay.payments.effects import Effect, PaymentFlow, PostUpdate, ReadCard
from fourws_pay.payments.order_allocation import OrderAllocations
from fourws_pay.payments.order_refunds import OrderRefunds
from fourws_pay.payments.settlement import Settlement
from fourws_pay.payments.transitions import HOLDING_OPERATION_STATES, counts_as_held

# Re-exported for callers of the single-module days; a rule is switched off (in tests)
# where it is looked up, never here.
__all__ = [
    "HOLDING_OPERATION_STATES",
    "CardCache",
    "CardRead",
    "Effect",
    "PaymentFlow",
    "PaymentsCore",
    "PostUpdate",
    "ReadCard",
    "counts_as_held",
]


class PaymentsCore(OrderAllocations, OrderRefunds, Settlement):
    """Rules + ledger + the 4WS effects they need. Drivers execute the effects.

    The shop's flows (``Checkout``) and 4WS's (``Settlement``) over one state machine
    (``Transitions``) and one set of plumbing (``CoreBase``).
    """
