"""The Python blocks of plugins/saleor/README.md run as written, and do what they say.

The delivery example is given to the App of a fake-Saleor world: a paid order with a gift
card line must end with one e-mail to the buyer carrying the card's whole code (the mail
relay is replaced by a recorder: nothing leaves the machine).
"""

from __future__ import annotations

import re
import smtplib
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from fake_saleor import order_line, paid_order
from saleor_world import World

from fourws_pay.payments.models import IssuedCardState

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
SENT: list[EmailMessage] = []


class RecordingSMTP:
    """Stands in for ``smtplib.SMTP``: keeps what would have been sent."""

    def __init__(self, host: str, port: int) -> None:
        assert host == "127.0.0.1"  # the example talks to a local relay only

    def __enter__(self) -> RecordingSMTP:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send_message(self, message: EmailMessage) -> None:
        SENT.append(message)


def readme_namespace() -> dict[str, Any]:
    blocks = BLOCK.findall(README.read_text(encoding="utf-8"))
    assert blocks, "plugins/saleor/README.md has no python block"
    namespace: dict[str, Any] = {"__name__": "saleor_readme"}
    for code in blocks:
        exec(compile(code, str(README), "exec"), namespace)
    return namespace


@pytest.fixture
def app_options(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    SENT.clear()
    monkeypatch.setattr(smtplib, "SMTP", RecordingSMTP)
    deliver = readme_namespace()["send_giftcards"]
    return {"config": {"sell_giftcards": True}, "app": {"deliver_giftcards": deliver}}


async def test_the_delivery_example_mails_the_buyer_the_code(world: World) -> None:
    world.sandbox.add_product("GIFTCARD_IVA_TAGLIO_100", item_type="FINANCIAL")
    order = paid_order(order_line("T3JkZXJMaW5lOjE=", Decimal("50.00")), email="ada@example.com")
    assert (await world.saleor.order_fully_paid(world.client, order)).status_code == 200
    for _ in range(4):
        await world.settle()
    [card] = await world.payments.issued_cards(order["id"])
    assert card.state is IssuedCardState.DELIVERED
    assert card.barcode is not None
    [message] = SENT
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Your gift cards from order 1001"
    assert f"{card.barcode}: 50.00 EUR" in message.get_content()
