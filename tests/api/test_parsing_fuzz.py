"""Whatever 4WS sends, every endpoint returns a model or raises a ``FourWSError``
(docs/design.md invariant 13): never KeyError, TypeError, OverflowError or pydantic's
ValidationError."""

from __future__ import annotations

import contextlib
import copy
import os
import re
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourws_pay.api import wirejson
from fourws_pay.api.models import (
    GenerateGiftCardsResult,
    GiftCard,
    LoyaltyVoucher,
    UpdateGiftCardResult,
)
from fourws_pay.clock import ManualClock
from fourws_pay.errors import FourWSError

from .endpoints import CASE_IDS, CASES, Case
from .fakes import FakeFourWS, fixture_json, login_body, make_client, make_settings

FIELD_NAMES = sorted(
    {
        *GiftCard.model_fields,
        *(f.alias for f in GiftCard.model_fields.values() if f.alias),
        *(f.alias for f in LoyaltyVoucher.model_fields.values() if f.alias),
        "success",
        "message",
        "giftcard",
        "giftcards",
        "queueId",
        "valueObjectList",
        "moreRows",
        "resultSetLength",
        "token",
        "expires",
        "expiresInMS",
        "barcode",
        "prog_id",
        "progId",
        "sku",
        "product",
        "item_code",
        "barcodes",
        "insertedObjects",
        "url",
        "pdfUrl",
        "id",
        "payload",
    }
)

numbers_as_text = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.sampled_from(["1e400", "-1E+1000000", "1e-400", "0.0000000001", "00012", "-0", "1_0"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.decimals(min_value=-(10**20), max_value=10**20, allow_nan=False, allow_infinity=False),
    st.sampled_from([Decimal("1E+400"), Decimal("-1E-400"), Decimal("1E+4400")]),
    numbers_as_text,
    st.sampled_from(
        [
            "Y",
            "N",
            "",
            "ACTIVE",
            "CLOSE",
            "2021-10-04 00:00:00",
            "2024-06-06T13:15:59.267Z",
            "9999-12-31T23:59:59-01:00",
            "0001-01-01T00:00:00+01:00",
            "2021-02-30 00:00:00",
            "https://example/x",
        ]
    ),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=6))
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=10,
)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a body (object members and list items, at any depth)."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            found.append((*prefix, key))
            found.extend(paths_of(item, (*prefix, key)))
    return found


def _trimmed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _trimmed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trimmed(v) for v in value[:3]]
    return value


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """A documented body with a few places replaced by arbitrary JSON or removed.

    Few draws per example (the places are precomputed), so hypothesis spends its time on
    the values, not on walking the body.
    """
    body = copy.deepcopy(_trimmed(base))
    places = paths_of(body)
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(places))
        parent: Any = body
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.integers(0, 2))
            if action == 0:
                parent[path[-1]] = draw(scalars)
            elif action == 1:
                parent[path[-1]] = draw(json_values)
            elif isinstance(parent, dict):
                del parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this place
    return body


GOOD_BODIES = {
    "get_giftcard": fixture_json("get_giftcard_success.json"),
    "update_giftcard": fixture_json("update_giftcard_queued.json"),
    "update_giftcard_activation": fixture_json("update_giftcard_queued.json"),
    "generate_giftcards": fixture_json("generate_giftcards_queued.json"),
    "giftcard_pdf": {"success": True, "url": "https://f/x.pdf", "queueId": "q"},
    "loyalty_vouchers": fixture_json("loyalty_vouchers_success.json"),
    "loyalty_vouchers_between": fixture_json("loyalty_vouchers_success.json"),
    "last_loyalty_vouchers": fixture_json("loyalty_vouchers_success.json"),
    "login": login_body(),
    "insert_barcode": fixture_json("dm_insert_barcode_response.json"),
    "sku_from_barcode": {"success": True, "sku": {"item_code": "I", "barcode": "1"}},
    "delete_barcode": {"success": True},
    "generate_missing_barcodes": fixture_json("keepit_barcode_response.json"),
}


