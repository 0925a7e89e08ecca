"""A test-side mirror of Saleor's response validation (webhook/response_schemas/transaction.py).

Written independently of the App's ``responses.py`` so that a bug there cannot hide itself.
Stricter than Saleor where Saleor silently degrades: an over-long message or an unknown key
is a test failure here, since it means the App produced something it did not intend.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from fourws_pay_saleor.payloads import WebhookEvent

SESSION = {
    "CHARGE_SUCCESS",
    "CHARGE_FAILURE",
    "CHARGE_REQUEST",
    "CHARGE_ACTION_REQUIRED",
    "AUTHORIZATION_SUCCESS",
    "AUTHORIZATION_FAILURE",
    "AUTHORIZATION_REQUEST",
    "AUTHORIZATION_ACTION_REQUIRED",
}
SYNC = {
    WebhookEvent.TRANSACTION_CHARGE_REQUESTED: {"CHARGE_SUCCESS", "CHARGE_FAILURE"},
    WebhookEvent.TRANSACTION_REFUND_REQUESTED: {"REFUND_SUCCESS", "REFUND_FAILURE"},
    WebhookEvent.TRANSACTION_CANCELATION_REQUESTED: {"CANCEL_SUCCESS", "CANCEL_FAILURE"},
}
BASE_KEYS = {"result", "pspReference", "amount", "time", "externalUrl", "message", "actions"}
SESSION_KEYS = BASE_KEYS | {"data", "paymentMethodDetails"}
PSP_REQUIRED = re.compile(r"_(SUCCESS|REQUEST)$")


def _check_common(body: dict[str, Any], allowed_results: set[str], keys: set[str]) -> None:
    unknown = set(body) - keys
    assert not unknown, f"keys Saleor does not know: {unknown}"
    result = body.get("result")
    assert isinstance(result, str), f"bad result {result!r}"
    assert result in allowed_results, f"bad result {result!r}"
    assert result == result.upper()
    if PSP_REQUIRED.search(result):
        assert body.get("pspReference"), f"{result} needs a pspReference"
    if "pspReference" in body:
        assert isinstance(body["pspReference"], str)
        assert body["pspReference"]
    if "amount" in body:
        amount = body["amount"]
        assert isinstance(amount, Decimal | int), amount
        assert not isinstance(amount, bool)
        assert amount >= 0
    if "time" in body:
        parsed = datetime.fromisoformat(body["time"])
        assert parsed.tzinfo is not None
    if "externalUrl" in body:
        parts = urlsplit(body["externalUrl"])
        assert parts.scheme in {"http", "https"}, "externalUrl must be a URL"
        assert parts.netloc, "externalUrl must be a URL"
    if "message" in body:
        assert isinstance(body["message"], str)
        assert len(body["message"]) <= 512
    if "actions" in body:
        assert isinstance(body["actions"], list)
        assert set(body["actions"]) <= {"CHARGE", "REFUND", "CANCEL"}


def _check_details(details: Any, version: tuple[int, int]) -> None:
    assert isinstance(details, dict)
    # PaymentMethodDetails came with 3.21 (CARD, OTHER); GIFT_CARD with 3.23. An older Saleor
    # drops the whole answer on a type it does not know.
    assert version >= (3, 21), "paymentMethodDetails before Saleor 3.21"
    kinds = {"CARD", "OTHER", "GIFT_CARD"} if version >= (3, 23) else {"CARD", "OTHER"}
    assert details.get("type") in kinds, (details.get("type"), version)
    assert isinstance(details.get("name"), str)
    assert 0 < len(details["name"]) <= 256
    if "lastChars" in details:
        assert isinstance(details["lastChars"], str)
        assert len(details["lastChars"]) <= 4
    if "brand" in details:
        assert isinstance(details["brand"], str)
        assert len(details["brand"]) <= 40


def assert_saleor_accepts(
    event: WebhookEvent, body: Any, version: tuple[int, int] = (3, 24)
) -> None:
    """Fail unless Saleor ``version`` would accept ``body`` as the answer to ``event``."""
    assert isinstance(body, dict)
    if event is WebhookEvent.PAYMENT_GATEWAY_INITIALIZE_SESSION:
        assert set(body) == {"data"}
        return
    if event in (
        WebhookEvent.TRANSACTION_INITIALIZE_SESSION,
        WebhookEvent.TRANSACTION_PROCESS_SESSION,
    ):
        _check_common(body, SESSION, SESSION_KEYS)
        if "paymentMethodDetails" in body:
            _check_details(body["paymentMethodDetails"], version)
        return
    if "result" not in body:  # asynchronous answer
        assert set(body) <= {"pspReference", "actions"}
        assert isinstance(body.get("pspReference"), str)
        assert body["pspReference"]
        return
    _check_common(body, SYNC[event], BASE_KEYS)
