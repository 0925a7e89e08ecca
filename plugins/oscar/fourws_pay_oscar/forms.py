"""The gift-card field of the payment-details page."""

from __future__ import annotations

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
