"""The framework-free ASGI callback receiver, driven through httpx's ASGI transport."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from fourws_pay.payments.models import OperationState
from fourws_pay.sandbox.faults import Fault
from tests.payments.harness import Shop


async def test_callback_app_applies_and_rejects(shop: Shop) -> None:
    card = shop.card()
    r = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    op = shop.payments.capture(r.id)
    shop.settle()
    path = urlsplit(shop.callback_urls[op.id]).path
    transport = httpx.ASGITransport(app=shop.payments.callback_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
        assert (await http.get(path)).status_code == 405
        forged = path.rsplit("/", 1)[0] + "/forged"
        assert (await http.post(forged, content=b'{"success": true}')).status_code == 403
        assert (await http.post(path, content=b"not json")).status_code == 400
        assert (await http.post(path, content=b"x" * 70_000)).status_code == 413
        assert shop.payments.get_operation(op.id).state is OperationState.ENQUEUED
        ok = await http.post(path, content=b'{"success": true, "id": "cb-1"}')
        assert ok.status_code == 200
        assert ok.json() == {"success": True, "message": "operation succeeded"}
        again = await http.post(path, content=b'{"success": true, "id": "cb-1"}')
        assert again.status_code == 200
    assert shop.payments.get_operation(op.id).state is OperationState.SUCCEEDED


@pytest.mark.parametrize("prefix", ["", "/mounted/under"])
async def test_callback_app_works_when_mounted(shop: Shop, prefix: str) -> None:
    card = shop.card()
    r = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    shop.sandbox.faults.add("update_giftcard", Fault.drop_callback())
    op = shop.payments.capture(r.id)
    shop.settle()
    tail = "/".join(urlsplit(shop.callback_urls[op.id]).path.split("/")[-2:])
    app = shop.payments.callback_app()

    async def mounted(scope, receive, send):  # type: ignore[no-untyped-def]
        scope = dict(scope, root_path=prefix, path="/" + tail)
        await app(scope, receive, send)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mounted), base_url="http://shop"
    ) as http:
        assert (await http.post("/x", content=b'{"success": true}')).status_code == 200
