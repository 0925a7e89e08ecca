"""Typed shapes of what 4WS sends and what we send to it.

Response models are tolerant (``extra="allow"``: a field 4WS adds tomorrow never breaks a
shop) but not gullible: a field the payment rules depend on (the card's barcode and balance)
must be present and well-typed, or parsing raises. Request models are strict
(``extra="forbid"``, validated amounts) because what we send moves money.

Defaults for flags a card omits are the *safe* ones: a card without ``flgActive`` is not
active; a card without ``flgPartiallyUsage`` may be spent in several goes (the common case and
the reference's example); a card without ``flgNetworkUsage`` is usable across the network.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from fourws_pay.api.fields import Code, Flag, Money, UTCDateTime
from fourws_pay.money import DEFAULT_DECIMALS, MAX_DECIMALS, to_decimal


class ResponseModel(BaseModel):
    """Base of every model parsed from 4WS: camelCase on the wire, extra fields kept."""

    model_config = ConfigDict(
        extra="allow",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        hide_input_in_errors=True,  # inputs hold card numbers, tokens, callback secrets
        defer_build=True,  # build validators on first use: keeps `import` fast
    )


class GiftCard(ResponseModel):
    """A gift card as Get Giftcard returns it. ``amount`` is the available balance."""

    card_barcode: Code
    amount: Money
    id: Code | None = None
    company_id: Code | None = None
    site_id: Code | None = None
    branch_code: Code | None = None
    entity_code: Code | None = None
    issue_date: UTCDateTime = None
    activation_date: UTCDateTime = None
    expiration_date: UTCDateTime = None
    flg_active: Flag = False
    price_list: Code | None = None
    price_list_type: str | None = None
    decimal_number: int = Field(default=DEFAULT_DECIMALS, ge=0, le=MAX_DECIMALS)
    currency_symbol: str | None = None
    currency: str | None = None
    original_amount: Money | None = None
    item_type: str | None = None
    item_subtype: str | None = None
    item_code: Code | None = None
    tax_rate: Money | None = None
    vat_code: Code | None = None
    printer_department_code: Code | None = None
    flg_network_usage: Flag = True
    flg_partially_usage: Flag = True
    payment_term_code: Code | None = None
    flg_allow_offline_usage: Flag = False
    taxation: Code | None = None

    @field_validator("decimal_number", mode="before")
    @classmethod
    def _decimal_number(cls, value: Any) -> Any:
        if value is None or value == "":
            return DEFAULT_DECIMALS
        if isinstance(value, str | Decimal):
            number = to_decimal(value, what="decimalNumber")
            # "1.5" digits is nonsense, and a huge exponent would make int() crawl
            if number != number.to_integral_value() or not -1 <= number <= MAX_DECIMALS + 1:
                raise ValueError("decimalNumber must be a small whole number")
            return int(number)
        return value


class VoucherStatus(StrEnum):
    """``documentStatus`` of a loyalty voucher.

    The reference documents OPEN (unused) and CLOSE (spent) but its example says ACTIVE;
    anything else parses as UNKNOWN rather than failing.
    """

    OPEN = "OPEN"
    ACTIVE = "ACTIVE"
    CLOSE = "CLOSE"
    UNKNOWN = "UNKNOWN"


class LoyaltyVoucher(ResponseModel):
    """A loyalty-programme voucher of a customer card (not a gift card)."""

    id: Code  # a UUID in the reference; numbers tolerated like other codes
    barcode: Code
    total_amount: Money
    document_type: str | None = None
    cause: str | None = None
    document_status: VoucherStatus = VoucherStatus.UNKNOWN
    branch_code: Code | None = None
    branch_description: str | None = None
    card_barcode: Code | None = None
    client_code: Code | None = None
    client_id_keepit: Code | None = None
    subject_denomination: str | None = None
    confirmation_date_order: UTCDateTime = None
    end_validity: UTCDateTime = None
    currency: str | None = None
    currency_symbol: str | None = None
    seller_code: Code | None = None
    seller_description: str | None = None

    @field_validator("document_status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> VoucherStatus:
        text = str(value or "").strip().upper()
        try:
            return VoucherStatus(text)
        except ValueError:
            return VoucherStatus.UNKNOWN

    def is_usable(self, now: datetime) -> bool:
        """Open/active and not past ``endValidity`` (4WS may return expired vouchers)."""
        if self.document_status not in (VoucherStatus.OPEN, VoucherStatus.ACTIVE):
            return False
        return self.end_validity is None or now < self.end_validity


class VoucherPage(ResponseModel):
    """One page (at most 20) of a loyalty-voucher read, with the customer's totals if sent."""

    value_object_list: list[LoyaltyVoucher] = Field(default_factory=list)
    more_rows: Flag = False
    result_set_length: int | None = None
    valid_ticket: Money | None = None
    remaining_purchases: Money | None = None
    valid_sales_total_amount: Money | None = None
    valid_sales_total_cashback: Money | None = None


