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

Several cards (the "Apply gift card" button, up to ``FOURWS_PAY["MAX_CARDS"]``): each
press holds the cards at once with fourws-pay's ``reserve_order`` (all or nothing; a
refused card leaves the applied ones held as they were), "Remove" lets the order's holds go
and holds the rest again; "Place order" re-asserts the allocation, adds one ``Source`` per
card, hands the rest to the shop's method and, once the order exists, ``capture_order``
captures every hold. See "Several gift cards on one order" in the plugin's README.

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

from fourws_pay.errors import (
    FourWSError,
    OrderAllocationError,
    OrderCaptureError,
    PaymentRefused,
    ThrottledError,
)
from fourws_pay.logs import get_logger
from fourws_pay_oscar import codes, conf, provider, recording
from fourws_pay_oscar.forms import GiftCardForm

log = get_logger()

TOKEN_FIELD = "giftcard_token"
# Several cards ("Apply" on payment details): the button's name/value and the session key.
ACTION_FIELD = "giftcard_action"
APPLY = "apply"
REMOVE_FIELD = "giftcard_remove"
SESSION_KEY = "fourws_pay_oscar.giftcards"


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


def too_many_cards_message(limit: int) -> str:
    return _("An order can be paid with at most %(n)d gift cards.") % {"n": limit}


def already_applied_message() -> str:
    return _("This gift card is already applied to this order.")


def not_needed_message() -> str:
    return _("The gift cards already applied pay the whole order: this card is not needed.")


def refused_card_message(masked: str | None, public: str) -> str:
    """A refused card when others are applied: which one, and that the others still pay."""
    if masked:
        return _("Gift card %(card)s: %(reason)s The cards already applied are unchanged.") % {
            "card": masked,
            "reason": public,
        }
    return _("%(reason)s The cards already applied are unchanged.") % {"reason": public}


