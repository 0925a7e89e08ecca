"""Selling 4WS gift cards from Saleor orders: issued once the order is paid, delivered, shown.

Choices, and why:

- **What is a 4WS gift card**: an order line whose product type carries the public metadata
  ``fourws.giftcard = "true"`` (``GIFTCARD_METADATA_KEY``); an optional
  ``fourws.item_code`` on the product type names its 4WS item, else the tenant's
  ``FOURWS_ISSUING_ITEM_CODE``. Not Saleor's product-type kind ``GIFT_CARD``: Saleor
  fulfils those itself with *its own* gift cards (``fulfill_non_shippable_gift_cards`` in
  ``handle_fully_paid_order``), and the buyer would get two cards. A line whose variant
  Saleor does not show the App (a product hidden or deleted since) cannot be recognised: it is
  logged (``saleor.sale_line_unreadable``), never guessed.
- **When**: on ``ORDER_FULLY_PAID`` (an async webhook, needing ``MANAGE_ORDERS``), and only
  when the order's ``chargeStatus`` is ``FULL`` or ``OVERCHARGED`` in that very payload:
  never on authorization, never on an order that is only partly charged. Selling is opt-in
  (``AppConfig.sell_giftcards``): a payment-only App asks Saleor for no order permission.
- **Face value**: the line's *undiscounted* unit gross price; a voucher the buyer used is the
  shop's gift to the buyer, not a smaller card. ``quantity`` cards per line, all in one
  generate request; the card's decimals are the currency's (2 unless the currency has 0 or 3).
- **Exactly once**: the sale is recorded (``SaleStore``) before the webhook is answered and
  issued after; the ledger's ``issue_cards`` is idempotent per (order, line, index) under the
  order's issuing lock, so a redelivered webhook, two deliveries racing each other, or a crash
  between the answer and the issuing (the maintenance pass issues every sale still
  ``received``) all end with one card per unit, loaded once.
- **Delivery**: the ledger calls ``fourws_pay_deliver_giftcards`` once the cards are active;
  the App forwards it to the shop's ``deliver_giftcards(sale, cards, pdf_url)``
  (``create_app(..., deliver_giftcards=...)`` or ``AppConfig.giftcard_delivery`` =
  ``"package.module:function"``), which has the buyer's e-mail and order number in ``sale``
  and the whole codes in ``cards``. If it raises, the ledger offers the same cards again on
  its next pass (at least once; never new cards). Without one the cards are only recorded, and
  the App logs so at start-up.
- **What Saleor shows**: the order's *private* metadata ``fourws.giftcards`` (staff with
  ``MANAGE_ORDERS`` only): each card's line, masked code, amount, currency and state, rewritten
  whenever a card changes (``updatePrivateMetadata``), from the ledger, so it can lag but never
  lies. Whole codes never reach Saleor or the logs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import httpx

from fourws_pay.clock import Clock
from fourws_pay.errors import ConfigurationError, InvalidInputError
from fourws_pay.hookspecs import hookimpl
from fourws_pay.logs import get_logger
from fourws_pay.payments.models import EventKind, IssuedCard, PaymentEvent
from fourws_pay_saleor.config import AppConfig
from fourws_pay_saleor.gateway import Gateway
from fourws_pay_saleor.jsonutil import dumps
from fourws_pay_saleor.payloads import PayloadError
from fourws_pay_saleor.sales import RECEIVED, Sale, SaleLine, SaleStore
from fourws_pay_saleor.store import AppStore

log = get_logger(component="saleor.selling")

SELLING_PLUGIN_NAME = "fourws_pay_saleor.selling"
GIFTCARD_METADATA_KEY = "fourws.giftcard"
ITEM_CODE_METADATA_KEY = "fourws.item_code"
ORDER_METADATA_KEY = "fourws.giftcards"
ORDER_FULLY_PAID_PATH = "/api/webhooks/order-fully-paid"
PAID_STATUSES = frozenset({"FULL", "OVERCHARGED"})

ORDER_FULLY_PAID_QUERY = (
    "subscription { event { version ... on OrderFullyPaid { order {"
    " id number userEmail chargeStatus channel { slug }"
    " lines { id quantity undiscountedUnitPrice { gross { amount currency } }"
    " variant { product { productType { metadata { key value } } } } }"
    " } } } }"
)

UPDATE_METADATA_MUTATION = (
    "mutation FourWSGiftCards($id: ID!, $input: [MetadataInput!]!) {"
    " updatePrivateMetadata(id: $id, input: $input) { errors { field message code } } }"
)

# ISO 4217 minor units where they are not 2 (the currencies a shop may plausibly sell in).
_MINOR_UNITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"), 0),
    **dict.fromkeys(("RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}

EVENTS_THAT_CHANGE_CARDS = frozenset(
    {
        EventKind.CARD_ISSUED,
        EventKind.CARD_DELIVERED,
        EventKind.ISSUE_FAILED,
        EventKind.SALE_CANCELLED,
    }
)


class DeliverGiftcards(Protocol):
    """The shop's delivery: e-mail ``cards`` (whole codes) to ``sale.email``; may raise."""

    def __call__(self, sale: Sale, cards: list[IssuedCard], pdf_url: str | None) -> None: ...


