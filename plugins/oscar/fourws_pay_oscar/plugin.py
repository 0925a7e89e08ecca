"""fourws-pay host hooks for Oscar, found on the ``fourws_pay`` entry-point group.

Any process that builds fourws-pay's plugin manager loads this module, Django or not, so
it imports nothing from Django at import time and stays inert until the Oscar provider of
this process is built (``activate()``, called by ``fourws_pay_oscar.provider``). Even then
it only answers for ``order_ref`` values carrying the Oscar prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fourws_pay.hookspecs import hookimpl

if TYPE_CHECKING:
    from fourws_pay.payments.models import CartSnapshot, IssuedCard, PaymentEvent

_active = False


def activate() -> None:
    global _active
    _active = True


def deactivate() -> None:
    global _active
    _active = False


def is_active() -> bool:
    return _active


@hookimpl
def fourws_pay_cart_snapshot(order_ref: str) -> CartSnapshot | None:
    if not _active:
        return None
    from fourws_pay_oscar import recording

    return recording.cart_snapshot(order_ref)


@hookimpl
def fourws_pay_callback_base_url() -> str | None:
    if not _active:
        return None
    from fourws_pay_oscar import conf

    url = conf.get("CALLBACK_BASE_URL")
    return str(url).rstrip("/") if url else None


@hookimpl
def fourws_pay_payment_event(event: PaymentEvent) -> None:
    if not _active:
        return
    from fourws_pay_oscar import recording

    recording.record_event(event)


@hookimpl
def fourws_pay_deliver_giftcards(
    order_ref: str, cards: list[IssuedCard], pdf_url: str | None
) -> None:
    """Mail the cards of an Oscar order, one message per recipient (``selling.deliver``)."""
    if not _active:
        return
    from fourws_pay_oscar import recording, selling

    order = recording.order_for_ref(order_ref)
    if order is not None:
        selling.deliver(order, cards, pdf_url)
