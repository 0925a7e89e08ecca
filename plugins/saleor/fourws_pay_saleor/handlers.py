"""What the App does for each verified webhook: Saleor's semantics mapped onto 4WS payments.

======================================  =============================================
Saleor                                  4WS payments
======================================  =============================================
PAYMENT_GATEWAY_INITIALIZE_SESSION      ``check`` (balance check; uniform refusals)
TRANSACTION_INITIALIZE_SESSION          AUTHORIZATION: ``reserve`` (authorization_ttl)
                                        -> AUTHORIZATION_SUCCESS
                                        CHARGE: ``reserve`` + ``capture`` -> CHARGE_REQUEST,
                                        the settlement is reported later
TRANSACTION_PROCESS_SESSION             the current state of the same transaction
TRANSACTION_CHARGE_REQUESTED            ``capture`` of part or all of what is still
                                        authorized (the rest is re-held); reported
TRANSACTION_CANCELATION_REQUESTED       ``release`` of the rest -> CANCEL_SUCCESS
TRANSACTION_REFUND_REQUESTED            ``refund`` (async answer, reported when settled)
======================================  =============================================

Exactly-once, as far as money is concerned:

- each step's result (reservation id, capture operation id, the request's own
  ``pspReference``) is written before the next step, and a repeated or resumed request
  reads it back instead of reserving, capturing or refunding again;
- INITIALIZE_SESSION answers are remembered per ``idempotencyKey``; the same key with the
  same input gets the same answer, with different input a failure;
- ``*_REQUESTED`` answers are remembered per delivery (hash of the signed body); Saleor's
  own retries come without a body, so the App never needs them (``actions.py``);
- one worker at a time works on a transaction: an asyncio lock within the process and a
  lease row in the store across processes.

Declines are answers (``*_FAILURE`` with HTTP 200). What cannot be done within the time
budget or right now (busy, 4WS unreachable) is answered pending and finished later; the
outcome is reported with ``transactionEventReport``.
"""

from __future__ import annotations

from fourws_pay_saleor.actions import ActionHandlers
from fourws_pay_saleor.handler_core import Unavailable
from fourws_pay_saleor.sessions import SessionHandlers

__all__ = ["PaymentHandlers", "Unavailable"]


class PaymentHandlers(SessionHandlers, ActionHandlers):
    """The business side of every webhook; the ASGI layer has already verified the request."""