def cards_dropped_message() -> str:
    return _(
        "Your gift cards could not be held for the changed order and were removed; nothing "
        "was charged. Please apply them again."
    )


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
    # several cards: the allocation handle_payment held, a notice and the typed code to
    # show again (only after a refused "Apply")
    _giftcard_allocation: Any = None
    _giftcard_multi: bool = False
    _giftcard_notice: str | None = None
    _giftcard_typed: str = ""

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
        ctx.update(self._giftcards_context(ctx.get("order_total")))
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
        total: Price = self.build_submission()["order_total"]  # type: ignore[attr-defined]
        action = request.POST.get(ACTION_FIELD, "")
        if REMOVE_FIELD in request.POST:  # a card's "Remove" button carries its index
            return self._giftcard_remove(request, total)
        form = self.giftcard_form_class(request.POST)
        self._giftcard_form = form
        if not form.is_valid():
            return self.render_payment_details(request, giftcard_form=form)  # type: ignore[attr-defined,no-any-return]
        code = form.cleaned_data["giftcard_code"]
        if action == APPLY or (code and self.giftcard_applied()):
            if not code:
                form.add_error("giftcard_code", code_required_message())
                return self.render_payment_details(request, giftcard_form=form)  # type: ignore[attr-defined,no-any-return]
            problem = self._giftcard_apply(code, total)
            if problem:
                self._giftcard_typed = form.data.get("giftcard_code", "")
                form.add_error("giftcard_code", problem)
                return self.render_payment_details(request, giftcard_form=form)  # type: ignore[attr-defined,no-any-return]
            if action == APPLY:
                fresh = self.giftcard_form_class()  # empty, for the next card
                self._giftcard_form = fresh
                return self.render_payment_details(request, giftcard_form=fresh)  # type: ignore[attr-defined,no-any-return]
        if self.giftcard_applied():
            problem = self._giftcard_ready(total)
            if problem:
                return self.render_payment_details(request, error=problem)  # type: ignore[attr-defined,no-any-return]
            return super().handle_payment_details_submission(request)  # type: ignore[misc,no-any-return]
        if not code:
            if self.giftcard_required():
                form.add_error("giftcard_code", code_required_message())
                return self.render_payment_details(request, giftcard_form=form)  # type: ignore[attr-defined,no-any-return]
            return super().handle_payment_details_submission(request)  # type: ignore[misc,no-any-return]

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
        elif self.giftcard_applied():
            self._giftcard_multi = True
        elif self.giftcard_required():
            return self.render_payment_details(request, error=code_required_message())  # type: ignore[attr-defined,no-any-return]
        return super().handle_place_order_submission(request)  # type: ignore[misc,no-any-return]

    def handle_payment(self, order_number: str, total: Price, **kwargs: Any) -> None:
        if self._giftcard_multi:
            self._giftcard_pay_applied(order_number, total, **kwargs)
            return
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
                self.giftcard_release()  # one typed card; applied cards stay applied
            raise

    def handle_successful_order(self, order: Any) -> HttpResponse:
        if self._giftcard_reservation is not None and not self._giftcard_captured:
            self.giftcard_capture(order)
        if self._giftcard_allocation is not None and not self._giftcard_captured:
            self.giftcard_capture_order(order)
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

    # -- several cards ("Apply") ---------------------------------------------------------
    #
    # Each "Apply" holds the cards at once, through fourws-pay's reserve_order (all or
    # nothing), for the order this basket becomes: Oscar numbers an order from its basket,
    # so the holds carry the order's ref before the order exists. The session keeps the
    # applied cards (codes sealed, as in the hidden input), their shares and holds; the
    # allocation key names the card set's version and the order total, so a removal or a
    # changed total re-plans under a new key after letting the old holds go.

    def giftcard_max_cards(self) -> int:
        return conf.max_cards()

    def giftcard_order_ref(self) -> str:
        """The fourws-pay ``order_ref`` of the order this basket will be placed as."""
        basket = self.request.basket  # type: ignore[attr-defined]
        return conf.order_ref(str(self.generate_order_number(basket)))  # type: ignore[attr-defined]

    def giftcard_applied(self) -> list[dict[str, str]]:
        """The applied cards: ``token`` (sealed code), ``masked``, ``amount``, ``hold``."""
        return list(self._giftcard_state()["cards"])

    def _giftcard_basket_id(self) -> int | None:
        return self.request.basket.id  # type: ignore[attr-defined,no-any-return]

    def _giftcard_state(self) -> dict[str, Any]:
        request: HttpRequest = self.request  # type: ignore[attr-defined]
        state = request.session.get(SESSION_KEY)
        basket_id = self._giftcard_basket_id()
        if not isinstance(state, dict) or state.get("basket") != basket_id:
            return {"basket": basket_id, "version": 0, "total": None, "cards": []}
        return dict(state)

    def _giftcard_save(self, state: dict[str, Any]) -> None:
        request: HttpRequest = self.request  # type: ignore[attr-defined]
        request.session[SESSION_KEY] = state

    def _giftcard_forget(self) -> None:
        request: HttpRequest = self.request  # type: ignore[attr-defined]
        request.session.pop(SESSION_KEY, None)

    def _giftcard_codes(self, state: dict[str, Any]) -> dict[str, str]:
        """code -> sealed token of the applied cards; ``CodeTokenError`` if one expired."""
        basket_id = self._giftcard_basket_id()
        return {codes.unseal(c["token"], basket_id=basket_id): c["token"] for c in state["cards"]}

    def _giftcard_hold(
        self, state: dict[str, Any], tokens: dict[str, str], total: Price, order_ref: str
    ) -> Any:
        """``reserve_order`` on the cards of ``tokens``; on success the state lists the
        cards that pay something, with their shares and holds."""
        allocation = provider.get_payments().reserve_order(
            order_ref,
            cards=list(tokens),
            amount=total.incl_tax,
            currency=total.currency,
            allocation_key=f"checkout-{state['version']}-{state['total']}",
            client_key=self.giftcard_client_key(),
            allow_partial=True,  # in between, cards may pay part; _giftcard_ready checks
        )
        state["cards"] = [
            {
                "token": tokens[hold.barcode],
                "masked": hold.masked_barcode,
                "amount": str(hold.applied_amount),
                "hold": hold.id,
            }
            for hold in allocation.reservations
        ]
        return allocation

    def _giftcard_replan(
        self, state: dict[str, Any], tokens: dict[str, str], total: Price
    ) -> str | None:
        """Let every hold of the order go, then hold ``tokens`` again under a new key
        (a card removed, or the total changed); the message when they could not be."""
        payments = provider.get_payments()
        state["version"] = int(state["version"]) + 1
        state["total"] = str(total.incl_tax)
        state["cards"] = []
        problem = None
        try:
            payments.release_order(self.giftcard_order_ref())
            if tokens:
                self._giftcard_hold(state, tokens, total, self.giftcard_order_ref())
        except FourWSError as exc:
            log.warning("fourws_pay_oscar.replan_failed", error=type(exc).__name__)
            state["cards"] = []
            problem = cards_dropped_message()
        self._giftcard_save(state)
        return problem

    def _giftcard_synced(self, total: Price) -> tuple[dict[str, Any], str | None]:
        """The applied cards for ``total``: re-planned when the order total changed since
        they were applied, dropped (holds released) when a sealed code expired."""
        state = self._giftcard_state()
        if not state["cards"]:
            return state, None
        try:
            tokens = self._giftcard_codes(state)
        except codes.CodeTokenError:
            self._giftcard_replan(state, {}, total)
            return state, expired_token_message()
        if state["total"] != str(total.incl_tax):
            return state, self._giftcard_replan(state, tokens, total)
        return state, None

    def _giftcard_apply(self, code: str, total: Price) -> str | None:
        """Hold ``code`` with the cards already applied; None, or why it was not applied
        (the cards already applied are then as they were: reserve_order keeps their holds
        and lets go only of what it placed itself)."""
        state, problem = self._giftcard_synced(total)
        if problem:
            return problem
        tokens = self._giftcard_codes(state)
        if code in tokens:
            return already_applied_message()
        limit = self.giftcard_max_cards()
        if len(tokens) >= limit:
            return too_many_cards_message(limit)
        if state["total"] is None:
            state["total"] = str(total.incl_tax)
        tokens[code] = codes.seal(code, basket_id=self._giftcard_basket_id())
        others = len(tokens) > 1
        try:
            allocation = self._giftcard_hold(state, tokens, total, self.giftcard_order_ref())
        except OrderAllocationError as exc:
            return (
                refused_card_message(exc.masked_barcode, exc.public_message)
                if others
                else (exc.public_message)
            )
        except ThrottledError:
            return throttled_message()
        except PaymentRefused as exc:  # only the new card is read: the others are held
            return (
                refused_card_message(_masked(code), exc.public_message)
                if others
                else exc.public_message
            )
        except FourWSError as exc:
            log.warning("fourws_pay_oscar.apply_failed", error=type(exc).__name__)
            return unavailable_message()
        self._giftcard_save(state)
        share = allocation.share_of(code)
        if share <= 0:
            return not_needed_message()
        self._giftcard_notice = _(
            "Gift card %(card)s applied: it pays %(amount)s %(currency)s."
        ) % {
            "card": _masked(code),
            "amount": share,
            "currency": total.currency,
        }
        return None

    def _giftcard_remove(self, request: HttpRequest, total: Price) -> HttpResponse:
        state, problem = self._giftcard_synced(total)
        cards = state["cards"]
        try:
            index = int(request.POST.get(REMOVE_FIELD, ""))
            removed = cards[index]
        except (ValueError, IndexError):
            return self.render_payment_details(request, error=problem)  # type: ignore[attr-defined,no-any-return]
        state["cards"] = [c for i, c in enumerate(cards) if i != index]
        tokens = self._giftcard_codes(state)
        problem = self._giftcard_replan(state, tokens, total) or problem
        self._giftcard_notice = _("Gift card %(card)s removed; nothing is held on it.") % {
            "card": removed["masked"]
        }
        return self.render_payment_details(request, error=problem)  # type: ignore[attr-defined,no-any-return]

    def _giftcard_ready(self, total: Price) -> str | None:
        """Before the preview: the applied cards still fit the order (and cover it in a
        gift-card-only checkout)."""
        state, problem = self._giftcard_synced(total)
        if problem:
            return problem
        paid = sum((Decimal(c["amount"]) for c in state["cards"]), Decimal(0))
        if paid < total.incl_tax and not self.giftcard_allows_partial():
            return needs_full_cover_message(paid, total.incl_tax, total.currency)
        return None

    def _giftcards_context(self, order_total: Price | None) -> dict[str, Any]:
        state = self._giftcard_state()
        applied = [
            {"index": i, "masked": c["masked"], "amount": Decimal(c["amount"])}
            for i, c in enumerate(state["cards"])
        ]
        limit = self.giftcard_max_cards()
        ctx: dict[str, Any] = {
            "giftcards_applied": applied,
            "giftcard_max_cards": limit,
            "giftcard_can_add": len(applied) < limit,
            "giftcard_notice": self._giftcard_notice,
            "giftcard_typed": self._giftcard_typed,
        }
        if applied and order_total is not None:
            paid = sum((a["amount"] for a in applied), Decimal(0))
            ctx.update(
                giftcards_paid=paid,
                giftcards_remainder=max(order_total.incl_tax - paid, Decimal(0)),
                giftcards_currency=order_total.currency,
            )
        return ctx

    def _giftcard_pay_applied(self, order_number: str, total: Price, **kwargs: Any) -> None:
        """``handle_payment`` with applied cards: ``reserve_order`` again with the same key
        (the same holds; held afresh, all or nothing, if one expired meanwhile), one
        ``Source`` per card, and the rest to the shop's other method."""
        state, problem = self._giftcard_synced(total)
        if problem:
            raise UnableToTakePayment(problem)
        tokens = self._giftcard_codes(state)
        if not tokens:
            raise UnableToTakePayment(cards_dropped_message())
        try:
            allocation = self._giftcard_hold(state, tokens, total, conf.order_ref(order_number))
        except OrderAllocationError as exc:
            raise UnableToTakePayment(
                refused_card_message(exc.masked_barcode, exc.public_message)
            ) from None
        except ThrottledError:
            raise UnableToTakePayment(throttled_message()) from None
        except PaymentRefused as exc:
            raise UnableToTakePayment(exc.public_message) from None
        except FourWSError as exc:
            log.warning("fourws_pay_oscar.reserve_order_failed", error=type(exc).__name__)
            raise UnableToTakePayment(unavailable_message()) from None
        self._giftcard_save(state)
        remainder = allocation.remaining
        if remainder > 0 and not self.giftcard_allows_partial():
            raise UnableToTakePayment(
                needs_full_cover_message(allocation.applied_amount, total.incl_tax, total.currency)
            )
        self._giftcard_allocation = allocation
        for hold in allocation.reservations:
            self.add_payment_source(recording.new_source(hold, total.currency))  # type: ignore[attr-defined]
        if remainder > 0:
            super().handle_payment(order_number, _remainder_price(total, remainder), **kwargs)  # type: ignore[misc]

    def giftcard_capture_order(self, order: Any) -> None:
        """Capture every card's hold (``capture_order``) once the order exists; as for one
        card, problems become payment events and notes for staff, never an error page."""
        allocation = self._giftcard_allocation
        self._giftcard_captured = True
        self._giftcard_forget()
        failures: tuple[tuple[str, str, FourWSError], ...] = ()
        try:
            operations = provider.get_payments().capture_order(allocation.order_ref)
        except OrderCaptureError as exc:
            operations = list(exc.operations)  # type: ignore[arg-type]
            failures = exc.failures
        except FourWSError as exc:
            operations = []
            failures = tuple((h.masked_barcode, h.id, exc) for h in allocation.reservations)
        for operation in operations:
            recording.record_capture_requested(order, operation)
        amounts = {hold.id: hold.applied_amount for hold in allocation.reservations}
        for masked, hold_id, exc in failures:
            amount = amounts.get(hold_id, Decimal(0))
            if isinstance(exc, PaymentRefused):
                # refused for good: the order is not paid by this card, so its hold goes
                self._giftcard_release_hold(hold_id)
                if not self._giftcard_failure_recorded(order, hold_id):
                    recording.record_capture_problem(
                        order,
                        title=recording.CAPTURE_FAILED,
                        amount=amount,
                        reference=hold_id,
                        detail=exc.message,
                    )
                continue
            log.error(
                "fourws_pay_oscar.capture_failed",
                order=order.number,
                reservation_id=hold_id,
                error=type(exc).__name__,
            )
            recording.note(
                order,
                f"4WS gift card {masked}: the capture of {amount} {order.currency} did not "
                f"get a clear answer ({type(exc).__name__}). fourws-pay reconciles it; check "
                "the order later.",
                note_type="Warning",
            )
        provider.after_balance_change()

    def _giftcard_release_hold(self, hold_id: str) -> None:
        try:
            provider.get_payments().release(hold_id)
        except FourWSError as exc:
            log.error(
                "fourws_pay_oscar.release_failed", reservation_id=hold_id, error=type(exc).__name__
            )

    def _giftcard_failure_recorded(self, order: Any, hold_id: str) -> bool:
        """Whether the order has a "Capture failed" event for this hold or its capture."""
        payments = provider.get_payments()
        refs = {hold_id} | {
            op.id for op in payments.list_operations() if op.reservation_id == hold_id
        }
        events = order.payment_events.filter(event_type__name=recording.CAPTURE_FAILED)
        return bool(events.filter(reference__in=refs).exists())


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
