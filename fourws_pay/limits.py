"""The longest text the ledger keeps, in characters, for every text it keeps.

One module, so that the checks done before any I/O (``checkout``, ``issuing``), the stores'
own refusal of a record they cannot keep, and every store's schema (column widths in the
SQL stores, the same check in Redis) are built from the same numbers and can never disagree.
Lengths count characters (``len(str)``), as ``VARCHAR(n)`` does in PostgreSQL and in
MariaDB with utf8mb4; a NUL character is never stored (PostgreSQL refuses it in text).

Where the numbers come from:

- ``ORDER_REF_MAX`` 200: the host's order reference (Oscar's order number, Saleor's order
  id) with room to spare;
- ``BARCODE_MAX`` 64: 4WS gift-card barcodes are 13 digits; the customer types this one;
- ``ENTITY_CODE_MAX`` 64: 4WS entity codes are short numbers (``440``);
- ``ID_MAX`` 64: our own record ids (``res_``/``op_``/``iss_`` and 32 hex digits) and the
  issuing lock key (``sale/`` and 40 hex digits), which other records name;
- ``LINE_ID_MAX`` 100: the host's order-line id, as ``issuing`` has always accepted;
- ``ITEM_CODE_MAX`` 250: 4WS declares ``itemCode`` as Varchar(250);
- ``EXTERNAL_ID_MAX`` 250: ids 4WS hands back (``queueId``, a callback's ``id``), UUIDs in
  every answer seen, kept whole up to 4WS's usual Varchar(250);
- ``MESSAGE_MAX`` 1000: the free-text note on a record (``clip_message`` shortens it, it
  is never a reason to refuse a state change).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from fourws_pay.errors import InvalidInputError

ORDER_REF_MAX = 200
BARCODE_MAX = 64
ENTITY_CODE_MAX = 64
ID_MAX = 64
LINE_ID_MAX = 100
ITEM_CODE_MAX = 250
EXTERNAL_ID_MAX = 250
CURRENCY_MAX = 16
STATE_MAX = 32
TOKEN_HASH_MAX = 255
MESSAGE_MAX = 1000

# Every text column of every ledger record, and its width.
RESERVATION_TEXT: dict[str, int] = {
    "id": ID_MAX,
    "barcode": BARCODE_MAX,
    "currency": CURRENCY_MAX,
    "entity_code": ENTITY_CODE_MAX,
    "order_ref": ORDER_REF_MAX,
    "state": STATE_MAX,
    "operation_id": ID_MAX,
}
OPERATION_TEXT: dict[str, int] = {
    "id": ID_MAX,
    "kind": STATE_MAX,
    "reservation_id": ID_MAX,
    "barcode": ID_MAX,  # a card's barcode, or an issuing lock key (``issue_lock_key``)
    "currency": CURRENCY_MAX,
    "entity_code": ENTITY_CODE_MAX,
    "state": STATE_MAX,
    "callback_token_hash": TOKEN_HASH_MAX,
    "queue_id": EXTERNAL_ID_MAX,
    "parent_id": ID_MAX,
    "message": MESSAGE_MAX,
    "callback_id": EXTERNAL_ID_MAX,
}
ISSUED_CARD_TEXT: dict[str, int] = {
    "id": ID_MAX,
    "order_ref": ORDER_REF_MAX,
    "line_id": LINE_ID_MAX,
    "currency": CURRENCY_MAX,
    "item_code": ITEM_CODE_MAX,
    "entity_code": ENTITY_CODE_MAX,
    "state": STATE_MAX,
    "barcode": BARCODE_MAX,
    "generate_op_id": ID_MAX,
    "activate_op_id": ID_MAX,
    "refund_of": ID_MAX,
    "reclaim_reservation_id": ID_MAX,
    "message": MESSAGE_MAX,
}
ORDER_REFUND_TEXT: dict[str, int] = {
    "id": ID_MAX,
    "order_ref": ORDER_REF_MAX,
    "refund_key": ORDER_REF_MAX,  # the host's refund id, as long as its order refs
    "currency": CURRENCY_MAX,
    "strategy": STATE_MAX,
    "state": STATE_MAX,
}
LOCK_KEY_MAX = max(BARCODE_MAX, ID_MAX)  # what ``card_transaction`` is given


def require_text(name: str, value: object, limit: int) -> str:
    """``value`` as a non-empty string of at most ``limit`` characters and no NUL."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{name} must be a non-empty string (max {limit} characters)")
    check_text(name, value, limit)
    return value


def check_text(name: str, value: str, limit: int) -> None:
    """Refuse text the ledger cannot keep: longer than ``limit`` characters, or with a NUL."""
    if len(value) > limit:
        raise InvalidInputError(f"{name} is longer than {limit} characters ({len(value)})")
    if "\x00" in value:
        raise InvalidInputError(f"{name} contains a NUL character, which is never stored")


def check_record(record: Any, widths: dict[str, int]) -> None:
    """Refuse a ledger record with a text the store cannot keep whole (before any write).

    Enum members are text too (``state``, ``kind``); ``None`` is no text."""
    for f in fields(record):
        limit = widths.get(f.name)
        if limit is None:
            continue
        value = getattr(record, f.name)
        if value is None:
            continue
        check_text(f"{type(record).__name__}.{f.name}", str(getattr(value, "value", value)), limit)


def clip_message(message: str | None) -> str | None:
    """A record's free-text note as the ledger keeps it: NULs dropped, at most
    ``MESSAGE_MAX`` characters (a note from 4WS or an exception may be anything)."""
    if message is None:
        return None
    text = message.replace("\x00", "")
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"
