"""Can this card pay this amount here and now? Pure functions, no I/O.

The reference gives only "valid and sufficient balance"; the rule set below follows its
[inferred] checklist (docs/4ws-reference.md §7) and docs/design.md §5:

1. the card exists (a failed Get Giftcard is ``NOT_FOUND``);
2. ``itemSubtype``, when present, is ``GIFTCARD``;
3. ``flgActive`` is Y;
4. ``activationDate <= now < expirationDate`` in UTC (missing bounds are open);
5. the order currency equals the card's (a card without currency is refused);
6. ``flgNetworkUsage = N`` cards are usable only where the shop's ``entityCode`` is the card's;
7. the amount is a positive Decimal with at most ``decimalNumber`` digits;
8. available = balance − amounts held by this shop's active reservations and in-flight
   captures; a zero balance is ``EMPTY``;
9. ``flgPartiallyUsage = N``: the card is spent in one go. The reservation takes the whole
   balance; an order smaller than the balance is refused unless the shop opted in to
   forfeiting the remainder, and a card already partly held cannot be held again.

Customers see one uniform message for not-found, inactive, not-yet-valid, expired and empty
cards (anti-enumeration, invariant 11); staff see the precise reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from fourws_pay.api.models import GiftCard
from fourws_pay.errors import InvalidAmountError
from fourws_pay.logs import mask_barcode
from fourws_pay.money import DEFAULT_DECIMALS, positive_amount, quantize
from fourws_pay.payments.models import Decision, RefusalReason

UNIFORM_PUBLIC_MESSAGE = (
    "This gift card cannot be used. Please check the code or use another payment method."
)

UNIFORM_REASONS = frozenset(
    {
        RefusalReason.NOT_FOUND,
        RefusalReason.INACTIVE,
        RefusalReason.NOT_YET_VALID,
        RefusalReason.EXPIRED,
        RefusalReason.EMPTY,
    }
)

PUBLIC_MESSAGES: dict[RefusalReason, str] = {
    RefusalReason.INSUFFICIENT_BALANCE: (
        "The gift card balance does not cover this amount. Pay the rest another way."
    ),
    RefusalReason.PARTIAL_USAGE_NOT_ALLOWED: (
        "This gift card can only be used for its whole balance in a single purchase."
    ),
    RefusalReason.CURRENCY_MISMATCH: "This gift card is in another currency.",
    RefusalReason.NETWORK_RESTRICTED: "This gift card cannot be used in this shop.",
    RefusalReason.NOT_A_GIFT_CARD: UNIFORM_PUBLIC_MESSAGE,
    RefusalReason.INVALID_AMOUNT: "The amount to pay is not valid.",
}


def public_message(reason: RefusalReason) -> str:
    """What a customer may be told for ``reason``."""
    if reason in UNIFORM_REASONS:
        return UNIFORM_PUBLIC_MESSAGE
    return PUBLIC_MESSAGES[reason]


@dataclass(frozen=True)
class PaymentRequest:
    """What the shop asks: pay ``amount`` in ``currency`` with the card, here, now."""

    amount: Decimal
    currency: str
    now: datetime
    shop_entity_code: str
    allow_partial: bool = False  # may the card pay only part of the amount?
    forfeit_partial_remainder: bool = False


def refuse(
    reason: RefusalReason,
    message: str,
    request: PaymentRequest,
    barcode: str,
    decimals: int = DEFAULT_DECIMALS,
) -> Decision:
    return Decision(
        ok=False,
        reason=reason,
        message=message,
        public_message=public_message(reason),
        requested_amount=request.amount,
        usable_amount=Decimal(0),
        available_balance=None,
        currency=None,
        decimals=decimals,
        covers_full_amount=False,
        masked_barcode=mask_barcode(barcode),
    )


def evaluate(
    card: GiftCard | None, request: PaymentRequest, *, held: Decimal, barcode: str
) -> Decision:
    """Decide whether ``card`` can pay ``request`` given ``held`` already reserved locally.

    ``held`` is the sum of this shop's holds on the card that 4WS's ``amount`` does not
    reflect yet. Returns a ``Decision``; never raises for a business refusal.
    """
    if card is None:
        return refuse(RefusalReason.NOT_FOUND, "card not found at 4WS", request, barcode)
    decimals = card.decimal_number

    def no(reason: RefusalReason, message: str) -> Decision:
        return refuse(reason, message, request, barcode, decimals)

    if card.item_subtype is not None and card.item_subtype.strip().upper() != "GIFTCARD":
        return no(RefusalReason.NOT_A_GIFT_CARD, f"itemSubtype is {card.item_subtype!r}")
    if not card.flg_active:
        return no(RefusalReason.INACTIVE, "flgActive is N")
    if card.activation_date is not None and request.now < card.activation_date:
        return no(RefusalReason.NOT_YET_VALID, "the card's validity starts later")
    if card.expiration_date is not None and request.now >= card.expiration_date:
        return no(RefusalReason.EXPIRED, "the card has expired")
    card_currency = card.currency.strip().upper() if card.currency is not None else None
    if card_currency != request.currency.upper():
        return no(
            RefusalReason.CURRENCY_MISMATCH,
            f"card currency {card.currency!r} differs from {request.currency!r}",
        )
    if not card.flg_network_usage and (card.entity_code or "") != request.shop_entity_code:
        return no(RefusalReason.NETWORK_RESTRICTED, "card restricted to its own entity")
    try:
        amount = positive_amount(request.amount, decimals)
    except InvalidAmountError as exc:
        return no(RefusalReason.INVALID_AMOUNT, str(exc))

    balance = quantize(card.amount, decimals)
    if balance <= 0:
        return no(RefusalReason.EMPTY, "the card balance is zero")
    available = balance - quantize(held, decimals)
    if available <= 0:
        return no(RefusalReason.INSUFFICIENT_BALANCE, "the whole balance is already reserved")

    forfeited = Decimal(0)
    if not card.flg_partially_usage:
        if held > 0:
            return no(
                RefusalReason.INSUFFICIENT_BALANCE,
                "a one-go card (flgPartiallyUsage=N) is already being spent",
            )
        if amount < available:
            if not request.forfeit_partial_remainder:
                return no(
                    RefusalReason.PARTIAL_USAGE_NOT_ALLOWED,
                    "flgPartiallyUsage=N and the amount is smaller than the balance",
                )
            forfeited = available - amount
        usable = available
        if amount > available and not request.allow_partial:
            return no(RefusalReason.INSUFFICIENT_BALANCE, "balance lower than the amount")
    elif amount <= available:
        usable = amount
    elif request.allow_partial:
        usable = available
    else:
        return no(RefusalReason.INSUFFICIENT_BALANCE, "balance lower than the amount")

    covers = usable - forfeited >= amount
    return Decision(
        ok=True,
        reason=None,
        message=(f"card can pay {usable}" + (f" (forfeiting {forfeited})" if forfeited else "")),
        public_message="",
        requested_amount=amount,
        usable_amount=usable,
        available_balance=available,
        currency=card_currency,
        decimals=decimals,
        covers_full_amount=covers,
        masked_barcode=mask_barcode(barcode),
    )


def forfeited_amount(decision: Decision) -> Decimal:
    """The part of a one-go card's balance that exceeds what the order needs."""
    excess = decision.usable_amount - decision.requested_amount
    return excess if excess > 0 else Decimal(0)
