"""Gift cards through the real client against the in-process sandbox, sync and async."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from fourws_pay.api.models import GiftCardUpdate
from fourws_pay.errors import APIFailure, AuthenticationError
from fourws_pay.sandbox import Sandbox, sandbox_settings
from fourws_pay.sandbox import seed as demo

from .conftest import Either

CB = "http://shop.test/fourws/callback/op-1/tok"


def consume(barcode: str, amount: str, **kw: object) -> GiftCardUpdate:
    return GiftCardUpdate(entity_code="440", barcode=barcode, amount=Decimal(amount), **kw)


async def test_get_documented_card(api: Either, sb: Sandbox) -> None:
    card = await api.get_giftcard(demo.EXAMPLE_CARD)
    assert card.amount == Decimal(390)
    assert card.id == "SVILU_500_440_2000000001814"
    assert card.entity_code == "440"
    assert card.flg_active
    assert card.flg_partially_usage
    assert card.flg_network_usage
    assert card.expiration_date is not None
    assert card.expiration_date > sb.clock.now()


async def test_get_unknown_card_is_success_false(api: Either) -> None:
    with pytest.raises(APIFailure, match="barcode not found"):
        await api.get_giftcard("1234567890128")


async def test_wrong_credentials_get_documented_401(sb: Sandbox) -> None:
    bad = sandbox_settings(password="wrong")
    with sb.client(settings=bad) as client, pytest.raises(AuthenticationError) as info:
        client.get_giftcard(demo.EXAMPLE_CARD)
    assert info.value.status_code == 401
    assert info.value.message == "Access Denied."


async def test_consumption_is_queued_then_applied_with_callback(
    api: Either, sb: Sandbox, received: list[tuple[str, bytes]]
) -> None:
    queued = await api.update_giftcard(
        consume(demo.EXAMPLE_CARD, "-50.00", callback=CB, payload={"op": "op-1"})
    )
    assert sb.balance(demo.EXAMPLE_CARD) == Decimal(390)  # nothing before the queue runs
    assert received == []
    run = sb.process_queue()
    assert [o.queue_id for o in run.processed] == [queued.queue_id]
    assert sb.balance(demo.EXAMPLE_CARD) == Decimal(340)
    assert len(received) == 1
    url, body = received[0]
    assert url == CB
    parsed = json.loads(body)
    assert parsed["success"] is True
    assert parsed["payload"] == {"op": "op-1"}
    assert parsed["id"]
    (record,) = sb.applied_operations(demo.EXAMPLE_CARD)
    assert record.amount == Decimal("-50.00")
    assert record.queue_id == queued.queue_id
    assert record.payload == {"op": "op-1"}
    assert record.kind == "consumption"
    assert (await api.get_giftcard(demo.EXAMPLE_CARD)).amount == Decimal(340)


@pytest.mark.parametrize(
    ("barcode", "amount", "message"),
    [
        ("1234567890128", "-1.00", "barcode not found"),
        (demo.EXPIRED_CARD, "-1.00", "giftcard expired"),
        (demo.INACTIVE_CARD, "-1.00", "giftcard not active"),
        (demo.NOT_YET_VALID_CARD, "-1.00", "giftcard not yet valid"),
        (demo.EXAMPLE_CARD, "-390.01", "insufficient balance"),
        (demo.EMPTY_CARD, "-0.01", "insufficient balance"),
        (demo.OTHER_ENTITY_CARD, "-1.00", "giftcard not usable by this entity"),
        (demo.NEVER_ACTIVATED_CARD, "-1.00", "giftcard not active"),
    ],
)
async def test_refused_consumptions_fail_on_the_callback(
    api: Either,
    sb: Sandbox,
    received: list[tuple[str, bytes]],
    barcode: str,
    amount: str,
    message: str,
) -> None:
    before = sb.card(barcode).amount if barcode in sb.books.cards else None
    await api.update_giftcard(consume(barcode, amount, callback=CB, payload="p"))
    sb.process_queue()
    body = json.loads(received[0][1])
    assert body == {"success": False, "message": message, "payload": "p"}
    if before is not None:
        assert sb.balance(barcode) == before
    assert sb.applied_operations(barcode) == []
    assert sb.operations(barcode)[-1].outcome == "refused"


async def test_balance_never_goes_below_zero(api: Either, sb: Sandbox, received: list) -> None:
    for _ in range(3):
        await api.update_giftcard(consume(demo.UPDATE_EXAMPLE_CARD, "-40.00", callback=CB))
    sb.process_queue()
    outcomes = [json.loads(b)["success"] for _, b in received]
    assert outcomes == [True, True, False]
    assert sb.balance(demo.UPDATE_EXAMPLE_CARD) == Decimal(20)
    assert sb.total_consumed(demo.UPDATE_EXAMPLE_CARD) == Decimal(80)


async def test_activation_of_generated_barcode(api: Either, sb: Sandbox, received: list) -> None:
    card = await api.get_giftcard(demo.NEVER_ACTIVATED_CARD)
    assert not card.flg_active
    assert card.amount == 0
    update = GiftCardUpdate(
        entity_code="440",
        barcode=demo.NEVER_ACTIVATED_CARD,
        amount=Decimal("100.0"),
        currency="EUR",
        currency_symbol="€",
        branch_code="1150",
        price_list="1150",
        country="IT",
        callback=CB,
    )
    await api.update_giftcard(update)
    sb.process_queue()
    card = await api.get_giftcard(demo.NEVER_ACTIVATED_CARD)
    assert card.flg_active
    assert card.amount == Decimal(100)
    assert card.original_amount == 100
    assert card.branch_code == "1150"
    assert sb.applied_operations(demo.NEVER_ACTIVATED_CARD)[0].kind == "activation"


async def test_positive_amount_on_active_card_recredits(api: Either, sb: Sandbox) -> None:
    await api.update_giftcard(consume(demo.UPDATE_EXAMPLE_CARD, "25.50"))
    sb.process_queue()
    assert sb.balance(demo.UPDATE_EXAMPLE_CARD) == Decimal("125.50")
    assert sb.card(demo.UPDATE_EXAMPLE_CARD).original_amount == Decimal(100)
    assert sb.applied_operations(demo.UPDATE_EXAMPLE_CARD)[0].kind == "recredit"


async def test_one_go_card_forfeits_or_refuses_remainder(clock) -> None:
    sb = Sandbox(clock=clock, seed="demo")
    with sb.client() as client:
        client.update_giftcard(consume(demo.ONE_GO_CARD, "-10.00"))
        sb.process_queue()
    rec = sb.applied_operations(demo.ONE_GO_CARD)[0]
    assert rec.forfeited == Decimal(15)
    assert sb.balance(demo.ONE_GO_CARD) == 0
    strict = Sandbox(clock=clock, seed="demo", partial_usage_policy="refuse")
    with strict.client() as client:
        client.update_giftcard(consume(demo.ONE_GO_CARD, "-10.00"))
        strict.process_queue()
    assert strict.operations(demo.ONE_GO_CARD)[0].message == "partial usage not allowed"


async def test_generate_giftcards_callback_has_valid_barcodes(
    api: Either, sb: Sandbox, received: list
) -> None:
    from fourws_pay.api.models import GenerateGiftCardsResult
    from fourws_pay.sandbox.ean import is_valid_ean13

    queued = await api.generate_giftcards(demo.FINANCIAL_ITEM, 5, CB)
    assert queued.queue_id
    sb.process_queue()
    result = GenerateGiftCardsResult.model_validate_json(received[0][1])
    assert result.success
    assert len(result.giftcards) == 5
    assert len({g.barcode for g in result.giftcards}) == 5
    for generated in result.giftcards:
        assert is_valid_ean13(generated.barcode)
        assert generated.start_validity == sb.clock.now()
        card = await api.get_giftcard(generated.barcode)
        assert not card.flg_active


async def test_generate_unknown_item(api: Either, sb: Sandbox, received: list) -> None:
    await api.generate_giftcards("NOPE", 1, CB)
    sb.process_queue()
    assert json.loads(received[0][1]) == {"success": False, "message": "itemCode not found"}


async def test_pdf_sync_and_queued(api: Either, sb: Sandbox, received: list) -> None:
    pdf = await api.giftcard_pdf([demo.EXAMPLE_CARD])
    assert pdf.url
    assert "/_sandbox/pdf/" in pdf.url
    queued = await api.giftcard_pdf([demo.EXAMPLE_CARD], callback=CB)
    assert queued.queue_id
    sb.process_queue()
    assert json.loads(received[0][1])["url"].startswith("http")
    with pytest.raises(APIFailure):
        await api.giftcard_pdf(["1234567890128"])


async def test_queue_delay_and_callback_delay_follow_the_clock(clock) -> None:
    sb = Sandbox(clock=clock, seed="demo", queue_delay=5, callback_delay=3)
    got: list[bytes] = []
    sb.set_callback_handler(lambda url, body: got.append(body) or 200)
    with sb.client() as client:
        client.update_giftcard(consume(demo.EXAMPLE_CARD, "-1.00", callback=CB))
    assert sb.process_queue().processed == []
    clock.advance(5)
    assert len(sb.process_queue().processed) == 1
    assert got == []
    clock.advance(3)
    assert len(sb.process_queue().delivered) == 1
    assert len(got) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"{entityCode: 440, barcode: 'x'}",
        b"{entityCode: 440, barcode: 'x', amount: 0}",
        b"{barcode: 'x', amount: -1}",
        b"not a body",
        b"[1, 2]",
        b"{entityCode: 440, barcode: 'x', amount: -1, callback: 'ftp://x'}",
    ],
)
def test_bad_update_bodies_are_refused_at_once(sb: Sandbox, body: bytes) -> None:
    with sb.client() as client, httpx.Client(transport=sb.transport()) as http:
        request = client.core.documents_request("POST", sb.settings.cmd_update_giftcard)
        request = httpx.Request("POST", request.url, headers=request.headers, content=body)
        response = http.send(request)
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert sb.pending() == []


def test_documented_js_literal_bodies_are_accepted(sb: Sandbox, received: list) -> None:
    activation = (
        b'{\n entityCode : 440,\n barcode: "4443334961511",\n amount : 100.0,\n'
        b' activationDate : "2021-08-31 10:00:00",\n country : "IT",\n branchCode : "1150",\n'
        b' currencySymbol : "\xe2\x82\xac",\n currency : "EUR",\n clientDenomination : "GINO",\n'
        b' callback : "http://shop.test/cb"\n}'
    )
    consumption = b'{\n entityCode : 440,\n barcode: "4443334961511",\n amount : -50.0,\n}'
    with sb.client() as client, httpx.Client(transport=sb.transport()) as http:
        base = client.core.documents_request("POST", sb.settings.cmd_update_giftcard)
        for body in (activation, consumption):
            headers = dict(base.headers) | {"Content-Type": "text/plain"}
            response = http.post(str(base.url), headers=headers, content=body)
            assert response.status_code == 200, response.text
            assert response.json()["success"] is True
            assert response.json()["queueId"]
    sb.process_queue()
    assert sb.balance(demo.NEVER_ACTIVATED_CARD) == Decimal("50.0")
    assert sb.card(demo.NEVER_ACTIVATED_CARD).currency_symbol == "€"
