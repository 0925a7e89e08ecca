"""The sandbox's books: gift cards, products and their barcodes, loyalty vouchers, and the
append-only ledger of every balance change. Plain Python, no I/O, no clock of its own:
callers pass ``now`` so that time is whatever the sandbox's injectable clock says.

This ledger is the *source of truth* the tests check conservation of money against: each
record says which barcode moved by how much, why, and for which queue item and payload.

Simulator choices where the 4WS reference is silent (all documented, none claimed as 4WS
behaviour):

- barcodes are unique across entities (a card is found by barcode alone);
- a positive amount on an unknown or never-activated barcode activates it; on an active
  card it re-credits (4WS does not document top-ups or refunds);
- a consumption is refused (``success: false`` with a message) when the card is unknown,
  inactive, outside its validity window, in another currency, network-restricted to
  another entity, has fewer decimals than the amount, or would go below zero;
- on a ``flgPartiallyUsage = N`` card a consumption smaller than the balance is applied and
  the remainder is forfeited (``partial_usage_policy="forfeit"``) or refused (``"refuse"``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from fourws_pay.money import quantum
from fourws_pay.sandbox.ean import make_ean13

WIRE_FORMAT = "%Y-%m-%d %H:%M:%S"

OperationKind = Literal["activation", "recredit", "consumption", "in_shop_spend"]


def wire_datetime(value: datetime | None) -> str:
    """Documents API timestamps: ``yyyy-MM-dd HH:mm:ss`` in UTC, ``""`` when unset."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime(WIRE_FORMAT)


def wire_amount(value: Decimal) -> int | Decimal:
    """Amounts as the reference writes them: ``390`` for whole values, ``72.9`` otherwise."""
    if value == value.to_integral_value():
        return int(value)
    return value.normalize()


def wire_code(value: str | None) -> str | int | None:
    """Codes that look numeric go out as numbers, like the reference's examples (``440``)."""
    if value is None:
        return None
    if value.isdigit() and (value == "0" or not value.startswith("0")) and len(value) < 10:
        return int(value)
    return value


def flag(value: bool) -> str:
    return "Y" if value else "N"


@dataclass
class Card:
    """A gift card. ``amount`` is the available balance (Decimal, card's decimals)."""

    barcode: str
    amount: Decimal = Decimal(0)
    original_amount: Decimal = Decimal(0)
    currency: str = "EUR"
    currency_symbol: str = "€"
    decimals: int = 2
    entity_code: str = "440"
    company_id: str = "XXXX"
    site_id: str = "500"
    branch_code: str = "1"
    active: bool = True
    ever_activated: bool = True
    issue_date: datetime | None = None
    activation_date: datetime | None = None
    expiration_date: datetime | None = None
    partial_usage: bool = True
    network_usage: bool = True
    offline_usage: bool = False
    price_list: str = "1"
    price_list_type: str = "V"
    item_type: str = "FINANCIAL"
    item_subtype: str = "GIFTCARD"
    item_code: str = "GF440VP15_400_3"
    tax_rate: int = 21
    vat_code: str = "3"
    printer_department_code: str = "1"
    payment_term_code: str = "201"
    taxation: str = ""
    country: str | None = None
    client_barcode: str | None = None
    client_code: str | None = None
    client_denomination: str | None = None
    card_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The ``giftcard`` object of Get Giftcard, in the reference's field order."""
        return {
            "id": self.card_id
            or f"{self.company_id}_{self.site_id}_{self.entity_code}_{self.barcode}",
            "companyId": self.company_id,
            "siteId": wire_code(self.site_id),
            "branchCode": wire_code(self.branch_code),
            "entityCode": wire_code(self.entity_code),
            "cardBarcode": self.barcode,
            "issueDate": wire_datetime(self.issue_date),
            "activationDate": wire_datetime(self.activation_date),
            "expirationDate": wire_datetime(self.expiration_date),
            "flgActive": flag(self.active),
            "priceList": self.price_list,
            "priceListType": self.price_list_type,
            "decimalNumber": self.decimals,
            "currencySymbol": self.currency_symbol,
            "currency": self.currency,
            "originalAmount": wire_amount(self.original_amount),
            "amount": wire_amount(self.amount),
            "itemType": self.item_type,
            "itemSubtype": self.item_subtype,
            "itemCode": self.item_code,
            "taxRate": self.tax_rate,
            "vatCode": wire_code(self.vat_code),
            "printerDepartmentCode": wire_code(self.printer_department_code),
            "flgNetworkUsage": flag(self.network_usage),
            "flgPartiallyUsage": flag(self.partial_usage),
            "paymentTermCode": wire_code(self.payment_term_code),
            "flgAllowOfflineUsage": flag(self.offline_usage),
            "taxation": self.taxation,
        }


