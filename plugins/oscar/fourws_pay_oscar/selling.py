"""Oscar sells 4WS gift cards: a product class, issued once the order is paid, mailed.

- **What is a gift card**: a product whose class has the slug ``GIFTCARD_PRODUCT_CLASS``
  (``setup_product_class()`` makes it, with the three recipient options). Its face value
  is the line's unit price before discounts (a discount is the shop's gift to the buyer,
  not a smaller card); a list of amounts is a list of products or child variants, each
  with its price. The recipient's name, e-mail and message are Oscar product options, so
  Oscar's add-to-basket form asks for them and keeps them on the basket and order line
  (``line.attributes``). A product may instead let the buyer type the amount, within
  limits (``allow_free_amount`` and ``fourws_pay_oscar.strategy``).
- **When it is issued**: once the order is *paid*, that is when what its payment sources
  were debited (less what was refunded) covers the order total (``is_paid``). A gift-card
  payment counts once 4WS settled it (``Source.debit`` on the callback), the shop's own
  method when its ``handle_payment`` (or a later capture) debits its ``Source``; a source
  that is only allocated (authorised) does not count. Every ``Source`` save re-checks,
  after the transaction commits, so whichever payment completes the order issues it.
  ``issue_cards`` is called once per gift-card line, and is idempotent: a check that runs
  twice finds the same cards.
- **Delivery** (``deliver``, from the ``fourws_pay_deliver_giftcards`` hook): one e-mail
  per recipient with all their codes (and the 4WS PDF link when there is one), through
  Django's mail framework. No recipient e-mail on the line: the buyer's.
- **Who sees a code**: the buyer, signed in, on their own account's order page; everyone
  else (staff on the dashboard, the thank-you page) sees it masked to its last four digits.
  Staff resend (the same codes to the same recipients) and cancel a sold card
  (``cancel_card``: only what is unspent is taken back).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings as django_settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import Q as models_q
from django.template.loader import render_to_string
from oscar.core.loading import get_model

from fourws_pay.errors import FourWSError
from fourws_pay.logs import get_logger, mask_barcode
from fourws_pay.payments.models import IssuedCard
from fourws_pay_oscar import conf, provider, recording

log = get_logger()

RECIPIENT_NAME = "giftcard-recipient-name"
RECIPIENT_EMAIL = "giftcard-recipient-email"
RECIPIENT_MESSAGE = "giftcard-recipient-message"
AMOUNT = "giftcard-amount"  # a free amount, on products that offer one (allow_free_amount)
OPTIONS = (
    (RECIPIENT_NAME, "Recipient's name"),
    (RECIPIENT_EMAIL, "Recipient's e-mail"),
    (RECIPIENT_MESSAGE, "Message for the recipient"),
)


def setup_product_class(name: str = "Gift card") -> Any:
    """The gift-card product class (slug ``GIFTCARD_PRODUCT_CLASS``) with its recipient
    options; idempotent. No shipping, no stock: a card is made when it is sold."""
    product_class, _ = get_model("catalogue", "ProductClass").objects.get_or_create(
        slug=conf.get("GIFTCARD_PRODUCT_CLASS"),
        defaults={"name": name, "requires_shipping": False, "track_stock": False},
    )
    option_model = get_model("catalogue", "Option")
    for code, label in OPTIONS:
        option, _ = option_model.objects.get_or_create(
            code=code, defaults={"name": label, "type": "text", "required": False}
        )
        product_class.options.add(option)
    return product_class


def allow_free_amount(product: Any) -> None:
    """Let the buyer type the card's amount on ``product`` (within
    ``GIFTCARD_AMOUNT_LIMITS``; blank: the product's price). Needs
    ``fourws_pay_oscar.strategy.GiftCardAmountMixin`` in the shop's strategy."""
    option, _ = get_model("catalogue", "Option").objects.get_or_create(
        code=AMOUNT, defaults={"name": "Gift card amount", "type": "text", "required": False}
    )
    product.product_options.add(option)


def typed_amount(line: Any) -> str:
    """The amount typed on a basket line, or ``""``."""
    for attribute in line.attributes.all():
        if attribute.option is not None and attribute.option.code == AMOUNT:
            return str(attribute.value or "").strip()
    return ""


def on_basket_attribute_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """``post_save`` of a basket ``LineAttribute``: a typed amount becomes the price the
    line records when added, so Oscar's basket does not warn that "the price increased"
    from the product's price to the typed one."""
    if not created or instance.option is None or instance.option.code != AMOUNT:
        return
    from fourws_pay_oscar.strategy import amount_limits, parse_amount

    amount = parse_amount(str(instance.value or ""))
    low, high = amount_limits()
    if amount is not None and low <= amount <= high:
        type(instance.line).objects.filter(pk=instance.line_id).update(
            price_excl_tax=amount, price_incl_tax=amount
        )