@st.composite
def bodies(draw: st.DrawFn, case_name: str) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=40))
    if kind == 1:
        return draw(st.text(max_size=40)).encode()
    value = draw(json_values) if kind < 4 else draw(mutated(GOOD_BODIES[case_name]))
    text = wirejson.dumps(value)
    if draw(st.integers(0, 3)) == 0:
        # numbers only JSON text can carry: exponents, including absurd ones
        token = draw(st.sampled_from(EXOTIC_NUMBERS))
        text = re.sub(r"(?<![\w.\"])\d+(?![\w\"])", token, text, count=draw(st.integers(0, 3)))
    if draw(st.integers(0, 7)) == 0:
        text = text[: draw(st.integers(0, len(text)))]  # truncated
    return text.encode()


EXOTIC_NUMBERS = ["1E+10000000", "-1e-10000000", "1E+400", "1e309", "-0.0", "2E1", "1E-7"]


statuses = st.one_of(st.just(200), st.sampled_from([201, 204, 302, 400, 401, 404, 422, 429, 503]))
retry_after = st.one_of(
    st.none(),
    st.sampled_from(["0", "3", "1e400", "nan", "-1", "Wed, 21 Oct 2015 07:28:00 -0000"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)


# Raise for a deeper run: FOURWS_FUZZ_EXAMPLES=2000 pytest tests/api/test_parsing_fuzz.py
EXAMPLES = int(os.environ.get("FOURWS_FUZZ_EXAMPLES", "100"))
# Endpoints whose parser another row already exercises in full get a lighter run.
SHARED_PARSER = {"update_giftcard_activation", "loyalty_vouchers_between", "last_loyalty_vouchers"}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_parser_only_raises_typed_errors(case: Case) -> None:
    @settings(
        max_examples=EXAMPLES // 3 if case.name in SHARED_PARSER else EXAMPLES,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(body=bodies(case.name), status=statuses, wait=retry_after)
    def check(body: bytes, status: int, wait: str | None) -> None:
        fake = FakeFourWS(make_settings(retry={"max_attempts": 2, "retry_after_cap": 5}))
        headers = {"Content-Type": "application/json"}
        if wait is not None:
            headers["Retry-After"] = wait

        def reply(request: httpx.Request) -> httpx.Response:
            return httpx.Response(status, content=body, headers=headers, request=request)

        fake.on(case.route(fake.settings), reply)
        with contextlib.suppress(FourWSError):
            case.call(make_client(fake, clock=ManualClock()))

    check()


@pytest.mark.parametrize(
    ("model", "fixture"),
    [
        (GenerateGiftCardsResult, "generate_giftcards_callback_usecase.json"),
        (UpdateGiftCardResult, "update_giftcard_callback_success.json"),
    ],
)
def test_callback_models_only_raise_validation_errors(model: Any, fixture: str) -> None:
    """Callback bodies are parsed by the payments layer through these models: any input
    either parses or raises pydantic's ValidationError (which that layer maps), never
    something else; and a parsed ``success`` is a real bool."""
    from pydantic import ValidationError

    base = fixture_json(fixture)

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        value = data.draw(st.one_of(json_values, mutated(base)))
        try:
            parsed = model.model_validate(value)
        except ValidationError:
            return
        assert isinstance(parsed.success, bool)

    check()


def test_strategy_reaches_success_paths() -> None:
    """Guard against a fuzz test that only ever sees garbage: mutated good bodies often
    parse (checked on the card body, the richest one)."""
    base = GOOD_BODIES["get_giftcard"]
    parsed = 0

    @settings(max_examples=60, deadline=None, database=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        nonlocal parsed
        body = data.draw(mutated(base))
        try:
            GiftCard.model_validate(body.get("giftcard"))
            parsed += 1
        except Exception:
            pass

    check()
    assert parsed > 0