@dataclass(frozen=True)
class LedgerRecord:
    """One attempt to change a balance, applied or refused. Never edited once appended.

    ``amount`` is signed (negative = money out of the card). ``forfeited`` is the remainder
    lost by a one-go card spent for less than its balance. ``queue_id`` is None for in-shop
    spends, which happen behind the shop's back.
    """

    seq: int
    barcode: str
    amount: Decimal
    kind: OperationKind
    outcome: Literal["applied", "refused"]
    applied_at: datetime
    queue_id: str | None = None
    callback_id: str | None = None
    payload: Any = None
    message: str | None = None
    balance_after: Decimal | None = None
    forfeited: Decimal = Decimal(0)


@dataclass
class Product:
    """A product of the Data management API: an item code and the SKUs it has.

    Each SKU is a tuple of five dimension values (``None`` where unused). A product with no
    SKU listed accepts any dimensions.
    """

    item_code: str
    item_type: str = "GOODS"
    skus: list[tuple[str | None, ...]] = field(default_factory=list)
    description: str = ""


@dataclass
class BarcodeRecord:
    prog_id: int
    barcode: str
    item_code: str
    dimensions: tuple[str | None, ...]
    barcode_type: str = "EAN13"
    used_in_documents: bool = False

    def to_sku(self) -> dict[str, Any]:
        body: dict[str, Any] = {"success": True, "item_code": self.item_code}
        for i, value in enumerate(self.dimensions):
            if value is not None:
                body[f"dimension_level{i + 1}"] = value
        body["barcode"] = self.barcode
        body["barcode_type"] = self.barcode_type
        return body


@dataclass
class Voucher:
    """A loyalty voucher; ``data`` is its wire object, ``created_at`` drives "last vouchers"."""

    card_barcode: str
    data: dict[str, Any]
    created_at: datetime
    activated_at: datetime | None
    status: str = "ACTIVE"
    end_validity: datetime | None = None


