"""Saleor webhook payloads, parsed leniently.

The body of a subscription webhook is the ``event`` object selected by the App's own query
(``subscriptions.py``), so only the fields asked for arrive. Models ignore unknown fields so
that a Saleor upgrade or a shop's richer query does not break parsing; what the App relies
on is required and typed, and anything missing is a ``PayloadError`` (answered 400).
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class PayloadError(ValueError):
    """The body is not the payload the endpoint expects."""


class WebhookEvent(StrEnum):
    """The sync events the App subscribes to; ``Saleor-Event`` carries the lower-case value."""

    PAYMENT_GATEWAY_INITIALIZE_SESSION = "payment_gateway_initialize_session"
    TRANSACTION_INITIALIZE_SESSION = "transaction_initialize_session"
    TRANSACTION_PROCESS_SESSION = "transaction_process_session"
    TRANSACTION_CHARGE_REQUESTED = "transaction_charge_requested"
    TRANSACTION_REFUND_REQUESTED = "transaction_refund_requested"
    TRANSACTION_CANCELATION_REQUESTED = "transaction_cancelation_requested"

    @property
    def enum_name(self) -> str:
        """The upper-case name used in the manifest's ``syncEvents``."""
        return self.value.upper()


ACTION_EVENTS = frozenset(
    {
        WebhookEvent.TRANSACTION_CHARGE_REQUESTED,
        WebhookEvent.TRANSACTION_REFUND_REQUESTED,
        WebhookEvent.TRANSACTION_CANCELATION_REQUESTED,
    }
)


class ActionType(StrEnum):
    CHARGE = "CHARGE"
    AUTHORIZATION = "AUTHORIZATION"
    REFUND = "REFUND"
    CANCEL = "CANCEL"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class Money(_Model):
    amount: Decimal
    currency: str


class TaxedMoney(_Model):
    gross: Money


class Channel(_Model):
    slug: str


class SourceObject(_Model):
    """The checkout or order being paid."""

    typename: str | None = Field(default=None, alias="__typename")
    id: str
    channel: Channel | None = None
    total_price: TaxedMoney | None = Field(default=None, alias="totalPrice")  # Checkout
    total: TaxedMoney | None = None  # Order

    @property
    def gross(self) -> Money | None:
        money = self.total_price or self.total
        return money.gross if money else None


class TransactionRef(_Model):
    id: str
    psp_reference: str | None = Field(default=None, alias="pspReference")


class Action(_Model):
    amount: Decimal
    currency: str
    action_type: ActionType = Field(alias="actionType")


class PaymentGatewayInitializeSession(_Model):
    source_object: SourceObject | None = Field(default=None, alias="sourceObject")
    data: Any = None
    amount: Decimal | None = None


class TransactionSession(_Model):
    """TRANSACTION_INITIALIZE_SESSION and TRANSACTION_PROCESS_SESSION."""

    transaction: TransactionRef
    action: Action
    source_object: SourceObject | None = Field(default=None, alias="sourceObject")
    data: Any = None
    merchant_reference: str | None = Field(default=None, alias="merchantReference")
    idempotency_key: str | None = Field(default=None, alias="idempotencyKey")
    customer_ip_address: str | None = Field(default=None, alias="customerIpAddress")


class GrantedRefund(_Model):
    id: str


class TransactionActionRequest(_Model):
    """TRANSACTION_CHARGE_REQUESTED, _REFUND_REQUESTED and _CANCELATION_REQUESTED.

    ``grantedRefund`` (Saleor >= 3.15, refunds only) names the granted refund a refund
    request settles; Saleor updates the granted refund's status from the reported outcome.
    """

    transaction: TransactionRef
    action: Action
    granted_refund: GrantedRefund | None = Field(default=None, alias="grantedRefund")

    @property
    def granted_refund_id(self) -> str | None:
        return self.granted_refund.id if self.granted_refund else None


_MODELS: dict[WebhookEvent, type[_Model]] = {
    WebhookEvent.PAYMENT_GATEWAY_INITIALIZE_SESSION: PaymentGatewayInitializeSession,
    WebhookEvent.TRANSACTION_INITIALIZE_SESSION: TransactionSession,
    WebhookEvent.TRANSACTION_PROCESS_SESSION: TransactionSession,
    WebhookEvent.TRANSACTION_CHARGE_REQUESTED: TransactionActionRequest,
    WebhookEvent.TRANSACTION_REFUND_REQUESTED: TransactionActionRequest,
    WebhookEvent.TRANSACTION_CANCELATION_REQUESTED: TransactionActionRequest,
}


def parse_payload(event: WebhookEvent, document: Any) -> _Model:
    """Validate a decoded body; raises ``PayloadError`` naming the fields that are wrong."""
    if not isinstance(document, dict):
        raise PayloadError("payload must be a JSON object")
    try:
        return _MODELS[event].model_validate(document)
    except ValidationError as exc:
        where = ", ".join(".".join(str(p) for p in err["loc"]) for err in exc.errors()[:5])
        raise PayloadError(f"invalid {event.enum_name} payload: {where}") from None


_CODE_KEYS = ("code", "giftCardCode", "giftcardCode", "barcode")


def gift_card_code(data: Any) -> str | None:
    """The gift-card code the storefront put in ``data`` (``{"code": "..."}``), if any."""
    if not isinstance(data, dict):
        return None
    for key in _CODE_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            code = value.strip()
            if len(code) > 64 or not code.isprintable():
                return None
            return code
    return None
