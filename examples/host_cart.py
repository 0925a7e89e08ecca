"""A minimal host cart paying part of an order with a 4WS gift card, on the sandbox.

Run it with ``python examples/host_cart.py``. It shows what a shop implements (two hooks) and
what it calls (check, reserve, capture, and the callback endpoint), end to end:

1. the customer's basket totals 120.00 EUR; the gift card holds 75.00 EUR;
2. ``check`` says the card can pay 75.00 of it; ``reserve`` holds that amount;
3. the remaining 45.00 EUR is paid with "another method" (a stand-in card processor);
4. the order is confirmed: ``capture`` posts the consumption to 4WS;
5. 4WS (the sandbox) processes its queue and calls back; the payment settles;
6. the shop's event hook saw every step, and the card's balance at 4WS is 0.00.
"""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

from fourws_pay import (
    CartSnapshot,
    GiftCardPayments,
    PaymentEvent,
    SQLiteStore,
    hookimpl,
    make_plugin_manager,
)
from fourws_pay.sandbox import Sandbox


class ShopCart:
    """The host side: describes its orders and listens to payment events."""

    def __init__(self) -> None:
        self.orders = {
            "ORD-1001": CartSnapshot("ORD-1001", Decimal("120.00"), "EUR", client_code="C-42")
        }
        self.events: list[str] = []

    @hookimpl
    def fourws_pay_cart_snapshot(self, order_ref: str) -> CartSnapshot | None:
        return self.orders.get(order_ref)

    @hookimpl
    def fourws_pay_payment_event(self, event: PaymentEvent) -> None:
        self.events.append(f"{event.kind.value}: {event.message or event.order_ref}")


def pay_rest_with_another_method(order_ref: str, amount: Decimal) -> str:
    """Stand-in for the shop's card processor."""
    return f"psp-{order_ref}-{amount}"


def main() -> None:
    sandbox = Sandbox()
    sandbox.add_giftcard("7000000012345", amount=Decimal("75.00"), currency="EUR")
    cart = ShopCart()
    with tempfile.TemporaryDirectory() as tmp:
        payments = GiftCardPayments(
            client=sandbox.client(),
            store=SQLiteStore(Path(tmp) / "ledger.db"),
            plugin_manager=make_plugin_manager(load_entrypoints=False, plugins=[cart]),
        )
        # 4WS's callbacks reach the shop's callback endpoint (here: in-process).
        sandbox.set_callback_handler(
            lambda url, body: payments.handle_callback(urlsplit(url).path, body).status_code
        )
        order = cart.orders["ORD-1001"]

        decision = payments.check("7000000012345", order.total, order.currency)
        print(
            f"check: ok={decision.ok} usable={decision.usable_amount} "
            f"covers_full_amount={decision.covers_full_amount}"
        )

        reservation = payments.reserve(
            "7000000012345", order_ref=order.order_ref, allow_partial=True
        )
        rest = order.total - reservation.applied_amount
        print(
            f"reserved {reservation.amount} on {reservation.masked_barcode}; "
            f"rest {rest} -> {pay_rest_with_another_method(order.order_ref, rest)}"
        )

        operation = payments.capture(reservation.id)
        print(f"capture posted: {operation.state.value}")
        sandbox.process_queue()  # 4WS works through its queue and calls back
        settled = payments.get_operation(operation.id)
        print(
            f"after callback: {settled.state.value}; "
            f"4WS balance now {sandbox.balance('7000000012345')}"
        )
        print("events:", *cart.events, sep="\n  ")
        payments.close()


if __name__ == "__main__":
    main()
