"""Every published example parses into the models (issue #2: fixtures from the reference)."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from fourws_pay.api.models import (
    GeneratedGiftCard,
    GenerateGiftCardsResult,
    GiftCard,
    InsertedBarcode,
    LoginToken,
    QueuedOperation,
    UpdateGiftCardResult,
    VoucherPage,
    VoucherStatus,
)
from fourws_pay.errors import (
    APIFailure,
    AuthenticationError,
    NotFoundError,
    UniqueConstraintError,
)

from .fakes import (
    FIXTURES,
    FakeFourWS,
    fixture_json,
    fixture_reply,
    fixture_text,
    make_client,
    parse_js_literal,
)

REFERENCE = Path(os.environ.get("FOURWS_API_REFERENCE", "/work/shared/4ws-api"))


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="4WS reference folder not available")
def test_every_reference_example_is_a_fixture() -> None:
    """Each JSON or JS-literal block of the reference exists byte for byte as a fixture."""
    fixtures = {p.read_text(encoding="utf-8") for p in FIXTURES.iterdir()}
    missing = []
    for md in sorted(REFERENCE.glob("*.md")):
        text = md.read_text(encoding="utf-8")
        for match in re.finditer(r"```(\w*)\n(.*?)```", text, re.S):
            lang, body = match.groups()
            looks_like_body = lang == "json" or body.lstrip().startswith(("{", "Example:{"))
            is_curl = body.startswith("curl ")
            if (looks_like_body or is_curl) and body not in fixtures:
                line = text[: match.start()].count("\n") + 1
                missing.append(f"{md.name}:{line}")
    assert missing == []


def test_js_literal_fixtures_parse() -> None:
    for name in (
        "update_giftcard_activation.txt",
        "update_giftcard_consumption.txt",
        "update_giftcard_body_params.txt",
        "keepit_giftcard_request.txt",
        "keepit_giftcard_response.txt",
    ):
        assert isinstance(parse_js_literal(fixture_text(name)), dict), name
    # the legacy example's unquoted 0987654321 keeps its leading zero
    assert parse_js_literal(fixture_text("keepit_giftcard_request.txt"))["giftcard"][
        "cardBarcode"
    ] == ("0987654321")


def test_get_giftcard_example(fake: FakeFourWS) -> None:
    fake.on(fake.settings.cmd_get_giftcard, fixture_reply("get_giftcard_success.json"))
    card = make_client(fake).get_giftcard("2000000001814")
    assert isinstance(card, GiftCard)
    assert card.id == "SVILU_500_440_2000000001814"
    assert card.card_barcode == "2000000001814"
    assert card.company_id == "XXXX"
    assert (card.site_id, card.branch_code, card.entity_code) == ("500", "1", "440")
    assert card.amount == Decimal("390")
    assert isinstance(card.amount, Decimal)
    assert card.original_amount == Decimal("390")
    assert card.issue_date == datetime(2021, 10, 4, tzinfo=UTC)
    assert card.expiration_date == datetime(2021, 11, 4, tzinfo=UTC)
    assert card.expiration_date.tzinfo is UTC
    assert card.flg_active is True
    assert card.flg_network_usage is True
    assert card.flg_partially_usage is True
    assert card.flg_allow_offline_usage is False
    assert card.decimal_number == 2
    assert (card.currency, card.currency_symbol) == ("EUR", "€")
    assert (card.price_list, card.price_list_type) == ("1", "V")
    assert card.item_code == "GF440VP15_400_3"
    assert card.tax_rate == Decimal(21)
    assert (card.vat_code, card.printer_department_code, card.payment_term_code) == (
        "3",
        "1",
        "201",
    )
    assert card.taxation == ""


def test_get_giftcard_error_example(fake: FakeFourWS) -> None:
    fake.on(fake.settings.cmd_get_giftcard, fixture_reply("get_giftcard_error.json"))
    with pytest.raises(APIFailure) as info:
        make_client(fake).get_giftcard("2000000001814")
    assert info.value.message == "barcode not found"
    assert len(fake.requests) == 1  # a definite answer is not retried


@pytest.mark.parametrize(
    ("name", "queue_id"),
    [
        ("update_giftcard_queued.json", "f3ff844b-9ee4-4fac-8c50-123ecd91f76e"),
        ("generate_giftcards_queued.json", "500540dd-75e8-4e56-8a52-d6cb2403b204"),
    ],
)
def test_queued_examples(name: str, queue_id: str) -> None:
    assert QueuedOperation.model_validate(fixture_json(name)).queue_id == queue_id


def test_queued_through_the_client(fake: FakeFourWS) -> None:
    from .endpoints import CONSUMPTION

    fake.on(fake.settings.cmd_update_giftcard, fixture_reply("update_giftcard_queued.json"))
    fake.on(fake.settings.cmd_generate_giftcards, fixture_reply("generate_giftcards_queued.json"))
    client = make_client(fake)
    assert client.update_giftcard(CONSUMPTION).queue_id.startswith("f3ff844b")
    assert client.generate_giftcards("GIFTCARD_IVA_TAGLIO_100", 5, "https://h/cb").queue_id == (
        "500540dd-75e8-4e56-8a52-d6cb2403b204"
    )


@pytest.mark.parametrize(
    "name", ["generate_giftcards_callback.json", "generate_giftcards_callback_usecase.json"]
)
def test_generate_callback_examples(name: str) -> None:
    result = GenerateGiftCardsResult.model_validate(fixture_json(name))
    assert result.success is True
    assert result.giftcards[0] == GeneratedGiftCard(
        barcode="4443334961511",
        start_validity=datetime(2022, 6, 10, tzinfo=UTC),
        end_validity=datetime(2023, 6, 10, tzinfo=UTC),
    )
    assert all(card.end_validity.tzinfo is UTC for card in result.giftcards)  # type: ignore[union-attr]


def test_generate_callback_error_example() -> None:
    result = GenerateGiftCardsResult.model_validate(
        fixture_json("generate_giftcards_callback_error.json")
    )
    assert (result.success, result.message, result.giftcards) == (
        False,
        "itemCode not found",
        [],
    )


def test_update_callback_examples() -> None:
    ok = UpdateGiftCardResult.model_validate(fixture_json("update_giftcard_callback_success.json"))
    assert (ok.success, ok.id) == (True, "7571b744-8e2d-4dde-99d8-b60c0dff1aca")
    bad = UpdateGiftCardResult.model_validate(fixture_json("update_giftcard_callback_error.json"))
    assert (bad.success, bad.message) == (False, "barcode not found")


def test_loyalty_vouchers_example(fake: FakeFourWS) -> None:
    fake.on(fake.settings.cmd_loyalty_vouchers, fixture_reply("loyalty_vouchers_success.json"))
    vouchers = list(make_client(fake).loyalty_vouchers("0099000001209"))
    assert len(vouchers) == 18
    first = vouchers[0]
    assert first.id == "4e8d2fd9-8ed3-4bda-b783-ced258db8828"
    assert first.barcode == "7000000000000017"
    assert first.total_amount == Decimal("330.18")
    assert first.document_status is VoucherStatus.ACTIVE
    assert first.branch_code == "1150"
    assert first.confirmation_date_order == datetime(2021, 3, 17, 10, 42, 52, tzinfo=UTC)
    assert first.model_extra == {"identifier": "0099000001209"}  # the pkFieldName artefact
    assert [v.total_amount for v in vouchers[1:3]] == [Decimal("72.9"), Decimal("85")]
    assert all(isinstance(v.total_amount, Decimal) for v in vouchers)
    assert len({v.id for v in vouchers}) == 18


def test_loyalty_page_user_data() -> None:
    page = VoucherPage.model_validate(fixture_json("loyalty_vouchers_success.json"))
    assert page.more_rows is False
    assert (page.valid_ticket, page.remaining_purchases) == (2, 1)
    assert (page.valid_sales_total_amount, page.valid_sales_total_cashback) == (694, 70)
    assert page.model_extra == {"success": True, "identifier": "0099000001209"}


def test_login_example(fake: FakeFourWS) -> None:
    fake.on(fake.login_route, fixture_reply("dm_login_response.json"))
    token = make_client(fake).login()
    assert isinstance(token, LoginToken)
    assert token.token.get_secret_value() == "your_token"
    assert "your_token" not in repr(token)
    assert "your_token" not in str(token)
    assert token.username == "YOUR.USERNAME"
    assert (token.company_id, token.site_id) == ("YOUR_COMPANY", "501")
    assert token.expires == datetime(2024, 6, 6, 13, 15, 59, 267000, tzinfo=UTC)
    assert token.expires_in_ms == 285000


def test_insert_barcode_example(fake: FakeFourWS) -> None:
    fake.on("POST /api/v1/products/ITEM/barcodes", fixture_reply("dm_insert_barcode_response.json"))
    inserted = make_client(fake).insert_barcode("ITEM", "8050200058081", dimensions=("1", "Y4"))
    # the published answer names another barcode than the request (docs/4ws-reference.md §11)
    assert inserted == InsertedBarcode(barcode="3314254119515", prog_id="2334598")


def test_keepit_barcode_example_as_generated_barcodes(fake: FakeFourWS) -> None:
    fake.on(
        "POST /api/v1/products/ITEM/barcodes/generate",
        fixture_reply("keepit_barcode_response.json"),
    )
    result = make_client(fake).generate_missing_barcodes("ITEM")
    assert result == [InsertedBarcode(barcode="1234567890", prog_id="1234")]


def test_access_denied_example(fake: FakeFourWS) -> None:
    fake.on(fake.settings.cmd_get_giftcard, fixture_reply("dm_access_denied_401.json", 401))
    with pytest.raises(AuthenticationError) as info:
        make_client(fake).get_giftcard("2000000001814")
    assert (info.value.status_code, info.value.message) == (401, "Access Denied.")


def test_barcode_exists_example(fake: FakeFourWS) -> None:
    fake.on(
        "POST /api/v1/products/ITEM/barcodes",
        fixture_reply("dm_insert_barcode_exists_400.json", 400),
    )
    with pytest.raises(UniqueConstraintError) as info:
        make_client(fake).insert_barcode("ITEM", "8050200058081")
    assert info.value.status_code == 400
    assert info.value.message.startswith("Unique constraint error, this barcode ")
    assert info.value.message.endswith("8081 already exists")


def test_product_not_found_example(fake: FakeFourWS) -> None:
    fake.on(
        "POST /api/v1/products/ITEM/barcodes", fixture_reply("dm_product_not_found_404.json", 404)
    )
    with pytest.raises(NotFoundError) as info:
        make_client(fake).insert_barcode("ITEM", "8050200058081")
    assert info.value.status_code == 404
    assert info.value.message == "Product not found with item_code: {{item_code}}"


@pytest.mark.parametrize("model", [GenerateGiftCardsResult, UpdateGiftCardResult])
@pytest.mark.parametrize("success", ["true", 1, "yes", None, "false", 0])
def test_callback_success_must_be_a_real_boolean(model: type, success: object) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        model.model_validate({"success": success, "id": "x"})  # type: ignore[attr-defined]
