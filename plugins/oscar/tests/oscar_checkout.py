"""Drive a real Oscar checkout through Django's test client."""

from __future__ import annotations

import re
from typing import Any

from django.test import Client
from django.urls import reverse

ADDRESS = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "line1": "Via Roma 1",
    "line4": "Milano",
    "postcode": "20100",
    "phone_number": "",
}

TOKEN_RE = re.compile(r'name="giftcard_token" value="([^"]+)"')


def to_payment_details(client: Client, product_id: int, quantity: int = 1) -> Any:
    """Basket, guest e-mail, shipping address, shipping method: the payment-details page."""
    response = client.post(reverse("basket:add", kwargs={"pk": product_id}), {"quantity": quantity})
    assert response.status_code == 302, response.status_code
    response = client.post(
        reverse("checkout:index"), {"username": "ada@example.com", "options": "anonymous"}
    )
    assert response.status_code == 302, response.content[:2000]
    response = client.post(reverse("checkout:shipping-address"), ADDRESS)
    assert response.status_code == 302, response.content[:4000]
    response = client.get(reverse("checkout:shipping-method"), follow=True)
    assert response.request["PATH_INFO"] == reverse("checkout:payment-details"), (
        response.redirect_chain
    )
    return response


def submit_code(client: Client, code: str) -> Any:
    """Post the payment-details form: the preview, or payment details with an error."""
    return client.post(reverse("checkout:preview"), {"giftcard_code": code})


def token_of(preview: Any) -> str | None:
    match = TOKEN_RE.search(preview.content.decode())
    return match.group(1) if match else None


def place_order(client: Client, preview: Any) -> Any:
    data = {"action": "place_order"}
    token = token_of(preview)
    if token:
        data["giftcard_token"] = token
    return client.post(reverse("checkout:preview"), data)


def checkout(client: Client, product_id: int, code: str, quantity: int = 1) -> Any:
    """The whole checkout; returns the response to "Place order"."""
    to_payment_details(client, product_id, quantity)
    preview = submit_code(client, code)
    assert preview.status_code == 200
    return place_order(client, preview)
