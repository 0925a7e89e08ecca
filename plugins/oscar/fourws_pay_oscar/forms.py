"""The gift-card field of the payment-details page, and the staff refund form."""

from __future__ import annotations

import secrets
from decimal import Decimal

from django import forms
from django.utils.translation import gettext_lazy as _

MAX_CODE_LENGTH = 64


class GiftCardForm(forms.Form):
    """One optional code; spaces and dashes people type from a printed card are ignored."""

    giftcard_code = forms.CharField(
        label=_("Gift card code"),
        required=False,
        max_length=MAX_CODE_LENGTH,
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "inputmode": "numeric", "spellcheck": "false"}
        ),
        help_text=_("The barcode printed on your 4WS gift card."),
    )

    def clean_giftcard_code(self) -> str:
        raw = self.cleaned_data.get("giftcard_code") or ""
        code = "".join(raw.split()).replace("-", "")
        if code and not code.isalnum():
            raise forms.ValidationError(_("A gift card code has only letters and digits."))
        return code


class GiftCardRefundForm(forms.Form):
    """Staff: refund part (or, blank, all) of an order's gift-card payment.

    ``refund_key`` is made when the form is shown and sent back with it, so submitting the
    same form twice (a double click, the browser's "resend") names the same refund and
    fourws-pay posts it once.
    """

    amount = forms.DecimalField(
        label=_("Amount to refund to the gift cards"),
        required=False,
        min_value=Decimal("0.01"),
        max_digits=12,
        decimal_places=2,
    )
    refund_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def clean_refund_key(self) -> str:
        key = str(self.cleaned_data.get("refund_key") or "")
        if not key.replace("-", "").replace("_", "").isalnum():
            raise forms.ValidationError(_("This refund form is not valid; open the order again."))
        return key


def new_refund_key() -> str:
    """A fresh key for one refund form (the staff view prefixes it with the order)."""
    return secrets.token_urlsafe(16)
