"""The sandbox gift cards of the demo, one per situation worth trying at the checkout."""

# The 4WS financial item the shop's own gift-card product is generated from.
GIFTCARD_ITEM = "GIFTCARD_IVA_TAGLIO_100"

DEMO_CARDS = [
    {"barcode": "4440000000018", "amount": "100.00", "note": "pays any order in full"},
    {"barcode": "4440000000025", "amount": "10.00", "note": "pays 10.00; the rest on delivery"},
    {
        "barcode": "4440000000032",
        "amount": "50.00",
        "expiration_date": "2025-01-01 00:00:00",
        "note": "expired",
    },
    {"barcode": "4440000000049", "amount": "50.00", "active": False, "note": "not active"},
    {
        "barcode": "4440000000056",
        "amount": "80.00",
        "partial_usage": False,
        "note": "single use: only for its whole balance",
    },
    {"barcode": "4440000000063", "amount": "50.00", "currency": "USD", "note": "US dollars"},
    {"barcode": "4440000000070", "amount": "100.00", "note": "another to pay any order in full"},
    {
        "barcode": "4440000000087",
        "amount": "15.00",
        "note": "pays 15.00; apply it with 4440000000025, the rest on delivery",
    },
]


def sandbox_kwargs(card: dict) -> dict:
    """``Sandbox.add_giftcard`` keyword arguments for one demo card."""
    return {key: value for key, value in card.items() if key != "note"}
