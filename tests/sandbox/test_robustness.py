"""The sandbox under concurrency, custom wire names, relaxed bodies and odd options."""

from __future__ import annotations

import contextlib
import json
import threading
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourws_pay.api.models import GiftCardUpdate
from fourws_pay.clock import ManualClock
from fourws_pay.errors import APIFailure
from fourws_pay.sandbox import Sandbox, relaxed_json, sandbox_settings
from fourws_pay.sandbox import seed as demo


def test_concurrent_consumptions_never_overdraw(clock: ManualClock) -> None:
    sb = Sandbox(clock=clock)
    card = sb.add_giftcard(amount="300.00")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with sb.client() as client:
                for _ in range(5):
                    client.update_giftcard(
                        GiftCardUpdate(
                            entity_code="440", barcode=card.barcode, amount=Decimal("-10.00")
                        )
                    )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(sb.pending()) == 40
    sb.process_queue()
    outcomes = [r.outcome for r in sb.operations(card.barcode)]
    assert outcomes.count("applied") == 30
    assert outcomes.count("refused") == 10
    assert sb.balance(card.barcode) == 0
    assert sb.total_consumed(card.barcode) == Decimal("300.00")
    assert len({r.seq for r in sb.operations()}) == 40


def test_custom_wire_names_agree_by_construction(clock: ManualClock) -> None:
    custom = sandbox_settings(
        cmd_get_giftcard="readCard_v9",
        param_giftcard_barcode="code",
        cmd_update_giftcard="changeCard_v9",
        path_login="/auth/v2/login",
        path_sku_from_barcode="/catalog/ean/{barcode}",
    )
    sb = Sandbox(settings=custom, clock=clock, seed="demo")
    with sb.client() as client:
        assert client.get_giftcard(demo.EXAMPLE_CARD).amount == 390
        client.update_giftcard(
            GiftCardUpdate(entity_code="440", barcode=demo.EXAMPLE_CARD, amount=Decimal("-1"))
        )
        assert client.sku_from_barcode("3314254119515").item_code == demo.PRODUCT
    sb.process_queue()
    assert sb.balance(demo.EXAMPLE_CARD) == 389
    with Sandbox(clock=clock, seed="demo").client() as default_client:
        assert default_client.get_giftcard(demo.EXAMPLE_CARD).amount == 390


def test_unknown_barcode_status_option(clock: ManualClock) -> None:
    sb = Sandbox(clock=clock, unknown_barcode_status=404)
    with sb.client() as client, pytest.raises(Exception) as info:
        client.get_giftcard("1234567890128")
    assert getattr(info.value, "status_code", None) == 404


def test_callback_id_and_payload_key_options(clock: ManualClock) -> None:
    sb = Sandbox(clock=clock, seed="demo", callback_id_is_queue_id=True, payload_key="meta")
    got: list[bytes] = []
    sb.set_callback_handler(lambda url, body: got.append(body) or 200)
    with sb.client() as client:
        queued = client.update_giftcard(
            GiftCardUpdate(
                entity_code="440",
                barcode=demo.EXAMPLE_CARD,
                amount=Decimal("-1"),
                callback="http://shop.test/cb",
                payload={"k": 1},
            )
        )
    sb.process_queue()
    assert json.loads(got[0]) == {"success": True, "id": queued.queue_id, "meta": {"k": 1}}


def test_no_callback_url_means_no_callback(sb: Sandbox, received: list) -> None:
    with sb.client() as client:
        client.update_giftcard(
            GiftCardUpdate(entity_code="440", barcode=demo.EXAMPLE_CARD, amount=Decimal("-1"))
        )
    run = sb.process_queue()
    assert len(run.processed) == 1
    assert run.delivered == []
    assert received == []


def test_unknown_seed(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="unknown seed"):
        Sandbox(clock=clock, seed="nope")


