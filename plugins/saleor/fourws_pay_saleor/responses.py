"""Answers to Saleor's sync webhooks, built so that Saleor's own validation accepts them.

Saleor parses these replies with strict schemas (``webhook/response_schemas/transaction.py``):

- ``result`` must be the exact upper-case name of a ``TransactionEventTypeEnum`` member that
  the event allows (an initialize cannot answer ``REFUND_SUCCESS``);
- ``pspReference`` is required for ``*_SUCCESS`` and ``*_REQUEST`` results;
- ``externalUrl`` must be a valid URL when present: an empty string fails validation, so it
  is omitted instead;
- ``message`` is cut to 512 characters; ``time`` is ISO 8601;
- ``paymentMethodDetails`` of type ``GIFT_CARD`` (Saleor >= 3.23; ``OTHER`` before) carries
  at most 4 last characters of the code.

A *business* decline is still HTTP 200 with a ``*_FAILURE`` result; only infrastructure
trouble is a non-2xx status.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

MESSAGE_MAX_LENGTH = 512


class Result(StrEnum):
    CHARGE_SUCCESS = "CHARGE_SUCCESS"
    CHARGE_FAILURE = "CHARGE_FAILURE"
    CHARGE_REQUEST = "CHARGE_REQUEST"
    CHARGE_ACTION_REQUIRED = "CHARGE_ACTION_REQUIRED"
    AUTHORIZATION_SUCCESS = "AUTHORIZATION_SUCCESS"
    AUTHORIZATION_FAILURE = "AUTHORIZATION_FAILURE"
    AUTHORIZATION_REQUEST = "AUTHORIZATION_REQUEST"
    AUTHORIZATION_ACTION_REQUIRED = "AUTHORIZATION_ACTION_REQUIRED"
    REFUND_SUCCESS = "REFUND_SUCCESS"
    REFUND_FAILURE = "REFUND_FAILURE"
    CANCEL_SUCCESS = "CANCEL_SUCCESS"
    CANCEL_FAILURE = "CANCEL_FAILURE"


SESSION_RESULTS = frozenset(
    {
        Result.CHARGE_SUCCESS,
        Result.CHARGE_FAILURE,
        Result.CHARGE_REQUEST,
        Result.CHARGE_ACTION_REQUIRED,
        Result.AUTHORIZATION_SUCCESS,
        Result.AUTHORIZATION_FAILURE,
        Result.AUTHORIZATION_REQUEST,
        Result.AUTHORIZATION_ACTION_REQUIRED,
    }
)
CHARGE_RESULTS = frozenset({Result.CHARGE_SUCCESS, Result.CHARGE_FAILURE})
# Reported only (transactionEventReport), never an answer.
REPORT_ONLY = ("AUTHORIZATION_ADJUSTMENT", "CHARGE_BACK", "REFUND_REVERSE", "INFO")
REFUND_RESULTS = frozenset({Result.REFUND_SUCCESS, Result.REFUND_FAILURE})
CANCEL_RESULTS = frozenset({Result.CANCEL_SUCCESS, Result.CANCEL_FAILURE})

TERMINAL_RESULTS = frozenset(r for r in Result if r.endswith(("_SUCCESS", "_FAILURE")))
_PSP_REQUIRED = frozenset(r for r in Result if r.endswith(("_SUCCESS", "_REQUEST")))


class TransactionAction(StrEnum):
    """What the merchant may do next (``actions`` / ``availableActions``)."""

    CHARGE = "CHARGE"
    REFUND = "REFUND"
    CANCEL = "CANCEL"


def truncate_message(message: str) -> str:
    if len(message) <= MESSAGE_MAX_LENGTH:
        return message
    return message[: MESSAGE_MAX_LENGTH - 1] + "…"


def valid_url(url: str | None) -> bool:
    if not url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.netloc)


def payment_method_details(
    name: str, brand: str | None, code: str, kind: str = "GIFT_CARD"
) -> dict[str, Any]:
    """``paymentMethodDetails`` for a gift card: never more than the last 4 characters.

    ``kind`` is ``GIFT_CARD`` (Saleor >= 3.23) or ``OTHER`` for Saleor 3.21/3.22, which
    reject the ``GIFT_CARD`` type.
    """
    details: dict[str, Any] = {"type": kind, "name": name[:256]}
    if brand:
        details["brand"] = brand[:40]
    tail = code[-4:] if len(code) > 4 else ""
    if tail:
        details["lastChars"] = tail
    return details


def transaction_response(
    result: Result,
    *,
    allowed: frozenset[Result],
    psp_reference: str | None = None,
    amount: Decimal | None = None,
    message: str = "",
    time: datetime | None = None,
    external_url: str | None = None,
    actions: Iterable[TransactionAction] | None = None,
    data: Any = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a sync answer; raises ``ValueError`` for one Saleor would reject."""
    if result not in allowed:
        raise ValueError(f"{result} is not a valid result here")
    if result in _PSP_REQUIRED and not psp_reference:
        raise ValueError(f"{result} needs a pspReference")
    body: dict[str, Any] = {"result": result.value}
    if psp_reference:
        body["pspReference"] = psp_reference
    if amount is not None:
        if not amount.is_finite() or amount < 0:
            raise ValueError("amount must be a finite, non-negative Decimal")
        body["amount"] = amount
    if message:
        body["message"] = truncate_message(message)
    if time is not None:
        if time.tzinfo is None:
            raise ValueError("time must be timezone-aware")
        body["time"] = time.isoformat()
    if valid_url(external_url):
        body["externalUrl"] = external_url
    if actions is not None:
        body["actions"] = [a.value for a in actions]
    if data is not None:
        body["data"] = data
    if details is not None:
        body["paymentMethodDetails"] = details
    return body


def async_response(psp_reference: str) -> dict[str, Any]:
    """The asynchronous answer to a ``*_REQUESTED`` event: the outcome is reported later."""
    if not psp_reference:
        raise ValueError("an asynchronous answer needs a pspReference")
    return {"pspReference": psp_reference}


def gateway_response(data: Any) -> dict[str, Any]:
    """The answer to PAYMENT_GATEWAY_INITIALIZE_SESSION."""
    return {"data": data}
