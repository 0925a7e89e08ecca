"""Settings of the example shop.

Environment variables:

- ``OSCAR_SHOP_DATA_DIR``: where the database, the fourws-pay ledger and media live
  (default: ``var/`` next to ``manage.py``);
- ``FOURWS_PAY_BACKEND``: ``demo`` (default; ``manage.py runserver`` also serves a 4WS
  sandbox with the demo cards of ``shop/demo_cards.py`` on ``SHOP_SANDBOX_PORT``, default
  8766, and every process of the shop talks to it: see ``shop/demo_sandbox.py``) or
  ``http`` (a sandbox served by ``fourws-pay sandbox serve``, or the real 4WS, configured
  with the ``FOURWS_*`` variables of fourws-pay; ``FOURWS_SANDBOX=1`` is needed for the
  sandbox defaults, else the system check ``fourws_pay_oscar.E001`` names what is missing);
- ``FOURWS_PAY_LEDGER_URL``: the ledger (default: ``sqlite:///$OSCAR_SHOP_DATA_DIR/fourws-pay-ledger.db``);
- ``SHOP_PUBLIC_URL``: where 4WS reaches this shop (default ``http://127.0.0.1:8000``);
- ``SHOP_DEBUG``: ``0`` to turn Django's debug mode off;
- ``SHOP_EMAIL_DIR``: write the shop's e-mails (order confirmations, the gift cards it
  sells) as files in this directory instead of printing them on the console.
"""

import os
from pathlib import Path

from fourws_pay_oscar.nav import backoffice_navigation
from oscar import INSTALLED_APPS as OSCAR_APPS
from oscar.defaults import *  # noqa: F403

from shop import demo_sandbox
from shop.demo_cards import GIFTCARD_ITEM

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("OSCAR_SHOP_DATA_DIR") or BASE_DIR / "var")
DATA_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "example-shop-not-secret")
DEBUG = os.environ.get("SHOP_DEBUG", "1") != "0"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
LANGUAGE_CODE = "en-gb"
SITE_ID = 1
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

FORKED_APPS = {
    # the checkout, to add the shop's own "pay on delivery" method
    "oscar.apps.checkout.apps.CheckoutConfig": "shop.checkout.apps.CheckoutConfig",
    # the catalogue listings, which Haystack's simple backend leaves empty
    "oscar.apps.search.apps.SearchConfig": "shop.search.apps.SearchConfig",
}
# "shop" first: its runserver (which starts the demo sandbox) wins over staticfiles'.
INSTALLED_APPS = [
    "shop",
    *(FORKED_APPS.get(app, app) for app in OSCAR_APPS),
    "sorl.thumbnail",
    "fourws_pay_oscar",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.contrib.flatpages.middleware.FlatpageFallbackMiddleware",
    "oscar.apps.basket.middleware.BasketMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.template.context_processors.i18n",
                "django.contrib.messages.context_processors.messages",
                "oscar.apps.search.context_processors.search_form",
                "oscar.apps.checkout.context_processors.checkout",
                "oscar.core.context_processors.metadata",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
        # WAL lets the threaded dev server read while a checkout writes.
        # IMMEDIATE: a write transaction takes the lock at BEGIN and waits for it, instead
        # of failing at once with "database is locked" when it upgrades from a read while
        # another thread (the 4WS callback view) writes.
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}

AUTHENTICATION_BACKENDS = (
    "oscar.apps.customer.auth_backends.EmailBackend",
    "django.contrib.auth.backends.ModelBackend",
)
HAYSTACK_CONNECTIONS = {"default": {"ENGINE": "haystack.backends.simple_backend.SimpleEngine"}}
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
if os.environ.get("SHOP_EMAIL_DIR"):
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = os.environ["SHOP_EMAIL_DIR"]
STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "/media/"

OSCAR_SHOP_NAME = "4WS gift card shop"
OSCAR_DEFAULT_CURRENCY = "EUR"
OSCAR_ALLOW_ANON_CHECKOUT = True
# the gift-card back office (fourws_pay_oscar.nav): review queue, card look-up, daily report
OSCAR_DASHBOARD_NAVIGATION = [*OSCAR_DASHBOARD_NAVIGATION, backoffice_navigation()]  # noqa: F405

SHOP_PUBLIC_URL = os.environ.get("SHOP_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")

BACKEND = os.environ.get("FOURWS_PAY_BACKEND", "demo")
if BACKEND == "sandbox":  # the name this mode had before the sandbox moved out of process
    BACKEND = "demo"
SHOP_DEMO_SANDBOX = BACKEND == "demo"

FOURWS_PAY = {
    "BACKEND": "http",  # to the demo sandbox, a served one, or 4WS: always over HTTP
    # demo: the sandbox runserver serves; http: the FOURWS_* environment variables
    "SETTINGS": demo_sandbox.settings_kwargs() if SHOP_DEMO_SANDBOX else {},
    "LEDGER_URL": os.environ.get("FOURWS_PAY_LEDGER_URL")
    or f"sqlite:///{DATA_DIR / 'fourws-pay-ledger.db'}",
    "CALLBACK_BASE_URL": f"{SHOP_PUBLIC_URL}/fourws-pay/callback",
    # the shop sells gift cards too (seed_shop's "4WS gift card, 25 EUR")
    "GIFTCARD_ITEM_CODE": os.environ.get("SHOP_GIFTCARD_ITEM", GIFTCARD_ITEM),
}

# One handler, on the root logger, and the loggers only set levels (their records reach
# it by propagation). A handler on "fourws_pay" itself printed every event twice: Oscar
# calls the root-level logging.info() (missing product images), which runs
# logging.basicConfig() when the root has no handler, and records reached both handlers.
# "django" loses the console handler of Django's defaults for the same reason
# (runserver's access lines keep their own "django.server" handler).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": [], "level": "INFO"},
        "fourws_pay": {"level": "INFO"},
        "oscar.checkout": {"level": "INFO"},
    },
}
