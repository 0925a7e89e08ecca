"""Why a card cannot pay: the reason codes of refusals.

A leaf module (it imports nothing of fourws_pay) because both the payments models and the
error tree name it: ``PaymentRefused.reason`` is one, and ``fourws_pay.errors`` sits below
every other module, so it cannot import ``payments.models`` (which needs ``limits``, which
raises an error). ``payments.models`` re-exports it.
"""

from __future__ import annotations

from enum import StrEnum


class RefusalReason(StrEnum):
    """Why a card cannot pay. Shown to staff; customers see ``public_message``."""

    NOT_FOUND = "not_found"
    INACTIVE = "inactive"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    EMPTY = "empty"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    PARTIAL_USAGE_NOT_ALLOWED = "partial_usage_not_allowed"
    CURRENCY_MISMATCH = "currency_mismatch"
    NETWORK_RESTRICTED = "network_restricted"
    NOT_A_GIFT_CARD = "not_a_gift_card"
    INVALID_AMOUNT = "invalid_amount"
