"""Oscar test project settings (the minimal set Oscar 4.2 needs, plus fourws_pay_oscar)."""

import hashlib
import os
import tempfile
from pathlib import Path

from fourws_pay_oscar.nav import backoffice_navigation
from oscar import INSTALLED_APPS as OSCAR_APPS
from oscar.defaults import *  # noqa: F403

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "fourws-pay-oscar-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
LANGUAGE_CODE = "en-gb"
SITE_ID = 1
ROOT_URLCONF = "oscar_testshop.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

FORKED_APPS = {
    "oscar.apps.checkout.apps.CheckoutConfig": "oscar_testshop.checkout.apps.CheckoutConfig",
    # its strategy only: a gift card's amount typed by the buyer (fourws_pay_oscar.strategy)
    "oscar.apps.partner.apps.PartnerConfig": "oscar_testshop.partner.apps.PartnerConfig",
}
INSTALLED_APPS = [FORKED_APPS.get(app, app) for app in OSCAR_APPS] + [
    "sorl.thumbnail",
    "fourws_pay_oscar",
]
MIGRATION_MODULES = {"partner": "oscar.apps.partner.migrations"}  # the fork adds no model

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "oscar.apps.basket.middleware.BasketMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],  # the order pages show sold gift cards
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
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

# One file per checkout and xdist worker, kept between runs (migrate then only checks, like
# --keepdb); two checkouts tested at once on one machine never share one.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
_CHECKOUT = hashlib.sha256(os.path.abspath(__file__).encode()).hexdigest()[:8]
_DB = os.environ.get("FOURWS_PAY_OSCAR_TEST_DB") or os.path.join(
    tempfile.gettempdir(), f"fourws-pay-oscar-tests-{_CHECKOUT}-{_WORKER}.sqlite3"
)
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _DB, "TEST": {"NAME": _DB}}
}

AUTHENTICATION_BACKENDS = (
    "oscar.apps.customer.auth_backends.EmailBackend",
    "django.contrib.auth.backends.ModelBackend",
)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
HAYSTACK_CONNECTIONS = {"default": {"ENGINE": "haystack.backends.simple_backend.SimpleEngine"}}
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STATIC_URL = "/static/"
MEDIA_ROOT = os.path.join(tempfile.gettempdir(), "fourws-pay-oscar-tests-media")
MEDIA_URL = "/media/"
LOGGING_CONFIG = None

OSCAR_DEFAULT_CURRENCY = "EUR"
# the back office's "Gift cards" menu (fourws_pay_oscar.nav), after Oscar's own entries
OSCAR_DASHBOARD_NAVIGATION = [*OSCAR_DASHBOARD_NAVIGATION, backoffice_navigation()]  # noqa: F405
OSCAR_ALLOW_ANON_CHECKOUT = True

FOURWS_PAY = {
    "BACKEND": "http",  # the tests install() their own provider on an in-process sandbox
    # a test shop, not a tenant: sandbox mode says so (else check E001 wants FOURWS_*)
    "SETTINGS": {"sandbox": True},
    "CALLBACK_BASE_URL": "http://testserver/fourws-pay/callback",
}
