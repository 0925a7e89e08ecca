"""The pluggy surface: every hook typed, documented and exercised by a throwaway plugin."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fourws_pay import hookimpl, hookspecs, make_plugin_manager
from fourws_pay.errors import ConfigurationError
from fourws_pay.payments.models import EventKind, PaymentEvent
from fourws_pay.plugins import payment_method, payment_methods
from tests.payments.harness import Shop

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("fourws_pay_"))


def test_there_are_hooks() -> None:
    assert set(HOOKS) == {
        "fourws_pay_callback_base_url",
        "fourws_pay_cart_snapshot",
        "fourws_pay_deliver_giftcards",
        "fourws_pay_payment_event",
        "fourws_pay_register_payment_methods",
    }


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_typed_and_documented(name: str) -> None:
    spec = getattr(hookspecs, name)
    signature = inspect.signature(spec)
    doc = inspect.getdoc(spec) or ""
    assert signature.return_annotation is not inspect.Signature.empty
    for param in signature.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) untyped"
        assert f":param {param.name}:" in doc, f"{name} does not document {param.name}"
    firstresult = spec.fourws_pay_spec["firstresult"]
    assert ("Stops at first non-None result" in doc) == firstresult
    assert name in (ROOT / "README.md").read_text(), f"{name} missing from README"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test_implementing_it(name: str) -> None:
    sources = [p.read_text() for p in (ROOT / "tests").rglob("*.py")]
    sources += [p.read_text() for p in (ROOT / "examples").rglob("*.py")]
    assert any(re.search(rf"def {name}\(", s) for s in sources)


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    s = Shop(tmp_path)
    yield s
    s.payments.close()


def register(shop: Shop, plugin: object) -> None:
    shop.payments.plugin_manager.register(plugin)


def test_callback_base_url_hook_overrides_settings(shop: Shop) -> None:
    class PublicUrl:
        @hookimpl
        def fourws_pay_callback_base_url(self) -> str | None:
            return "https://shop.example/4ws/callbacks/"

    register(shop, PublicUrl())
    card = shop.card()
    r = shop.payments.reserve(card, amount="1.00", currency="EUR", order_ref="O")
    op = shop.payments.capture(r.id)
    url = shop.callback_urls[op.id]
    assert url.startswith(f"https://shop.example/4ws/callbacks/{op.id}/")


def test_payment_event_hook_sees_every_step_and_cannot_break_payments(shop: Shop) -> None:
    seen: list[PaymentEvent] = []

    class Listener:
        @hookimpl
        def fourws_pay_payment_event(self, event: PaymentEvent) -> None:
            seen.append(event)
            raise RuntimeError("a listener bug")

    register(shop, Listener())
    card = shop.card()
    r = shop.payments.reserve(card, amount="10.00", currency="EUR", order_ref="O")
    op = shop.payments.capture(r.id)
    shop.settle()
    assert shop.payments.get_operation(op.id).state.value == "succeeded"
    assert [e.kind for e in seen] == [EventKind.RESERVED, EventKind.CAPTURED, EventKind.SETTLED]
    assert all(e.order_ref == "O" for e in seen)
    for event in seen:  # events carry masked barcodes only (invariant 12)
        for record in (event.reservation, event.operation):
            if record is not None:
                assert record.barcode == "*" * (len(card) - 4) + card[-4:]


def test_register_payment_methods_hook() -> None:
    factory: Callable[..., Any] = lambda **kw: "other"  # noqa: E731

    class Other:
        @hookimpl
        def fourws_pay_register_payment_methods(
            self, register: Callable[[str, Callable[..., Any]], None]
        ) -> None:
            register("other", factory)

    pm = make_plugin_manager(load_entrypoints=False, plugins=[Other()])
    methods = payment_methods(pm)
    from fourws_pay import GiftCardPayments

    assert methods["giftcard"] is GiftCardPayments
    assert methods["other"] is factory


def test_hosts_find_the_gift_card_provider_through_the_hook() -> None:
    from fourws_pay import AsyncGiftCardPayments, GiftCardPayments

    pm = make_plugin_manager(load_entrypoints=False)
    assert payment_method("giftcard", plugin_manager=pm) is GiftCardPayments
    assert payment_method(plugin_manager=pm, asynchronous=True) is AsyncGiftCardPayments


def test_an_installed_plugin_can_replace_the_gift_card_provider() -> None:
    """The built-in registers last, so a shop's own ``giftcard`` wins (pluggy calls
    later-registered plugins first, and defaults are registered after installed ones)."""

    def custom(**kwargs: Any) -> str:
        return "custom"

    class Shop:
        @hookimpl
        def fourws_pay_register_payment_methods(self, register: Any) -> None:
            register("giftcard", custom, async_factory=custom)

    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(Shop(), name="entry-point-like")  # as if found on the entry-point group
    builtin = pm.unregister(name="fourws_pay.giftcard")
    pm.register(builtin, name="fourws_pay.giftcard")  # defaults come after installed ones
    assert payment_method("giftcard", plugin_manager=pm) is custom
    assert payment_method("giftcard", plugin_manager=pm, asynchronous=True) is custom


def test_unknown_or_blocked_payment_method_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pm = make_plugin_manager(load_entrypoints=False)
    with pytest.raises(ConfigurationError, match=r"no payment method 'voucher'.*giftcard"):
        payment_method("voucher", plugin_manager=pm)
    monkeypatch.setenv("FOURWS_PAY_DISABLE_PLUGINS", "fourws_pay.giftcard")
    with pytest.raises(ConfigurationError, match="no payment method 'giftcard'"):
        payment_method("giftcard")


def test_a_method_without_an_async_twin_says_so() -> None:
    class SyncOnly:
        @hookimpl
        def fourws_pay_register_payment_methods(self, register: Any) -> None:
            register("sync-only", lambda **kw: None)

    pm = make_plugin_manager(load_entrypoints=False, plugins=[SyncOnly()])
    assert callable(payment_method("sync-only", plugin_manager=pm))
    with pytest.raises(ConfigurationError, match="'sync-only' has no asyncio provider"):
        payment_method("sync-only", plugin_manager=pm, asynchronous=True)


def test_plugins_can_be_blocked_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOURWS_PAY_DISABLE_PLUGINS", "fourws_pay.giftcard")
    assert "giftcard" not in payment_methods(make_plugin_manager(load_entrypoints=False))


def test_cart_snapshot_hook_first_result_wins(shop: Shop) -> None:
    from fourws_pay import CartSnapshot

    class Unknown:
        @hookimpl
        def fourws_pay_cart_snapshot(self, order_ref: str) -> CartSnapshot | None:
            return None

    class Known:
        @hookimpl
        def fourws_pay_cart_snapshot(self, order_ref: str) -> CartSnapshot | None:
            return CartSnapshot(order_ref, Decimal("3.00"), "EUR")

    register(shop, Known())
    register(shop, Unknown())
    r = shop.payments.reserve(shop.card(), order_ref="O-7")
    assert r.amount == Decimal("3.00")
