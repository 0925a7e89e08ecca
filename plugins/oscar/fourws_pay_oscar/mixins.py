"""Gift-card payment for an Oscar ``PaymentDetailsView``, as a mixin.

Put it first in the bases of the shop's view::

    class PaymentDetailsView(GiftCardPaymentDetailsMixin, ShopPaymentDetailsView): ...

What it does to Oscar's checkout:

- payment details: a code field; on "Continue" the card is checked for the order total and
  the page is shown again with the uniform refusal, or the preview shows what the card pays
  and what is left for the shop's other method. The code travels to the preview sealed in a
  hidden input (``fourws_pay_oscar.codes``), never in clear.
- ``handle_payment``: *reserve* on the card (an allocated ``Source`` with an ``Authorise``
  transaction); any remainder is handed to the next ``handle_payment`` in the MRO, i.e. the
  shop's own method. A refusal becomes ``UnableToTakePayment`` with the customer message,
  so Oscar re-renders the payment page, thaws the basket and creates no order.
- order placement fails after payment: the hold is *released* (Oscar swallows the error).
- order placed: *capture*; settlement arrives later on the callback
  (``fourws_pay_oscar.recording``).

Partial payment needs another method: by default it is allowed exactly when a class after
this mixin overrides ``handle_payment`` (Oscar's own does nothing). Without one the checkout
is gift-card only: a code is required and must cover the whole order.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from oscar.apps.payment.exceptions import UnableToTakePayment
from oscar.core.prices import Price

from fourws_pay.errors import FourWSError, PaymentRefused, ThrottledError
from fourws_pay.logs import get_logger
from fourws_pay_oscar import codes, conf, provider, recording
from fourws_pay_oscar.forms import GiftCardForm

log = get_logger()

TOKEN_FIELD = "giftcard_token"


def unavailable_message() -> str:
    return _(
        "The gift card service is not available right now, and nothing was charged to "
        "your card. Please try again in a few minutes."
    )


def throttled_message() -> str:
    return _("Too many gift card attempts. Please wait a few minutes and try again.")


def expired_token_message() -> str:
    return _("For your security, please enter your gift card code again.")


def needs_full_cover_message(usable: Decimal, total: Decimal, currency: str) -> str:
    return _(
        "This gift card can pay %(usable)s %(currency)s of this %(total)s %(currency)s order. "
        "This shop takes gift cards only for the whole amount."
    ) % {"usable": usable, "total": total, "currency": currency}


def code_required_message() -> str:
    return _("Please enter your gift card code.")


class GiftCardPaymentDetailsMixin:
    giftcard_form_class = GiftCardForm
    # None: decided from the MRO (see the module docstring); True/False: forced.
    giftcard_partial_allowed: bool | None = None
    template_name = "fourws_pay_oscar/checkout/payment_details.html"
    template_name_preview = "fourws_pay_oscar/checkout/preview.html"

    _giftcard_form: GiftCardForm | None = None
    _giftcard_code: str | None = None
    _giftcard_usable: Decimal | None = None
    _giftcard_reservation: Any = None
    _giftcard_captured: bool = False

    # -- policy --------------------------------------------------------------------------

    def giftcard_allows_partial(self) -> bool:
        """Whether a card may pay part of the order, the rest going to another method."""
        if self.giftcard_partial_allowed is not None:
            return self.giftcard_partial_allowed
        mro = type(self).__mro__
        after = mro[mro.index(GiftCardPaymentDetailsMixin) + 1 :]
        for klass in after:
            if "handle_payment" in vars(klass):
                return not klass.__module__.startswith("oscar.")
        return False

    def giftcard_required(self) -> bool:
        """A gift-card-only checkout needs a code; others fall back to their own method."""
        return not self.giftcard_allows_partial()

    def giftcard_client_key(self) -> str | None:
        """Who is guessing, for fourws-pay's lookup throttle: the client address."""
        request: HttpRequest = self.request  # type: ignore[attr-defined]
        return request.META.get("REMOTE_ADDR") or None

    # -- rendering -----------------------------------------------------------------------

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        ctx: dict[str, Any] = super().get_context_data(**kwargs)  # type: ignore[misc]
        ctx.setdefault("giftcard_form", self._giftcard_form or self.giftcard_form_class())
        ctx["giftcard_required"] = self.giftcard_required()
        if getattr(self, "preview", False) and self._giftcard_code:
            ctx["giftcard"] = self._giftcard_summary(ctx.get("order_total"))
        return ctx

    def _giftcard_summary(self, order_total: Price | None) -> dict[str, Any]:
        request: HttpRequest = self.request  # type: ignore[attr-defined]
        code = self._giftcard_code or ""
        summary: dict[str, Any] = {
            "masked_code": _masked(code),
            "token": codes.seal(code, basket_id=request.basket.id),  # type: ignore[attr-defined]
        }
        if order_total is not None and self._giftcard_usable is not None:
            usable = min(self._giftcard_usable, order_total.incl_tax)
            summary.update(
                amount=usable,
                remainder=order_total.incl_tax - usable,
                currency=order_total.currency,
            )
        return summary

    # -- payment details -> preview ------------------------------------------------------

    def handle_payment_details_submission(self, request: HttpRequest) -> HttpResponse:
        form = self.giftcard_form_class(request.POST)
        self._giftcard_form = form
        if not form.is_valid():
            return self.render_payment_details(request, giftcard_form=form)  # type: ignore[attr-defined,no-any-return]
        code = form.cleaned_data["giftcard_code"]
        if not code:
            if self.giftcard_required():
                form.add_error("giftcard_code", code_required_message())
                return self.render_payment_details(request, giftcard_form=form)  # type: ignore[attr-defined,no-any-return]
            return super().handle_payment_details_submission(request)  # type: ignore[misc,no-any-return]

        total: Price = self.build_submission()["order_total"]  # type: ignore[attr-defined]
        problem = self._giftcard_check(code, total)
        if problem:
            form.add_error("giftcard_code", problem)
            return self.render_payment_details(request, giftcard_form=form)  # type: ignore[attr-defined,no-any-return]
        self._giftcard_code = code
        return super().handle_payment_details_submission(request)  # type: ignore[misc,no-any-return]

    def _giftcard_check(self, code: str, total: Price) -> str | None:
        """None if the card can pay (sets the usable amount), else the customer message."""
        try:
            decision = provider.get_payments().check(
                code,
                amount=total.incl_tax,
                currency=total.currency,
                client_key=self.giftcard_client_key(),
                allow_partial=self.giftcard_allows_partial(),
            )
        except ThrottledError:
            return throttled_message()
        except FourWSError as exc:
            log.warning("fourws_pay_oscar.check_failed", error=type(exc).__name__)
            return unavailable_message()
        if not decision.ok:
            return str(decision.public_message)
        if not decision.covers_full_amount and not self.giftcard_allows_partial():
            return needs_full_cover_message(decision.usable_amount, total.incl_tax, total.currency)
        self._giftcard_usable = decision.usable_amount
        return None

    # -- preview -> place order ----------------------------------------------------------

    def handle_place_order_submission(self, request: HttpRequest) -> HttpResponse:
        token = request.POST.get(TOKEN_FIELD, "")
        if token:
            try:
                self._giftcard_code = codes.unseal(
                    token,
                    basket_id=request.basket.id,  # type: ignore[attr-defined]
                )
            except codes.CodeTokenError:
                return self.render_payment_details(request, error=expired_token_message())  # type: ignore[attr-defined,no-any-return]
        elif self.giftcard_required():
            return self.render_payment_details(request, error=code_required_message())  # type: ignore[attr-defined,no-any-return]
        return super().handle_place_order_submission(request)  # type: ignore[misc,no-any-return]

    def handle_payment(self, order_number: str, total: Price, **kwargs: Any) -> None:
        code = self._giftcard_code
        if not code:
            super().handle_payment(order_number, total, **kwargs)  # type: ignore[misc]
            return
        partial = self.giftcard_allows_partial()
        payments = provider.get_payments()
        try:
            reservation = payments.reserve(
                code,
                amount=total.incl_tax,
                currency=total.currency,
                order_ref=conf.order_ref(order_number),
                client_key=self.giftcard_client_key(),
                allow_partial=partial,
            )
        except PaymentRefused as exc:
            raise UnableToTakePayment(exc.public_message) from None
        except ThrottledError:
            raise UnableToTakePayment(throttled_message()) from None
        except FourWSError as exc:
            log.warning("fourws_pay_oscar.reserve_failed", error=type(exc).__name__)
            raise UnableToTakePayment(unavailable_message()) from None
        self._giftcard_reservation = reservation
        remainder = total.incl_tax - reservation.applied_amount
        if remainder > 0 and not partial:
            self.giftcard_release()
            raise UnableToTakePayment(
                needs_full_cover_message(reservation.applied_amount, total.incl_tax, total.currency)
            )
        self.add_payment_source(recording.new_source(reservation, total.currency))  # type: ignore[attr-defined]
        if remainder > 0:
            try:
                super().handle_payment(order_number, _remainder_price(total, remainder), **kwargs)  # type: ignore[misc]
            except BaseException:
                self.giftcard_release()
                raise

    # -- after payment -------------------------------------------------------------------

    def handle_order_placement(self, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return super().handle_order_placement(*args, **kwargs)  # type: ignore[misc,no-any-return]
        except BaseException:
            if not self._giftcard_captured:
                self.giftcard_release()
            raise

    def handle_successful_order(self, order: Any) -> HttpResponse:
        if self._giftcard_reservation is not None and not self._giftcard_captured:
            self.giftcard_capture(order)
        return super().handle_successful_order(order)  # type: ignore[misc,no-any-return]

    def giftcard_release(self) -> None:
        """Drop this checkout's hold; never raises (the customer sees Oscar's message)."""
        reservation = self._giftcard_reservation
        if reservation is None:
            return
        self._giftcard_reservation = None
        try:
            provider.get_payments().release(reservation.id)
        except FourWSError as exc:
            log.error(
                "fourws_pay_oscar.release_failed",
                reservation_id=reservation.id,
                error=type(exc).__name__,
            )

    def giftcard_capture(self, order: Any) -> None:
        """Take the held amount now that the order exists; problems go to staff, not here.

        The order is already placed, so nothing raised here may reach Oscar (it would show
        the customer an error for an order that exists): a refusal or an unreachable 4WS
        becomes a payment event and an order note. A card busy with another payment queues
        the capture in fourws-pay, which posts it at its turn (a note says it waits).
        """
        reservation = self._giftcard_reservation
        self._giftcard_captured = True
        try:
            operation = provider.get_payments().capture(reservation.id)
        except PaymentRefused as exc:
            if not order.payment_events.filter(event_type__name=recording.CAPTURE_FAILED):
                recording.record_capture_problem(
                    order,
                    title=recording.CAPTURE_FAILED,
                    amount=reservation.applied_amount,
                    reference=reservation.id,
                    detail=exc.message,
                )
            return
        except FourWSError as exc:
            log.error(
                "fourws_pay_oscar.capture_failed",
                order=order.number,
                reservation_id=reservation.id,
                error=type(exc).__name__,
            )
            recording.note(
                order,
                f"4WS gift card {reservation.masked_barcode}: the capture of "
                f"{reservation.applied_amount} {order.currency} did not get a clear answer "
                f"({type(exc).__name__}). fourws-pay reconciles it; check the order later.",
                note_type="Warning",
            )
            return
        recording.record_capture_requested(order, operation)
        provider.after_balance_change()


def _masked(code: str) -> str:
    from fourws_pay.logs import mask_barcode

    return mask_barcode(code)


def _remainder_price(total: Price, remainder: Decimal) -> Price:
    """What is left for the shop's other method, with tax split in the same proportion."""
    if not total.incl_tax:
        return Price(currency=total.currency, excl_tax=remainder, incl_tax=remainder)
    excl = (total.excl_tax * remainder / total.incl_tax).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP
    )
    return Price(currency=total.currency, excl_tax=excl, incl_tax=remainder)