def currency_decimals(currency: str) -> int:
    return _MINOR_UNITS.get(currency.upper(), 2)


def load_delivery(path: str) -> DeliverGiftcards:
    """``"package.module:function"`` (``AppConfig.giftcard_delivery``) as a callable."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            "FOURWS_SALEOR_GIFTCARD_DELIVERY must be 'package.module:function'"
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load the gift-card delivery {path!r}: {exc}") from None
    if not callable(target):
        raise ConfigurationError(f"the gift-card delivery {path!r} is not callable")
    delivery: DeliverGiftcards = target
    return delivery


# -- the payload ---------------------------------------------------------------------------


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be an object")
    return value


def _is_giftcard(line: dict[str, Any]) -> tuple[bool, str | None, bool]:
    """(sold as a 4WS gift card, its item code, the variant was readable)."""
    variant = line.get("variant")
    if variant is None:
        return False, None, False
    product = _mapping(variant, "line.variant").get("product")
    product_type = _mapping(product, "variant.product").get("productType")
    metadata = _mapping(product_type, "product.productType").get("metadata") or []
    if not isinstance(metadata, list):
        raise PayloadError("productType.metadata must be a list")
    values = {
        str(item.get("key")): item.get("value") for item in metadata if isinstance(item, dict)
    }
    flag = str(values.get(GIFTCARD_METADATA_KEY, "")).strip().lower()
    item_code = values.get(ITEM_CODE_METADATA_KEY)
    item = str(item_code).strip() if item_code else None
    return flag in {"true", "1", "yes", "y"}, item or None, True


def parse_order_fully_paid(api_url: str, document: Any) -> tuple[Sale, str]:
    """The sale in an ``ORDER_FULLY_PAID`` body, and the order's ``chargeStatus``.

    Lines that are not gift cards are left out; ``PayloadError`` for a malformed body."""
    order = _mapping(_mapping(document, "body").get("order"), "order")
    order_id = order.get("id")
    if not isinstance(order_id, str) or not order_id:
        raise PayloadError("order.id is required")
    charge_status = str(order.get("chargeStatus") or "")
    channel = order.get("channel")
    slug = str(_mapping(channel, "order.channel").get("slug") or "") if channel else ""
    raw_lines = order.get("lines")
    if not isinstance(raw_lines, list):
        raise PayloadError("order.lines must be a list")
    lines: list[SaleLine] = []
    for raw in raw_lines:
        line = _mapping(raw, "order line")
        line_id = line.get("id")
        if not isinstance(line_id, str) or not line_id:
            raise PayloadError("order line id is required")
        sold, item_code, readable = _is_giftcard(line)
        if not readable:
            log.warning("saleor.sale_line_unreadable", order_id=order_id, line_id=line_id)
        if not sold:
            continue
        quantity = line.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise PayloadError("order line quantity must be a positive integer")
        price = _mapping(
            _mapping(line.get("undiscountedUnitPrice"), "undiscountedUnitPrice").get("gross"),
            "undiscountedUnitPrice.gross",
        )
        try:
            amount = Decimal(str(price.get("amount")))
        except InvalidOperation:
            raise PayloadError("undiscountedUnitPrice.gross.amount is not a number") from None
        currency = price.get("currency")
        if not isinstance(currency, str) or len(currency) != 3:
            raise PayloadError("undiscountedUnitPrice.gross.currency is required")
        lines.append(SaleLine(line_id, quantity, amount, currency.upper(), item_code))
    sale = Sale(
        order_id=order_id,
        api_url=api_url,
        number=str(order.get("number") or ""),
        email=str(order.get("userEmail") or ""),
        channel=slug,
        lines=tuple(lines),
        state=RECEIVED,
    )
    return sale, charge_status


def metadata_value(cards: list[IssuedCard]) -> str:
    """The ``fourws.giftcards`` private-metadata value: masked codes only."""
    return dumps(
        [
            {
                "line": card.line_id,
                "index": card.line_index,
                "code": card.masked_barcode,
                "amount": str(card.amount),
                "currency": card.currency,
                "state": str(card.state.value),
            }
            for card in cards
        ]
    )


# -- the App's part ------------------------------------------------------------------------


class SaleorSelling:
    """Issues, delivers and shows the cards of paid orders; a pluggy plugin on the ledger.

    Registered on each gateway's plugin manager (``SELLING_PLUGIN_NAME``): the ledger calls
    its delivery hook and tells it of card events, which only write a row and wake the App's
    flush loop (hooks do no network I/O, except delivery, whose job it is)."""

    def __init__(
        self,
        config: AppConfig,
        sales: SaleStore,
        installations: AppStore,
        gateway_for: Callable[[str], Gateway],
        http: httpx.AsyncClient,
        clock: Clock,
        wake: Callable[[], None],
        deliver: DeliverGiftcards | None = None,
    ) -> None:
        self.config = config
        self.sales = sales
        self._installations = installations
        self._gateway_for = gateway_for
        self._http = http
        self._clock = clock
        self._wake = wake
        self._deliver = deliver

    # -- ORDER_FULLY_PAID ----------------------------------------------------------------

    def receive(self, api_url: str, document: Any) -> Sale | None:
        """Record a paid order's gift-card lines; the sale to issue, or None (nothing to sell).

        Written before Saleor gets its answer: from here on the maintenance pass finishes
        the sale even if this process dies."""
        sale, charge_status = parse_order_fully_paid(api_url, document)
        if charge_status not in PAID_STATUSES:
            log.warning(
                "saleor.sale_not_fully_charged",
                order_id=sale.order_id,
                charge_status=charge_status or None,
            )
            return None
        if not sale.lines:
            return None
        if not self.sales.record(sale, self._clock.now()):
            log.info("saleor.sale_redelivered", order_id=sale.order_id)
        return self.sales.get(sale.order_id)

    async def issue(self, sale: Sale) -> None:
        """Ask the ledger for every card of the sale (idempotent); never raises."""
        gateway = self._gateway_for(sale.channel)
        try:
            for line in sale.lines:
                await gateway.issue_cards(
                    sale.order_id,
                    line.line_id,
                    amount=line.amount,
                    currency=line.currency,
                    count=line.quantity,
                    item_code=line.item_code,
                    decimals=currency_decimals(line.currency),
                )
        except InvalidInputError as exc:
            # Asking again cannot help (a line the ledger refuses, another amount for a card
            # already sold): staff must look. Lines issued before it keep their cards.
            log.error("saleor.sale_refused", order_id=sale.order_id, error=str(exc))
            self.sales.refuse(sale.order_id, str(exc), self._clock.now())
            return
        except Exception as exc:  # recorded: the maintenance pass asks again
            log.error("saleor.sale_issue_failed", order_id=sale.order_id, error=repr(exc))
            self.sales.note_error(sale.order_id, repr(exc), self._clock.now())
            return
        now = self._clock.now()
        self.sales.mark_issued(sale.order_id, now)
        self.sales.touch(sale.order_id, now)
        log.info("saleor.sale_issued", order_id=sale.order_id, lines=len(sale.lines))

    async def run_pending(self) -> None:
        """Issue every sale recorded but not yet issued (a crash, or 4WS was down)."""
        for sale in self.sales.in_state(RECEIVED):
            await self.issue(sale)

    # -- hooks (called inside ledger steps, maybe on a worker thread) --------------------

    @hookimpl
    def fourws_pay_deliver_giftcards(
        self, order_ref: str, cards: list[IssuedCard], pdf_url: str | None
    ) -> None:
        sale = self.sales.get(order_ref)
        if sale is None:
            return  # not a Saleor sale of this App (another host shares the ledger)
        if self._deliver is not None:
            self._deliver(sale, cards, pdf_url)  # raises: the ledger offers them again
        if self.sales.touch(order_ref, self._clock.now()):
            self._wake()

    @hookimpl
    def fourws_pay_payment_event(self, event: PaymentEvent) -> None:
        try:
            card = event.issued_card
            if card is None or event.kind not in EVENTS_THAT_CHANGE_CARDS:
                return
            if self.sales.touch(card.order_ref, self._clock.now()):
                self._wake()
        except Exception as exc:  # a listener must never break a payment step
            log.error("saleor.sale_event_failed", kind=str(event.kind), error=repr(exc))

    # -- the order's metadata ------------------------------------------------------------

    async def flush_metadata(self) -> None:
        """Write ``fourws.giftcards`` on every order whose cards changed since last written."""
        for sale in self.sales.metadata_due():
            installation = self._installations.get_installation(sale.api_url)
            if installation is None or not installation.active:
                continue
            cards = await self._gateway_for(sale.channel).issued_cards(sale.order_id)
            try:
                response = await self._http.post(
                    sale.api_url,
                    json={
                        "query": UPDATE_METADATA_MUTATION,
                        "variables": {
                            "id": sale.order_id,
                            "input": [{"key": ORDER_METADATA_KEY, "value": metadata_value(cards)}],
                        },
                    },
                    headers={"Authorization": f"Bearer {installation.token}"},
                    timeout=self.config.http_timeout,
                )
                errors = _mutation_errors(response)
            except httpx.HTTPError as exc:
                errors = [repr(exc)]
            now = self._clock.now()
            if errors:
                log.warning("saleor.sale_metadata_failed", order_id=sale.order_id, errors=errors)
                self.sales.note_error(sale.order_id, "; ".join(errors), now)
                continue
            self.sales.metadata_written(sale.order_id, sale.metadata_version, now)


def _mutation_errors(response: httpx.Response) -> list[str]:
    if response.status_code != 200:
        return [f"HTTP {response.status_code}"]
    try:
        body = response.json()
    except ValueError:
        return ["unreadable answer"]
    if not isinstance(body, dict):
        return ["unreadable answer"]
    if body.get("errors"):
        return [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in body["errors"]]
    data = body.get("data")
    result = data.get("updatePrivateMetadata") if isinstance(data, dict) else None
    if not isinstance(result, dict):
        return ["no updatePrivateMetadata in the answer"]
    errors = result.get("errors") or []
    return [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors]