def test_run_until_idle_moves_a_manual_clock(clock: ManualClock) -> None:
    sb = Sandbox(clock=clock, seed="demo", queue_delay=10, callback_delay=5)
    got: list[bytes] = []
    sb.set_callback_handler(lambda url, body: got.append(body) or 200)
    with sb.client() as client:
        client.update_giftcard(
            GiftCardUpdate(
                entity_code="440",
                barcode=demo.EXAMPLE_CARD,
                amount=Decimal("-1"),
                callback="http://shop.test/cb",
            )
        )
    start = clock.now()
    run = sb.run_until_idle()
    assert len(run.processed) == 1
    assert len(got) == 1
    assert (clock.now() - start).total_seconds() == 15


def test_never_posts_callbacks_off_the_machine(clock: ManualClock) -> None:
    sb = Sandbox(clock=clock, seed="demo")
    assert sb.may_post_to("http://127.0.0.1:9/cb")
    assert sb.may_post_to("http://localhost/cb")
    assert sb.may_post_to("http://[::1]:8000/cb")
    assert not sb.may_post_to("https://webhook.site/abc")
    assert not sb.may_post_to("http://10.0.0.1/cb")
    assert not sb.may_post_to("https://...")
    with sb.client() as client:
        client.update_giftcard(
            GiftCardUpdate(
                entity_code="440",
                barcode=demo.EXAMPLE_CARD,
                amount=Decimal("-1"),
                callback="https://webhook.site/9b012812",
            )
        )
    (delivery,) = sb.process_queue().delivered
    assert delivery.status is None
    assert "not loopback" in (delivery.error or "")
    allowed = Sandbox(clock=clock, callback_hosts=["shop.internal"])
    assert allowed.may_post_to("http://shop.internal/cb")


def test_success_false_message_reaches_the_client_for_pdf_of_unknown_card(sb: Sandbox) -> None:
    with sb.client() as client, pytest.raises(APIFailure, match="barcode not found"):
        client.giftcard_pdf(["1234567890128"])


# ------------------------------------------------------------------- relaxed bodies

_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=2, min_value=-(10**6), max_value=10**6
    ).filter(lambda d: d != d.to_integral_value()),
    st.text(max_size=12),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)


def _js(value: object, trailing: bool) -> str:
    """Write ``value`` the way the reference's examples do: unquoted keys, commas."""
    if isinstance(value, dict):
        items = [f"{k} : {_js(v, trailing)}" for k, v in value.items()]
        return "{" + ", ".join(items) + ("," if trailing and items else "") + "}"
    if isinstance(value, list):
        items = [_js(v, trailing) for v in value]
        return "[" + ", ".join(items) + ("," if trailing and items else "") + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


@settings(max_examples=100, deadline=None)
@given(body=st.dictionaries(_keys, _values, max_size=6), trailing=st.booleans())
def test_relaxed_literal_parses_like_json(body: dict, trailing: bool) -> None:
    assert relaxed_json.loads(_js(body, trailing)) == body


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40))
def test_relaxed_parser_only_raises_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        relaxed_json.loads(text)


def test_relaxed_extras() -> None:
    assert relaxed_json.loads("{a: 'x\\'y', // note\n b: /* c */ 1.50,}") == {
        "a": "x'y",
        "b": Decimal("1.50"),
    }
    assert relaxed_json.loads('{"a": 1}') == {"a": 1}
    for bad in (
        "{a: }",
        "{a 1}",
        "{a: 1",
        "{a: undefined}",
        "[1 2]",
        "'open",
        "{a: 1} x",
        "/* open",
    ):
        with pytest.raises(ValueError):
            relaxed_json.loads(bad)
    with pytest.raises(ValueError):
        relaxed_json.loads("[" * 100 + "1," + "]" * 100)  # relaxed, too deep


def test_sandbox_import_does_not_load_starlette() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from fourws_pay.sandbox import Sandbox, Fault; "
        "print('starlette' in sys.modules, 'uvicorn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