def line_id(line: Any) -> str:
    """The fourws-pay ``line_id`` of an Oscar order line."""
    return f"line-{line.pk}"


def is_giftcard_line(line: Any) -> bool:
    return line.product is not None and is_giftcard_product(line.product)


def is_giftcard_product(product: Any) -> bool:
    product_class = product.get_product_class()
    return bool(product_class and product_class.slug == conf.get("GIFTCARD_PRODUCT_CLASS"))


def giftcard_lines(order: Any) -> list[Any]:
    return [line for line in order.lines.order_by("pk") if is_giftcard_line(line)]


def face_value(line: Any) -> Decimal:
    """What each card of the line is loaded with: the unit price before discounts."""
    return Decimal(line.unit_price_incl_tax)


def paid_amount(order: Any) -> Decimal:
    """What the order's sources were debited, less what was refunded (Oscar's own books)."""
    return sum(
        (Decimal(s.amount_debited) - Decimal(s.amount_refunded) for s in order.sources.all()),
        Decimal(0),
    )


def is_paid(order: Any) -> bool:
    """Fully paid: authorised or allocated amounts do not count, only debited ones."""
    total = Decimal(order.total_incl_tax)
    return total > 0 and paid_amount(order) >= total


def issue_paid_order(order: Any) -> list[IssuedCard]:
    """Issue the order's gift cards if it is paid; nothing (``[]``) before. Idempotent.

    Never raises: a refusal or an unreachable 4WS is logged and noted for staff; the sold
    cards already recorded are carried on by ``fourws_pay_reconcile``, and the next
    payment change of the order checks again."""
    lines = giftcard_lines(order)
    if not lines or not is_paid(order):
        return []
    payments = provider.get_payments()
    order_ref = conf.order_ref(order.number)
    item_code = conf.get("GIFTCARD_ITEM_CODE")
    issued: list[IssuedCard] = []
    for line in lines:
        try:
            issued += payments.issue_cards(
                order_ref,
                line_id(line),
                amount=face_value(line),
                currency=order.currency,
                count=line.quantity,
                item_code=item_code,
            )
        except FourWSError as exc:
            log.error(
                "fourws_pay_oscar.issue_failed",
                order=order.number,
                line=line_id(line),
                error=type(exc).__name__,
            )
            recording.note(
                order,
                f"4WS gift cards for line {line.pk} ({line.title}) could not be issued: "
                f"{str(exc)[:300]}",
            )
    provider.after_balance_change()
    return issued


def issue_missed_orders(days: int = 30) -> int:
    """Issue paid orders of the last ``days`` whose gift-card lines have fewer sold cards
    than their quantity: the check after a ``Source`` commit never ran (the process died
    between the commit and it). ``fourws_pay_reconcile`` calls this; returns the number of
    orders it issued."""
    from datetime import timedelta

    from django.utils import timezone

    order_model = get_model("order", "Order")
    slug = conf.get("GIFTCARD_PRODUCT_CLASS")
    recent = order_model.objects.filter(
        date_placed__gte=timezone.now() - timedelta(days=days)
    ).filter(
        models_q(lines__product__product_class__slug=slug)
        | models_q(lines__product__parent__product_class__slug=slug)
    )
    payments = provider.get_payments()
    issued = 0
    for order in recent.distinct().order_by("pk"):
        wanted = sum(line.quantity for line in giftcard_lines(order))
        sold = [
            c
            for c in payments.issued_cards(conf.order_ref(order.number))
            if not c.line_id.startswith("refund:")
        ]
        if len(sold) < wanted and is_paid(order) and issue_paid_order(order):
            issued += 1
    return issued


