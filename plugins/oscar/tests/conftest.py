"""Django/Oscar set-up for the fourws-pay-oscar tests, without pytest-django.

Django is configured here (nothing else in this repository uses it), on an SQLite file
that survives between runs: ``migrate`` then has nothing to apply, like ``--keepdb``. Each
test runs inside a transaction that is rolled back, and gets its own in-process sandbox
and fourws-pay ledger.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oscar_testshop.settings")

import django  # noqa: E402

django.setup()

from django.test.utils import setup_test_environment  # noqa: E402

setup_test_environment()  # template-rendered signals for response.templates, locmem mail

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import Client  # noqa: E402
from fourws_pay_oscar import provider  # noqa: E402

from fourws_pay.clock import ManualClock  # noqa: E402
from fourws_pay.hookspecs import hookimpl  # noqa: E402
from fourws_pay.ledger import open_store  # noqa: E402
from fourws_pay.payments import GiftCardPayments  # noqa: E402
from fourws_pay.sandbox import Sandbox  # noqa: E402
from fourws_pay.settings import Settings  # noqa: E402

CALLBACK_BASE_URL = "http://testserver/fourws-pay/callback"
GIFTCARD_ITEM = "GIFTCARD_IVA_TAGLIO_100"  # the 4WS financial item sold cards are made from


def _seed_catalogue() -> int:
    """Country, partner and a 30.00 EUR product with stock; idempotent, committed."""
    from oscar.core.loading import get_model

    country_model = get_model("address", "Country")
    country_model.objects.update_or_create(
        iso_3166_1_a2="IT",
        defaults={
            "iso_3166_1_a3": "ITA",
            "iso_3166_1_numeric": "380",
            "printable_name": "Italy",
            "name": "Italy",
            "is_shipping_country": True,
        },
    )
    product_class, _ = get_model("catalogue", "ProductClass").objects.get_or_create(
        name="Book", defaults={"requires_shipping": True, "track_stock": True}
    )
    partner, _ = get_model("partner", "Partner").objects.get_or_create(name="Test partner")
    product, _ = get_model("catalogue", "Product").objects.get_or_create(
        upc="TEST-BOOK-1",
        defaults={"title": "A book about gift cards", "product_class": product_class},
    )
    get_model("partner", "StockRecord").objects.update_or_create(
        product=product,
        partner=partner,
        defaults={
            "partner_sku": "TEST-BOOK-1",
            "price_currency": "EUR",
            "price": Decimal("30.00"),
            "num_in_stock": 100_000,
            "num_allocated": 0,
        },
    )
    return int(product.pk)


def _migrate_if_needed() -> None:
    """``migrate`` only when something is unapplied (its no-op run still costs seconds)."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        call_command("migrate", verbosity=0, interactive=False)


@pytest.fixture(scope="session")
def oscar_product_id() -> int:
    _migrate_if_needed()
    return _seed_catalogue()


@pytest.fixture(autouse=True)
def _rollback(request: pytest.FixtureRequest):
    """Every non-browser test in a transaction that is rolled back afterwards."""
    if request.node.get_closest_marker("browser"):
        yield
        return
    request.getfixturevalue("oscar_product_id")
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


class EventLog:
    """A throwaway fourws-pay plugin that remembers every payment event."""

    def __init__(self) -> None:
        self.events: list = []

    @hookimpl
    def fourws_pay_payment_event(self, event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind.value for e in self.events]

    def reservations(self) -> list:
        return [e.reservation for e in self.events if e.kind.value == "reserved"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sandbox(clock):
    sandbox = Sandbox(clock=clock)
    sandbox.add_product(GIFTCARD_ITEM, item_type="FINANCIAL")
    return sandbox


@pytest.fixture
def event_log() -> EventLog:
    return EventLog()


@pytest.fixture
def ledger_dir(tmp_path):
    """The fourws-pay ledger's directory: in RAM when the OS offers it (fsyncs are slow)."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="fourws-pay-oscar-", dir="/dev/shm"))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


@pytest.fixture
def payments(sandbox, clock, ledger_dir, event_log):
    """The provider the shop uses: in-process sandbox, callbacks through the Django view."""
    settings = Settings.build(
        **{
            **dict(sandbox.settings),
            "callback_base_url": CALLBACK_BASE_URL,
            "check_cache_ttl": 0,
            "issuing_item_code": GIFTCARD_ITEM,
            "ledger_url": f"sqlite:///{ledger_dir / 'ledger.db'}",
        }
    )
    pm = provider.make_plugin_manager()
    pm.register(event_log)
    payments = GiftCardPayments(
        settings=settings,
        client=sandbox.client(),
        store=open_store(settings.ledger_url),
        clock=clock,
        plugin_manager=pm,
    )
    callback_client = Client(enforce_csrf_checks=True)  # 4WS has no CSRF token

    def deliver(url: str, body: bytes) -> int:
        return callback_client.post(
            urlsplit(url).path, data=body, content_type="application/json"
        ).status_code

    sandbox.set_callback_handler(deliver)
    provider.install(payments)  # tests run the sandbox's queue themselves
    yield payments
    provider.reset()
    payments.close()
