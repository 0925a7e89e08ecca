"""The gift-card provider's logic, written once for both twins (sans-I/O).

Every public action is a *flow*: a generator that yields the 4WS calls it needs
(``ReadCard``, ``PostUpdate``) and receives their results (or has their typed errors thrown
into it). ``GiftCardPayments`` and ``AsyncGiftCardPayments`` only execute those effects.
Ledger work happens inline: stores are synchronous and fast, and no store transaction is
ever open across a yield, i.e. across an HTTP call.

How money stays safe (docs/design.md §5):

- *held* on a card = active, unexpired reservations + reservations whose capture is in
  flight or under manual review (they never expire) + captures settled since the card was
  read (4WS's balance may not show them yet). ``available = balance − held`` (inv. 2, 7).
- reserve and capture read the card fresh, then decide under the per-card transaction
  (inv. 2, 10); ``check`` may use a short cache because it promises nothing.
- capture writes the operation (``prepared``), commits, marks it ``sending``, commits, and
  only then posts (inv. 4); one balance-changing operation per card is in flight at a time,
  so that ``reconcile`` can read the outcome off the balance (inv. 3, 6).
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
- ``settlement``: callbacks, reconcile, resolve, sweep.

Tests that switch off one protection patch it where it is looked up: methods on
``PaymentsCore``, module-level rules in the module that uses them (e.g.
``transitions.may_move``, ``checkout.RESERVE_READS``).
"""

from __future__ import annotations

from fourws_pay.payments.cache import CardCache, CardRead
from fourws_pay.payments.checkout import Checkout
from fourws_pay.payments.effects import Effect, PaymentFlow, PostUpdate, ReadCard
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


class PaymentsCore(Checkout, Settlement):
    """Rules + ledger + the 4WS effects they need. Drivers execute the effects.

    The shop's flows (``Checkout``) and 4WS's (``Settlement``) over one state machine
    (``Transitions``) and one set of plumbing (``CoreBase``).
    """