def on_source_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_save`` of Oscar's payment ``Source``: check the order once the payment
    change is committed (a rolled-back checkout issues nothing)."""
    order_id = instance.order_id
    if order_id is None:
        return

    def check() -> None:
        order = get_model("order", "Order").objects.filter(pk=order_id).first()
        if order is not None:
            issue_paid_order(order)

    transaction.on_commit(check, robust=True)


# ------------------------------------------------------------------------ delivery


@dataclass
class Recipient:
    email: str
    name: str = ""
    message: str = ""
    cards: list[IssuedCard] = field(default_factory=list)


def _attributes(line: Any) -> dict[str, str]:
    return {a.type: str(a.value or "").strip() for a in line.attributes.all()}


def recipients(order: Any, cards: Iterable[IssuedCard]) -> list[Recipient]:
    """The cards grouped by who receives them (e-mail, case-insensitive); a card of no
    gift-card line (store credit of a refund) or without a recipient goes to the buyer."""
    by_line = {line_id(line): line for line in order.lines.all()}
    grouped: dict[str, Recipient] = {}
    for card in cards:
        line = by_line.get(card.line_id)
        attrs = _attributes(line) if line is not None else {}
        email = attrs.get(RECIPIENT_EMAIL) or order.email or ""
        key = email.lower()
        if key not in grouped:
            grouped[key] = Recipient(
                email=email,
                name=attrs.get(RECIPIENT_NAME, ""),
                message=attrs.get(RECIPIENT_MESSAGE, ""),
            )
        grouped[key].cards.append(card)
    return list(grouped.values())


def deliver(order: Any, cards: list[IssuedCard], pdf_url: str | None) -> int:
    """Mail ``cards`` (whole codes inside), one message per recipient; returns how many.

    A failing mail server raises, so fourws-pay offers the cards again (at least once)."""
    sent = 0
    for recipient in recipients(order, cards):
        if not recipient.email:
            log.error("fourws_pay_oscar.giftcard_no_recipient", order=order.number)
            continue
        context = {
            "order": order,
            "recipient": recipient,
            "cards": recipient.cards,
            "pdf_url": pdf_url,
            "buyer": order.email,
        }
        subject = " ".join(
            render_to_string("fourws_pay_oscar/email/giftcards_subject.txt", context).split()
        )
        body = render_to_string("fourws_pay_oscar/email/giftcards_body.txt", context)
        EmailMessage(
            subject,
            body,
            getattr(django_settings, "OSCAR_FROM_EMAIL", None) or None,
            [recipient.email],
        ).send()
        sent += 1
        recording.note(
            order,
            f"4WS gift cards {', '.join(c.masked_barcode or '?' for c in recipient.cards)} "
            f"e-mailed to {_masked_email(recipient.email)}.",
            note_type="Info",
        )
    return sent


def _masked_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


# ------------------------------------------------------------------- staff actions


def order_cards(order: Any) -> list[IssuedCard]:
    return provider.get_payments().issued_cards(conf.order_ref(order.number))


def resend(order: Any, card_ids: list[str] | None = None) -> list[IssuedCard]:
    """Staff: the same codes to the same recipients again (delivered cards only)."""
    return provider.get_payments().resend_giftcards(conf.order_ref(order.number), card_ids)


@dataclass(frozen=True)
class CancelResult:
    """``card`` as the cancel left it (its ``message`` says what is being taken back);
    ``reclaimed``: what 4WS has confirmed taken back so far (the reclaim capture settles
    on its callback, so right after the cancel this is usually still 0)."""

    card: IssuedCard
    reclaimed: Decimal
    taking_back: Decimal  # held on the card for the reclaim: what will come back


def cancel_card(order: Any, card_id: str) -> CancelResult:
    """Cancel one sold card of ``order``, taking back only what is unspent.

    Raises ``SaleAlreadySpentError`` for a card spent to zero (nothing comes back) and
    ``NotFoundInLedgerError`` for a card of another order."""
    from fourws_pay.errors import NotFoundInLedgerError

    payments = provider.get_payments()
    if card_id not in {c.id for c in order_cards(order)}:
        raise NotFoundInLedgerError(f"order {order.number} has no sold card {card_id!r}")
    payments.cancel_issued_card(card_id)
    provider.after_balance_change()
    card = payments.get_issued_card(card_id)
    recording.note(
        order,
        f"4WS gift card {card.masked_barcode or card.id} cancelled by staff: "
        f"{card.message or card.state.value}. Refund the buyer what is taken back.",
        note_type="Info",
    )
    taking_back = sum(
        (
            hold.applied_amount
            for hold in payments.list_reservations(order_ref=card_id)
            if hold.state.value in ("active", "captured")
        ),
        Decimal(0),
    )
    return CancelResult(
        card=card, reclaimed=payments.reclaimed_amount(card_id), taking_back=taking_back
    )


def display_code(card: IssuedCard, *, reveal: bool) -> str:
    """The code as a page shows it: whole only when ``reveal`` (the buyer's own page)."""
    if not card.barcode:
        return ""
    return card.barcode if reveal else mask_barcode(card.barcode)


__all__ = [
    "AMOUNT",
    "OPTIONS",
    "RECIPIENT_EMAIL",
    "RECIPIENT_MESSAGE",
    "RECIPIENT_NAME",
    "CancelResult",
    "Recipient",
    "allow_free_amount",
    "cancel_card",
    "deliver",
    "display_code",
    "giftcard_lines",
    "is_giftcard_line",
    "is_giftcard_product",
    "is_paid",
    "issue_missed_orders",
    "issue_paid_order",
    "line_id",
    "order_cards",
    "paid_amount",
    "recipients",
    "resend",
    "setup_product_class",
    "typed_amount",
]
