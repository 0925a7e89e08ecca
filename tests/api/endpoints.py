"""Every client endpoint as a table, so generic tests (parity, log hygiene, fuzzing) cover
all of them and a new endpoint without a row here is noticed (``test_every_endpoint_listed``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from fourws_pay.api.client import AsyncClient, Client
from fourws_pay.api.models import GiftCardUpdate
from fourws_pay.settings import Settings

from .fakes import CALLBACK_URL, Reply, fixture_reply, json_reply, login_body, raw_reply

CARD = "2000000001814"
UPDATE_CARD = "0098260111383"
LOYALTY_CARD = "0099000001209"
PRODUCT_BARCODE = "8050200058081"
PDF_CARDS = ("4443334961511", "4448332511072")
ITEM = "ITEM 1"  # a space, to see path quoting
ITEM_PATH = "ITEM%201"

CONSUMPTION = GiftCardUpdate(
    entity_code="440",
    barcode=UPDATE_CARD,
    amount=Decimal("-50.00"),
    callback=CALLBACK_URL,
    payload={"operation": "op-42"},
)
ACTIVATION = GiftCardUpdate(
    entity_code="440",
    barcode=UPDATE_CARD,
    amount=Decimal("100.00"),
    activation_date=datetime(2021, 8, 31, 12, 0, tzinfo=timezone(timedelta(hours=2))),
    country="IT",
    branch_code="1150",
    price_list="1150",
    currency_symbol="€",
    currency="EUR",
    client_barcode="clientBarcode",
    client_code="clientCode",
    client_denomination="GINO",
    callback=CALLBACK_URL,
)
INTERVAL = (
    datetime(2021, 3, 1, tzinfo=UTC),
    datetime(2021, 9, 1, 2, 30, tzinfo=timezone(timedelta(hours=2))),
)
SINCE = datetime(2021, 3, 17, 10, 42, 52, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """One endpoint: how to call it (both twins), where it lands, and a good answer."""

    name: str
    route: Callable[[Settings], str]
    ok: Callable[[], Reply]
    call: Callable[[Client], Any]
    acall: Callable[[AsyncClient], Awaitable[Any]]
    family: str = "documents"
    idempotent: bool = True
    barcodes: tuple[str, ...] = field(default_factory=tuple)


async def _alist(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


CASES = [
    Case(
        "get_giftcard",
        lambda s: s.cmd_get_giftcard,
        lambda: fixture_reply("get_giftcard_success.json"),
        lambda c: c.get_giftcard(CARD),
        lambda c: c.get_giftcard(CARD),
        barcodes=(CARD,),
    ),
    Case(
        "update_giftcard",
        lambda s: s.cmd_update_giftcard,
        lambda: fixture_reply("update_giftcard_queued.json"),
        lambda c: c.update_giftcard(CONSUMPTION),
        lambda c: c.update_giftcard(CONSUMPTION),
        idempotent=False,
        barcodes=(UPDATE_CARD,),
    ),
    Case(
        "update_giftcard_activation",
        lambda s: s.cmd_update_giftcard,
        lambda: fixture_reply("update_giftcard_queued.json"),
        lambda c: c.update_giftcard(ACTIVATION),
        lambda c: c.update_giftcard(ACTIVATION),
        idempotent=False,
        barcodes=(UPDATE_CARD,),
    ),
    Case(
        "generate_giftcards",
        lambda s: s.cmd_generate_giftcards,
        lambda: fixture_reply("generate_giftcards_queued.json"),
        lambda c: c.generate_giftcards("GIFTCARD_IVA_TAGLIO_100", 5, CALLBACK_URL),
        lambda c: c.generate_giftcards("GIFTCARD_IVA_TAGLIO_100", 5, CALLBACK_URL),
        idempotent=False,
    ),
    Case(
        "giftcard_pdf",
        lambda s: s.cmd_giftcard_pdf,
        lambda: json_reply({"success": True, "url": "https://files.example/cards.pdf"}),
        lambda c: c.giftcard_pdf(PDF_CARDS, callback=CALLBACK_URL),
        lambda c: c.giftcard_pdf(PDF_CARDS, callback=CALLBACK_URL),
        barcodes=PDF_CARDS,
    ),
    Case(
        "loyalty_vouchers",
        lambda s: s.cmd_loyalty_vouchers,
        lambda: fixture_reply("loyalty_vouchers_success.json"),
        lambda c: list(c.loyalty_vouchers(LOYALTY_CARD, pk_field_name="identifier")),
        lambda c: _alist(c.loyalty_vouchers(LOYALTY_CARD, pk_field_name="identifier")),
        barcodes=(LOYALTY_CARD,),
    ),
    Case(
        "loyalty_vouchers_between",
        lambda s: s.cmd_loyalty_vouchers_between,
        lambda: fixture_reply("loyalty_vouchers_success.json"),
        lambda c: list(c.loyalty_vouchers_between(*INTERVAL, card_barcode=LOYALTY_CARD)),
        lambda c: _alist(c.loyalty_vouchers_between(*INTERVAL, card_barcode=LOYALTY_CARD)),
        barcodes=(LOYALTY_CARD,),
    ),
    Case(
        "last_loyalty_vouchers",
        lambda s: s.cmd_last_loyalty_vouchers,
        lambda: fixture_reply("loyalty_vouchers_success.json"),
        lambda c: list(c.last_loyalty_vouchers(SINCE)),
        lambda c: _alist(c.last_loyalty_vouchers(SINCE)),
    ),
    Case(
        "login",
        lambda s: f"POST {s.path_login}",
        lambda: json_reply(login_body()),
        lambda c: c.login(),
        lambda c: c.login(),
        family="data",
    ),
    Case(
        "insert_barcode",
        lambda s: "POST " + s.path_insert_barcode.format(item_code=ITEM_PATH),
        lambda: fixture_reply("dm_insert_barcode_response.json"),
        lambda c: c.insert_barcode(ITEM, PRODUCT_BARCODE, dimensions=("1", "Y4")),
        lambda c: c.insert_barcode(ITEM, PRODUCT_BARCODE, dimensions=("1", "Y4")),
        family="data",
        barcodes=(PRODUCT_BARCODE, "3314254119515"),
    ),
    Case(
        "sku_from_barcode",
        lambda s: "GET " + s.path_sku_from_barcode.format(barcode=PRODUCT_BARCODE),
        lambda: json_reply(
            {
                "success": True,
                "sku": {"item_code": ITEM, "barcode": PRODUCT_BARCODE, "dimension_level1": "1"},
            }
        ),
        lambda c: c.sku_from_barcode(PRODUCT_BARCODE),
        lambda c: c.sku_from_barcode(PRODUCT_BARCODE),
        family="data",
        barcodes=(PRODUCT_BARCODE,),
    ),
    Case(
        "delete_barcode",
        lambda s: (
            "DELETE " + s.path_delete_barcode.format(item_code=ITEM_PATH, barcode=PRODUCT_BARCODE)
        ),
        lambda: raw_reply(b""),
        lambda c: c.delete_barcode(ITEM, PRODUCT_BARCODE, ignore_movements=True),
        lambda c: c.delete_barcode(ITEM, PRODUCT_BARCODE, ignore_movements=True),
        family="data",
        barcodes=(PRODUCT_BARCODE,),
    ),
    Case(
        "generate_missing_barcodes",
        lambda s: "POST " + s.path_generate_missing_barcodes.format(item_code=ITEM_PATH),
        lambda: fixture_reply("keepit_barcode_response.json"),
        lambda c: c.generate_missing_barcodes(ITEM, dimensions={"dimension_level1": "1"}),
        lambda c: c.generate_missing_barcodes(ITEM, dimensions={"dimension_level1": "1"}),
        family="data",
        barcodes=("1234567890",),
    ),
]

CASE_IDS = [case.name for case in CASES]


def normalize(result: Any) -> Any:
    """A comparable form of what an endpoint returned."""
    if isinstance(result, BaseModel):
        dumped = result.model_dump()
        if "token" in dumped:
            dumped["token"] = result.token.get_secret_value()  # type: ignore[attr-defined]
        return (type(result).__name__, dumped)
    if isinstance(result, list):
        return [normalize(item) for item in result]
    return result
