"""The Oscar integration's parts on their own: code sealing, hooks, settings, wiring."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import Client, override_settings
from fourws_pay_oscar import codes, conf, mixins, plugin, provider
from fourws_pay_oscar.checkout import views as ready_views
from oscar.apps.order.models import Order
from oscar.core.prices import Price
from oscar_checkout import checkout
from oscar_testshop.checkout import views as shop_views

CARD = "2000000001814"


def test_sealed_code_round_trips_only_for_its_basket():
    token = codes.seal(CARD, basket_id=7)
    assert CARD not in token
    assert codes.unseal(token, basket_id=7) == CARD
    with pytest.raises(codes.CodeTokenError):
        codes.unseal(token, basket_id=8)
    with pytest.raises(codes.CodeTokenError):
        codes.unseal(token[:-4] + "AAAA", basket_id=7)
    with pytest.raises(codes.CodeTokenError):
        codes.unseal("not a token at all", basket_id=7)


def test_sealed_code_expires():
    token = codes.seal(CARD, basket_id=1)
    max_age = conf.get("CODE_MAX_AGE")
    assert codes.unseal(token, basket_id=1, now=int(time.time()) + max_age - 5) == CARD
    with pytest.raises(codes.CodeTokenError):
        codes.unseal(token, basket_id=1, now=int(time.time()) + max_age + 5)


def test_tampered_token_at_place_order_asks_for_the_code_again(payments, sandbox, oscar_product_id):
    from oscar_checkout import submit_code, to_payment_details

    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    client = Client()
    to_payment_details(client, oscar_product_id)
    assert submit_code(client, CARD).status_code == 200
    forged = codes.seal(CARD, basket_id=-1)  # sealed for another basket
    response = client.post(
        "/checkout/preview/", {"action": "place_order", "giftcard_token": forged}
    )
    assert response.status_code == 200
    assert mixins.expired_token_message() in response.content.decode()
    assert not Order.objects.exists()
    assert sandbox.balance(CARD) == Decimal("50.00")


def test_ready_app_is_gift_card_only_and_the_shop_fork_is_not():
    assert ready_views.PaymentDetailsView().giftcard_allows_partial() is False
    assert ready_views.PaymentDetailsView().giftcard_required() is True
    assert shop_views.PaymentDetailsView().giftcard_allows_partial() is True
    assert shop_views.PaymentDetailsView().giftcard_required() is False


def test_remainder_keeps_the_tax_proportion():
    total = Price(currency="EUR", excl_tax=Decimal("100.00"), incl_tax=Decimal("122.00"))
    rest = mixins._remainder_price(total, Decimal("61.00"))
    assert (rest.currency, rest.excl_tax, rest.incl_tax) == (
        "EUR",
        Decimal("50.00"),
        Decimal("61.00"),
    )


def test_order_refs_are_prefixed_and_foreign_refs_ignored():
    assert conf.order_ref("100001") == "oscar-100001"
    assert conf.order_number("oscar-100001") == "100001"
    assert conf.order_number("ORD-1") is None
    assert conf.order_number("oscar-") is None
    assert conf.order_number(None) is None


def test_hooks_are_inert_until_the_provider_exists(payments):
    assert plugin.is_active()
    assert plugin.fourws_pay_callback_base_url() == "http://testserver/fourws-pay/callback"
    provider.reset()
    assert not plugin.is_active()
    assert plugin.fourws_pay_callback_base_url() is None
    assert plugin.fourws_pay_cart_snapshot(order_ref="oscar-100001") is None


def test_cart_snapshot_describes_a_placed_order(payments, sandbox, oscar_product_id):
    sandbox.add_giftcard(CARD, amount=Decimal("50.00"))
    checkout(Client(), oscar_product_id, CARD)
    order = Order.objects.get()
    hook = payments.plugin_manager.hook.fourws_pay_cart_snapshot
    snapshot = hook(order_ref=f"oscar-{order.number}")
    assert (snapshot.total, snapshot.currency) == (Decimal("30.00"), "EUR")
    assert hook(order_ref="ORD-9") is None


def test_provider_is_built_from_django_settings(tmp_path):
    from fourws_pay.sandbox.server import start_in_thread

    with start_in_thread(seed="empty") as served:
        served.sandbox.add_giftcard(CARD, amount=Decimal("12.50"))
        config = {
            "BACKEND": "http",
            "LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "CALLBACK_BASE_URL": "http://shop.example/fourws-pay/callback",
            "SETTINGS": {
                **served.settings.model_dump(exclude={"ledger_url", "callback_base_url"}),
                "check_cache_ttl": 0,
            },
        }
        try:
            with override_settings(FOURWS_PAY=config):
                payments = provider.get_payments()
                assert payments.settings.callback_base_url == config["CALLBACK_BASE_URL"]
                assert payments.settings.ledger_url == config["LEDGER_URL"]
                assert payments.settings.documents_base_url == served.url
                assert (tmp_path / "ledger.db").exists()
                decision = payments.check(CARD, amount=Decimal("10.00"), currency="EUR")
                assert decision.ok
                assert decision.available_balance == Decimal("12.50")
            # Leaving override_settings rebuilds from the project's settings next time.
            assert provider._runtime is None
        finally:
            provider.reset()


def test_provider_is_the_giftcard_method_the_plugins_registered(tmp_path, monkeypatch):
    """The provider is found through ``fourws_pay_register_payment_methods``, so a shop's
    plugin that registers its own ``"giftcard"`` (a subclass, say) is the one built."""
    from fourws_pay.hookspecs import hookimpl
    from fourws_pay.payments import GiftCardPayments

    class ShopPayments(GiftCardPayments):
        pass

    class ShopMethod:
        @hookimpl
        def fourws_pay_register_payment_methods(self, register):
            register("giftcard", ShopPayments)

    original = provider.make_plugin_manager

    def with_shop_method():
        manager = original()
        manager.register(ShopMethod(), name="shop_method")
        return manager

    monkeypatch.setattr(provider, "make_plugin_manager", with_shop_method)
    config = {
        "BACKEND": "http",
        "LEDGER_URL": f"sqlite:///{tmp_path / 'l.db'}",
        "SETTINGS": {"sandbox": True},
    }
    try:
        with override_settings(FOURWS_PAY=config):
            payments = provider.get_payments()
            assert type(payments) is ShopPayments
            assert payments.plugin_manager.get_plugin("shop_method") is not None
    finally:
        provider.reset()


def test_the_integration_builds_no_simulator(tmp_path):
    """A 4WS simulator is the example shop's or the tests' business, never production's."""
    from fourws_pay.errors import ConfigurationError

    source = Path(provider.__file__).read_text()
    assert "fourws_pay.sandbox" not in source
    config = {"BACKEND": "sandbox", "LEDGER_URL": f"sqlite:///{tmp_path / 'l.db'}"}
    try:
        with override_settings(FOURWS_PAY=config), pytest.raises(ConfigurationError) as err:
            provider.get_payments()
        assert "sandbox serve" in str(err.value)
    finally:
        provider.reset()


def test_ledger_defaults_to_a_file_next_to_the_project(tmp_path):
    with override_settings(FOURWS_PAY={}, BASE_DIR=tmp_path):
        assert conf.ledger_url() == f"sqlite:///{tmp_path / conf.LEDGER_FILENAME}"
    provider.reset()


def test_unknown_backend_is_a_configuration_error(tmp_path):
    from fourws_pay.errors import ConfigurationError

    config = {"BACKEND": "carrier-pigeon", "LEDGER_URL": f"sqlite:///{tmp_path / 'l.db'}"}
    try:
        with override_settings(FOURWS_PAY=config), pytest.raises(ConfigurationError):
            provider.get_payments()
    finally:
        provider.reset()


def test_registered_on_the_fourws_pay_entry_point_group():
    (entry,) = [e for e in importlib.metadata.entry_points(group="fourws_pay") if e.name == "oscar"]
    assert entry.value == "fourws_pay_oscar.plugin"
    manager = provider.make_plugin_manager()
    assert manager.is_registered(plugin)


def test_importing_the_hooks_loads_no_django():
    code = "import sys, fourws_pay_oscar.plugin; print('django' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