class QueuedOperation(ResponseModel):
    """4WS accepted an asynchronous call; the outcome arrives later on the callback.

    ``"success": true`` alone means "enqueued" (docs/4ws-reference.md §6), so an answer without
    a ``queueId`` (the reference shows none for Activate Giftcard) is accepted with
    ``queue_id=None`` rather than treated as ambiguous. Correlation never depends on it: our
    callbacks carry our own operation id.
    """

    queue_id: str | None = None

    @field_validator("queue_id", mode="before")
    @classmethod
    def _queue_id(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # ids may come as numbers, like every other code
        return value


class GeneratedGiftCard(ResponseModel):
    """A barcode created by generateGiftcards, to be activated at sale time."""

    barcode: Code
    start_validity: UTCDateTime = None
    end_validity: UTCDateTime = None


class GiftCardPdf(ResponseModel):
    """Gift Card PDF Generation: a download URL, or a queue id when 4WS answers later.

    The reference shows a synchronous URL in its diagram and a callback among its actors;
    we accept either (``url`` or ``pdfUrl``/``fileUrl``).
    """

    url: str | None = Field(default=None, validation_alias=AliasChoices("url", "pdfUrl", "fileUrl"))
    queue_id: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> GiftCardPdf:
        if not self.url and not self.queue_id:
            raise ValueError("neither a PDF url nor a queueId")
        return self


class LoginToken(ResponseModel):
    """A Data management bearer token. ``token`` is secret and never printed."""

    token: SecretStr
    username: Code | None = None
    company_id: Code | None = None
    site_id: Code | None = None
    expires: UTCDateTime = None
    expires_in_ms: int | None = Field(default=None, alias="expiresInMS")

    @field_validator("token", mode="before")
    @classmethod
    def _token(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise ValueError("token must be a non-empty string")
        return value


class DataModel(BaseModel):
    """Base of Data management models: snake_case on the wire, extra fields kept."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        frozen=True,
        hide_input_in_errors=True,
        defer_build=True,
    )


class InsertedBarcode(DataModel):
    """A barcode attached to a SKU; ``prog_id`` is 4WS's internal id."""

    barcode: Code
    prog_id: Code | None = Field(default=None, validation_alias=AliasChoices("prog_id", "progId"))


class Sku(DataModel):
    """The SKU a barcode belongs to: a product plus its dimension values."""

    item_code: Code = Field(validation_alias=AliasChoices("item_code", "itemCode"))
    barcode: Code | None = None
    barcode_type: str | None = None
    dimension_level1: Code | None = None
    dimension_level2: Code | None = None
    dimension_level3: Code | None = None
    dimension_level4: Code | None = None
    dimension_level5: Code | None = None


# --------------------------------------------------------------------------- callbacks


class GenerateGiftCardsResult(ResponseModel):
    """Callback body of generateGiftcards: the barcodes, or ``success: false`` + message."""

    success: StrictBool  # "true", 1 or "yes" is not a success (invariant 13)
    giftcards: list[GeneratedGiftCard] = Field(default_factory=list)
    message: str | None = None
    payload: Any = None


class UpdateGiftCardResult(ResponseModel):
    """Callback body of updateGiftcard.

    ``id`` is documented in the success example; whether it equals the ``queueId`` is not,
    so correlation goes through our own ``payload`` and callback URL.
    """

    success: StrictBool  # "true", 1 or "yes" is not a success (invariant 13)
    id: Code | None = None
    queue_id: str | None = None
    message: str | None = None
    payload: Any = None


# ---------------------------------------------------------------------------- requests


class RequestModel(BaseModel):
    """Base of what we send: strict, unknown fields refused."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,
        defer_build=True,
    )


INSERT_ONLY_FIELDS = (
    "activation_date",
    "country",
    "branch_code",
    "price_list",
    "currency_symbol",
    "currency",
)


class GiftCardUpdate(RequestModel):
    """Body of updateGiftcard.

    A positive ``amount`` activates (loads) a card and may carry the insert-only fields; a
    negative one consumes and must not carry them. ``amount`` must be a non-zero Decimal
    with at most ``decimals`` digits; it is sent as a JSON number written exactly.
    """

    entity_code: str = Field(min_length=1)
    barcode: str = Field(min_length=1)
    amount: Decimal
    decimals: int = Field(default=DEFAULT_DECIMALS, ge=0, le=MAX_DECIMALS, exclude=True)
    activation_date: datetime | None = None
    country: str | None = None
    branch_code: str | None = None
    price_list: str | None = None
    currency_symbol: str | None = None
    currency: str | None = None
    client_barcode: str | None = None
    client_code: str | None = None
    client_denomination: str | None = None
    callback: str | None = None
    payload: Any = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Decimal:
        return to_decimal(value)

    @model_validator(mode="after")
    def _check(self) -> GiftCardUpdate:
        from fourws_pay.money import quantum

        if self.amount == 0:
            raise ValueError("amount must not be zero")
        if self.amount.quantize(quantum(self.decimals)) != self.amount:
            raise ValueError(f"amount has more than {self.decimals} decimal digits")
        if self.amount < 0:
            present = [f for f in INSERT_ONLY_FIELDS if getattr(self, f) is not None]
            if present:
                raise ValueError(
                    f"insert-only fields are for activation only: {', '.join(present)}"
                )
        if self.activation_date is not None and self.activation_date.tzinfo is None:
            raise ValueError("activation_date must be timezone-aware")
        if self.callback is not None and not self.callback.startswith(("http://", "https://")):
            raise ValueError("callback must be an http(s) URL")
        if self.payload is not None:
            from fourws_pay.api import wirejson

            try:  # fail here, not halfway through sending (floats are refused on the wire)
                wirejson.dumps(self.payload)
            except (TypeError, ValueError, RecursionError):
                raise ValueError(
                    "payload must be JSON: dicts, lists, strings, ints, bools, Decimals"
                ) from None
        return self

    @property
    def kind(self) -> Literal["activation", "consumption"]:
        return "activation" if self.amount > 0 else "consumption"

    def wire(self) -> dict[str, Any]:
        """The JSON object to send, camelCase, without unset fields (never ``null``)."""
        from fourws_pay.api.fields import format_datetime

        body: dict[str, Any] = {}
        for name in type(self).model_fields:
            if name == "decimals":
                continue
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, datetime):
                value = format_datetime(value)
            body[to_camel(name)] = value
        return body


class GenerateGiftCardsRequest(RequestModel):
    """Body of generateGiftcards: how many barcodes of which financial item."""

    item_code: str = Field(min_length=1)
    giftcards: int = Field(ge=1, le=10_000, strict=True)  # True is not "1 card"
    callback: str

    def wire(self) -> dict[str, Any]:
        return {"itemCode": self.item_code, "giftcards": self.giftcards, "callback": self.callback}


class BarcodeInsert(RequestModel):
    """Body of Insert barcode: the SKU (product + dimension values) and the barcode."""

    barcode: str = Field(min_length=1, max_length=250)
    barcode_type: str = "EAN13"
    dimension_level1: str | None = None
    dimension_level2: str | None = None
    dimension_level3: str | None = None
    dimension_level4: str | None = None
    dimension_level5: str | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)
