"""The 4WS calls a payment flow asks its driver to make (sans-I/O).

A flow is a generator: it yields an effect, the driver (``GiftCardPayments`` or
``AsyncGiftCardPayments``) makes the call and sends the result back in, or throws the call's
typed error into the flow. Only these calls exist, so the twins stay thin. ``Pause`` is the
one effect that is not a 4WS call: a flow that waits (``wait_for_operation``) asks its
driver to wait on the provider's clock, blocking or awaited.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from fourws_pay.api.models import GiftCardUpdate

T = TypeVar("T")


@dataclass(frozen=True)
class ReadCard:
    """Effect: Get Giftcard. ``cached`` allows the short ``check`` cache."""

    barcode: str
    cached: bool = False


@dataclass(frozen=True)
class PostUpdate:
    """Effect: updateGiftcard (the balance-changing POST)."""

    update: GiftCardUpdate


@dataclass(frozen=True)
class PostGenerate:
    """Effect: generateGiftcards (``count`` barcodes of ``item_code``, answered on
    ``callback``). Answered with a ``QueuedOperation``."""

    item_code: str
    count: int
    callback: str


@dataclass(frozen=True)
class RequestPdf:
    """Effect: Gift Card PDF Generation for ``barcodes``. Answered with a ``GiftCardPdf``."""

    barcodes: tuple[str, ...]


@dataclass(frozen=True)
class Pause:
    """Effect: wait ``seconds`` on the provider's clock (``Clock.sleep`` / ``asleep``: a
    ``ManualClock`` moves instead of waiting). Answered with None."""

    seconds: float


Effect = ReadCard | PostUpdate | PostGenerate | RequestPdf | Pause
PaymentFlow = Generator[Effect, Any, T]
