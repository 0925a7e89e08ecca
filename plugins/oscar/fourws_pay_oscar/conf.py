"""The ``FOURWS_PAY`` Django setting, read in one place.

Keys (all optional)::

    FOURWS_PAY = {
        # "http" (the only one): talk to 4WS, or a served sandbox, at
        # SETTINGS["documents_base_url"] / FOURWS_DOCUMENTS_BASE_URL.
        "BACKEND": "http",
        # keyword arguments for fourws_pay.Settings, over FOURWS_* environment variables.
        "SETTINGS": {},
        # where the reservation/operation ledger lives; any URL fourws_pay.ledger.open_store
        # understands. Default: a SQLite file next to the project (BASE_DIR or the cwd).
        "LEDGER_URL": None,
        # public URL of fourws_pay_oscar.urls' callback view, without trailing slash.
        "CALLBACK_BASE_URL": None,
        # how long a gift-card code carried from payment details to preview stays usable.
        "CODE_MAX_AGE": 3600,
        # how many gift cards one order may be paid with ("Apply" on payment details).
        "MAX_CARDS": 3,
        # order status set when 4WS refuses a capture (None leaves the status alone).
        "CAPTURE_FAILED_STATUS": None,
        "SOURCE_TYPE": "4WS gift card",
        "ORDER_REF_PREFIX": "oscar-",
        # slug of the product class whose products are 4WS gift cards (fourws_pay_oscar.selling).
        "GIFTCARD_PRODUCT_CLASS": "gift-card",
        # the 4WS FINANCIAL item sold cards are generated from; None: FOURWS_ISSUING_ITEM_CODE.
        "GIFTCARD_ITEM_CODE": None,
        # (min, max) of an amount the buyer types (products with selling.allow_free_amount).
        "GIFTCARD_AMOUNT_LIMITS": ("10.00", "500.00"),
    }

The ledger location is a URL precisely so that a PostgreSQL or MariaDB store plugs in by
changing a setting, not code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "BACKEND": "http",
    "SETTINGS": {},
    "LEDGER_URL": None,
    "CALLBACK_BASE_URL": None,
    "CODE_MAX_AGE": 3600,
    "MAX_CARDS": 3,
    "CAPTURE_FAILED_STATUS": None,
    "SOURCE_TYPE": "4WS gift card",
    "ORDER_REF_PREFIX": "oscar-",
    "GIFTCARD_PRODUCT_CLASS": "gift-card",
    "GIFTCARD_ITEM_CODE": None,
    "GIFTCARD_AMOUNT_LIMITS": ("10.00", "500.00"),
}

BACKENDS = ("http",)
LEDGER_FILENAME = "fourws-pay-ledger.db"


def get(key: str) -> Any:
    """One key of ``settings.FOURWS_PAY``, or its default."""
    from django.conf import settings

    configured = getattr(settings, "FOURWS_PAY", None) or {}
    if key not in DEFAULTS:
        raise KeyError(f"unknown FOURWS_PAY key {key!r}")
    return configured.get(key, DEFAULTS[key])


def ledger_url() -> str:
    """The ledger URL: ``LEDGER_URL``, else a SQLite file in ``BASE_DIR`` (or the cwd)."""
    url = get("LEDGER_URL")
    if url:
        return str(url)
    from django.conf import settings

    base = Path(getattr(settings, "BASE_DIR", None) or os.getcwd())
    return f"sqlite:///{base / LEDGER_FILENAME}"


def order_ref(order_number: str) -> str:
    """The ``order_ref`` fourws-pay records for an Oscar order number.

    The prefix lets the host hooks tell Oscar's orders from anything else a shared plugin
    manager might see.
    """
    return f"{get('ORDER_REF_PREFIX')}{order_number}"


def order_number(order_ref: str | None) -> str | None:
    """The Oscar order number inside an ``order_ref``, or None if it is not one of ours."""
    prefix = get("ORDER_REF_PREFIX")
    if not order_ref or not order_ref.startswith(prefix):
        return None
    return order_ref[len(prefix) :] or None


def max_cards() -> int:
    """``MAX_CARDS``: at least 1, at most what fourws-pay holds for one order."""
    from fourws_pay.payments.order_allocation import MAX_ORDER_CARDS

    return max(1, min(int(get("MAX_CARDS")), MAX_ORDER_CARDS))