class Refused(Exception):
    """A queued operation that 4WS would report as ``success: false`` on the callback."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _dims(values: Any) -> tuple[str | None, ...]:
    items = list(values)[:5]
    items += [None] * (5 - len(items))
    return tuple(None if v in (None, "") else str(v) for v in items)


class Books:
    """Cards, products, barcodes, vouchers and the ledger. Not thread-safe on its own: the
    ``Sandbox`` serialises access with a lock."""

    def __init__(self, *, partial_usage_policy: Literal["forfeit", "refuse"] = "forfeit") -> None:
        self.cards: dict[str, Card] = {}
        self.products: dict[str, Product] = {}
        self.barcodes: dict[str, BarcodeRecord] = {}
        self.vouchers: list[Voucher] = []
        self.ledger: list[LedgerRecord] = []
        self.partial_usage_policy = partial_usage_policy
        self._prog_id = 2334597
        self._generated = 0
        self._product_barcodes = 0

    # ----------------------------------------------------------------------- cards

    def new_card_barcode(self, prefix: str = "444") -> str:
        while True:
            self._generated += 1
            code = make_ean13(prefix, 3334961 + self._generated)
            if code not in self.cards:
                return code

    def record(self, **fields: Any) -> LedgerRecord:
        rec = LedgerRecord(seq=len(self.ledger) + 1, **fields)
        self.ledger.append(rec)
        return rec

    def apply_update(
        self,
        body: dict[str, Any],
        *,
        now: datetime,
        queue_id: str | None,
        payload: Any,
        default_validity: timedelta,
    ) -> LedgerRecord:
        """Apply a queued updateGiftcard body; return the ledger record (applied or refused).

        Raises nothing for business refusals: the record's outcome says ``refused``.
        """
        barcode = str(body.get("barcode", ""))
        amount: Decimal = body["amount"]
        card = self.cards.get(barcode)
        callback_id = str(uuid.uuid4())
        kind: OperationKind = "consumption" if amount < 0 else "activation"
        if amount > 0 and card is not None and card.ever_activated:
            kind = "recredit"
        try:
            if amount < 0:
                forfeited = self._consume(card, amount, body, now)
            elif kind == "activation":
                card = self._activate(barcode, card, amount, body, now, default_validity)
                forfeited = Decimal(0)
            else:
                assert card is not None
                self._recredit(card, amount, body, now)
                forfeited = Decimal(0)
        except Refused as refusal:
            return self.record(
                barcode=barcode,
                amount=amount,
                kind=kind,
                outcome="refused",
                applied_at=now,
                queue_id=queue_id,
                callback_id=callback_id,
                payload=payload,
                message=refusal.message,
                balance_after=card.amount if card else None,
            )
        assert card is not None
        return self.record(
            barcode=barcode,
            amount=amount,
            kind=kind,
            outcome="applied",
            applied_at=now,
            queue_id=queue_id,
            callback_id=callback_id,
            payload=payload,
            balance_after=card.amount,
            forfeited=forfeited,
        )

    @staticmethod
    def _check_decimals(card: Card, amount: Decimal) -> None:
        if amount.quantize(quantum(card.decimals)) != amount:
            raise Refused(f"amount has more than {card.decimals} decimals")

    @staticmethod
    def _check_usable(card: Card, body: dict[str, Any], now: datetime) -> None:
        if not card.active:
            raise Refused("giftcard not active")
        if card.activation_date is not None and now < card.activation_date:
            raise Refused("giftcard not yet valid")
        if card.expiration_date is not None and now >= card.expiration_date:
            raise Refused("giftcard expired")
        currency = body.get("currency")
        if currency is not None and str(currency) != card.currency:
            raise Refused("currency mismatch")
        entity = body.get("entityCode")
        if not card.network_usage and entity is not None and str(entity) != card.entity_code:
            raise Refused("giftcard not usable by this entity")

    def _consume(
        self, card: Card | None, amount: Decimal, body: dict[str, Any], now: datetime
    ) -> Decimal:
        if card is None:
            raise Refused("barcode not found")
        self._check_usable(card, body, now)
        self._check_decimals(card, amount)
        spend = -amount
        if spend > card.amount:
            raise Refused("insufficient balance")
        forfeited = Decimal(0)
        if not card.partial_usage and spend < card.amount:
            if self.partial_usage_policy == "refuse":
                raise Refused("partial usage not allowed")
            forfeited = card.amount - spend
        card.amount -= spend + forfeited
        return forfeited

    def _activate(
        self,
        barcode: str,
        card: Card | None,
        amount: Decimal,
        body: dict[str, Any],
        now: datetime,
        default_validity: timedelta,
    ) -> Card:
        from fourws_pay.api.fields import parse_datetime

        if not barcode:
            raise Refused("barcode not found")
        if card is None:
            card = Card(barcode=barcode, issue_date=now, expiration_date=now + default_validity)
            self.cards[barcode] = card
        self._check_decimals(card, amount)
        try:
            activated = parse_datetime(body.get("activationDate")) or now
        except ValueError:
            raise Refused("invalid activationDate") from None
        card.activation_date = activated
        if card.expiration_date is None or card.expiration_date <= activated:
            card.expiration_date = activated + default_validity
        for key, attr in (
            ("entityCode", "entity_code"),
            ("branchCode", "branch_code"),
            ("priceList", "price_list"),
            ("currency", "currency"),
            ("currencySymbol", "currency_symbol"),
            ("country", "country"),
            ("clientBarcode", "client_barcode"),
            ("clientCode", "client_code"),
            ("clientDenomination", "client_denomination"),
        ):
            if body.get(key) is not None:
                setattr(card, attr, str(body[key]))
        card.amount = amount
        card.original_amount = amount
        card.active = True
        card.ever_activated = True
        return card

    def _recredit(self, card: Card, amount: Decimal, body: dict[str, Any], now: datetime) -> None:
        self._check_usable(card, body, now)
        self._check_decimals(card, amount)
        card.amount += amount

    def spend_in_shop(self, barcode: str, amount: Decimal, now: datetime) -> LedgerRecord:
        """A till somewhere spends from the card: applied at once, no queue, no callback."""
        card = self.cards.get(barcode)
        if card is None:
            raise KeyError(barcode)
        if amount <= 0 or amount > card.amount:
            raise ValueError("in-shop spend must be positive and at most the balance")
        card.amount -= amount
        return self.record(
            barcode=barcode,
            amount=-amount,
            kind="in_shop_spend",
            outcome="applied",
            applied_at=now,
            balance_after=card.amount,
        )

    def generate(
        self, item_code: str, count: int, now: datetime, validity: timedelta
    ) -> list[dict[str, str]]:
        """Create never-activated cards for a financial item; raise ``Refused`` otherwise."""
        product = self.products.get(item_code)
        if product is None or product.item_type.upper() != "FINANCIAL":
            raise Refused("itemCode not found")
        created = []
        for _ in range(count):
            barcode = self.new_card_barcode()
            self.cards[barcode] = Card(
                barcode=barcode,
                active=False,
                ever_activated=False,
                item_code=item_code,
                issue_date=now,
                activation_date=None,
                expiration_date=now + validity,
            )
            created.append(
                {
                    "barcode": barcode,
                    "startValidity": wire_datetime(now),
                    "endValidity": wire_datetime(now + validity),
                }
            )
        return created

    # -------------------------------------------------------------------- barcodes

    def add_product(
        self, item_code: str, *, skus: Any = (), item_type: str = "GOODS", description: str = ""
    ) -> Product:
        product = Product(
            item_code=item_code,
            item_type=item_type,
            skus=[_dims(s) for s in skus],
            description=description,
        )
        self.products[item_code] = product
        return product

    def insert_barcode(
        self, item_code: str, barcode: str, dims: Any, barcode_type: str
    ) -> BarcodeRecord:
        """Raises ``LookupError`` (404) for unknown product/SKU, ``FileExistsError`` (422)."""
        product = self.products.get(item_code)
        key = _dims(dims)
        if product is None:
            raise LookupError(f"Product not found with item_code: {item_code}")
        if product.skus and key not in product.skus:
            shown = ", ".join(v for v in key if v is not None) or "no dimensions"
            raise LookupError(f"SKU not found for item_code {item_code}: {shown}")
        if barcode in self.barcodes:
            raise FileExistsError(f"Unique constraint error, this barcode {barcode} already exists")
        self._prog_id += 1
        rec = BarcodeRecord(self._prog_id, barcode, item_code, key, barcode_type)
        self.barcodes[barcode] = rec
        return rec

    def delete_barcode(self, item_code: str, barcode: str, ignore_movements: bool) -> None:
        """Raises ``LookupError`` (404) or ``PermissionError`` (422, used in documents)."""
        if item_code not in self.products:
            raise LookupError(f"Product not found with item_code: {item_code}")
        rec = self.barcodes.get(barcode)
        if rec is None or rec.item_code != item_code:
            raise LookupError(f"Barcode not found: {barcode}")
        if rec.used_in_documents and not ignore_movements:
            raise PermissionError("This SKU/barcode has been already moved")
        del self.barcodes[barcode]

    def generate_missing(self, item_code: str, dims: dict[str, Any]) -> list[BarcodeRecord]:
        product = self.products.get(item_code)
        if product is None:
            raise LookupError(f"Product not found with item_code: {item_code}")
        wanted = [_dims(dims.get(f"dimension_level{i}") for i in range(1, 6))] if dims else []
        skus = wanted or product.skus or [_dims(())]
        if wanted and product.skus and wanted[0] not in product.skus:
            raise LookupError(f"Product not found with item_code: {item_code}")
        covered = {(r.item_code, r.dimensions) for r in self.barcodes.values()}
        created = []
        for sku in skus:
            if (item_code, sku) in covered:
                continue
            while True:
                self._product_barcodes += 1
                code = make_ean13("805", 9000000 + self._product_barcodes)
                if code not in self.barcodes:
                    break
            self._prog_id += 1
            rec = BarcodeRecord(self._prog_id, code, item_code, sku, "EAN13")
            self.barcodes[code] = rec
            created.append(rec)
        return created
