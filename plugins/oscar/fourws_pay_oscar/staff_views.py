"""Dashboard actions: resend and cancel the gift cards sold on an order; refund the gift
cards an order was paid with (``refund``).

Staff only (``is_staff`` with ``order.change_order``, as Oscar's dashboard asks for
changing an order), POST only, and back to the dashboard's order page with a
message: what was sent, what is taken back, or why nothing was done (a card spent to zero
is refused, the 4WS service being unreachable is said so). Never a traceback.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from oscar.core.loading import get_model

from fourws_pay.errors import (
    FourWSError,
    InvalidInputError,
    InvalidStateError,
    NotFoundInLedgerError,
    SaleAlreadySpentError,
)
from fourws_pay.logs import get_logger
from fourws_pay_oscar import refunds, selling
from fourws_pay_oscar.forms import GiftCardRefundForm

log = get_logger()


def _may_act(request: HttpRequest) -> bool:
    """Staff who may change orders on Oscar's dashboard (``order.change_order``)."""
    user = request.user
    return bool(user.is_staff and user.has_perm("order.change_order"))


def _staff_order(request: HttpRequest, number: str) -> object:
    order = get_model("order", "Order").objects.filter(number=number).first()
    if order is None:
        raise Http404("no such order")
    return order


def _back(number: str) -> HttpResponse:
    return redirect("dashboard:order-detail", number=number)


@require_POST
def resend(request: HttpRequest, number: str) -> HttpResponse:
    if not _may_act(request):
        return HttpResponseForbidden()
    order = _staff_order(request, number)
    try:
        sent = selling.resend(order)
    except FourWSError as exc:
        log.warning("fourws_pay_oscar.resend_failed", order=number, error=type(exc).__name__)
        messages.error(request, _("The gift cards could not be sent again: %s") % exc)
        return _back(number)
    if sent:
        messages.success(
            request,
            _("%(n)d gift card(s) e-mailed again to their recipients.") % {"n": len(sent)},
        )
    else:
        messages.info(request, _("No delivered gift card to send again on this order."))
    return _back(number)


@require_POST
def cancel(request: HttpRequest, number: str, card_id: str) -> HttpResponse:
    if not _may_act(request):
        return HttpResponseForbidden()
    order = _staff_order(request, number)
    try:
        result = selling.cancel_card(order, card_id)
    except SaleAlreadySpentError:
        messages.error(
            request,
            _(
                "This gift card has already been spent in full: there is nothing to take "
                "back, so it was not cancelled and nothing should be refunded for it."
            ),
        )
        return _back(number)
    except NotFoundInLedgerError:
        raise Http404("no such gift card on this order") from None
    except FourWSError as exc:
        log.warning("fourws_pay_oscar.cancel_failed", order=number, error=type(exc).__name__)
        messages.error(request, _("The gift card could not be cancelled now: %s") % exc)
        return _back(number)
    card = result.card
    if card.state.value == "cancelling":
        messages.info(
            request,
            _(
                "Gift card %(card)s is being cancelled: what is unspent is taken back once "
                "4WS has finished loading it. The order notes will say how much."
            )
            % {"card": card.masked_barcode or card.id},
        )
        return _back(number)
    messages.success(
        request,
        _(
            "Gift card %(card)s cancelled: %(amount)s %(currency)s taken back (what was "
            "unspent). Refund the buyer this amount."
        )
        % {
            "card": card.masked_barcode or card.id,
            "amount": result.taking_back,
            "currency": card.currency,
        },
    )
    return _back(number)


@require_POST
def refund(request: HttpRequest, number: str) -> HttpResponse:
    """Refund part or all of the order's gift-card payment (``refund_order``, newest
    capture first). The form's ``refund_key`` names the refund: the same form sent again
    finds the same refund and posts nothing twice; the message lists each card's part."""
    if not _may_act(request):
        return HttpResponseForbidden()
    order = _staff_order(request, number)
    form = GiftCardRefundForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(str(e) for errs in form.errors.values() for e in errs)
        messages.error(request, _("Nothing was refunded: %s") % errors)
        return _back(number)
    key = f"staff-{number}-{form.cleaned_data['refund_key']}"
    try:
        outcome = refunds.refund_order_gift_cards(
            order, form.cleaned_data["amount"], refund_key=key
        )
    except (InvalidInputError, InvalidStateError) as exc:
        messages.error(request, _("Nothing was refunded: %s") % exc)
        return _back(number)
    except FourWSError as exc:
        log.warning("fourws_pay_oscar.refund_failed", order=number, error=type(exc).__name__)
        messages.error(request, _("The refund could not be made now: %s") % exc)
        return _back(number)
    parts = ", ".join(
        f"{op.amount} {op.currency} to {op.masked_barcode}" for op in outcome.operations
    )
    messages.success(
        request,
        _(
            "Refund of %(amount)s %(currency)s to the gift cards requested: %(parts)s. "
            "Each part counts as refunded once 4WS confirms it."
        )
        % {"amount": outcome.refund.amount, "currency": outcome.refund.currency, "parts": parts},
    )
    return _back(number)
