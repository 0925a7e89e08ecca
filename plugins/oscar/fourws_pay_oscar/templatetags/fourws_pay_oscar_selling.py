"""``{% sold_giftcards order %}``: the 4WS gift cards sold on an order, for its pages.

The whole code is shown only to the buyer, signed in, on their own order
(``reveal`` below); staff and everyone else see it masked to its last four digits. With
``staff=True`` the list carries the dashboard's resend and cancel buttons.

``{% giftcard_refunds order %}``: for staff, the refunds of the gift cards the order was
paid with, each part (card, amount, state), and the refund form.
"""

from __future__ import annotations

from typing import Any

from django import template

from fourws_pay.errors import FourWSError
from fourws_pay.logs import get_logger
from fourws_pay_oscar import recording, refunds, selling
from fourws_pay_oscar.forms import GiftCardRefundForm, new_refund_key

register = template.Library()
log = get_logger()

# before it is loaded a cancel simply drops the card; once loaded it takes back what is unspent
_CANCELLABLE = {"requested", "generating", "generated", "active", "delivering", "delivered"}


def reveals_codes(request: Any, order: Any, *, staff: bool) -> bool:
    """Whole codes only for the buyer's own signed-in view, never on staff pages."""
    user = getattr(request, "user", None)
    return bool(
        not staff
        and user is not None
        and user.is_authenticated
        and order.user_id is not None
        and order.user_id == user.pk
    )


@register.inclusion_tag("fourws_pay_oscar/order/giftcards.html", takes_context=True)
def sold_giftcards(context: Any, order: Any, staff: bool = False) -> dict[str, Any]:
    request = context.get("request")
    reveal = reveals_codes(request, order, staff=staff)
    try:
        cards = selling.order_cards(order) if selling.giftcard_lines(order) else []
    except FourWSError as exc:
        log.warning("fourws_pay_oscar.giftcards_unreadable", error=type(exc).__name__)
        cards = []
    titles = {selling.line_id(line): line.title for line in order.lines.all()}
    rows = [
        {
            "id": card.id,
            "code": selling.display_code(card, reveal=reveal),
            "amount": card.amount,
            "currency": card.currency,
            "state": card.state.value,
            "line": titles.get(card.line_id, card.line_id),
            "message": card.message or "",
            "cancellable": card.state.value in _CANCELLABLE,
        }
        for card in cards
    ]
    return {
        "order": order,
        "giftcards": rows,
        "staff": staff,
        "resendable": any(r["state"] == "delivered" for r in rows),
        "request": request,
        "csrf_token": context.get("csrf_token"),
    }


@register.inclusion_tag("fourws_pay_oscar/order/refunds.html", takes_context=True)
def giftcard_refunds(context: Any, order: Any) -> dict[str, Any]:
    paid = recording.gift_card_sources(order).exists()
    try:
        rows = refunds.order_refunds(order) if paid else []
    except FourWSError as exc:
        log.warning("fourws_pay_oscar.refunds_unreadable", error=type(exc).__name__)
        rows = []
    settled = paid and any(
        refunds.refundable_amount(s) > 0 for s in recording.gift_card_sources(order)
    )
    return {
        "order": order,
        "paid_by_giftcards": paid,
        "refunds": rows,
        # a fresh key each time the page is shown: one form, one refund
        "refund_form": GiftCardRefundForm(initial={"refund_key": new_refund_key()})
        if settled
        else None,
        "request": context.get("request"),
        "csrf_token": context.get("csrf_token"),
    }
