"""The App manifest Saleor reads on install, and the subscription queries it declares.

Each webhook's ``query`` decides the body Saleor sends; ``payloads.py`` parses exactly these
fields. ``issuedAt`` is selected on the ``*_REQUESTED`` events: the App recognises a
repeated delivery by the hash of the signed body, and ``issuedAt`` keeps two genuine,
otherwise identical requests (two partial refunds of the same amount) apart. (Saleor's own
retries of these webhooks arrive with an empty body; see ``actions.py``.) ``version``
(Saleor's own version) is selected on every event so that answers can be shaped for the
calling Saleor (``versions.py``).

``requiredSaleorVersion`` makes an older Saleor refuse the installation outright instead of
failing later on answers it cannot read (Saleor checks the range on ``appInstall``).
APP_DELETED and APP_STATUS_CHANGED tell the App to forget a token or to pause. With
``sell_giftcards`` the App also asks for ``MANAGE_ORDERS`` and hears ORDER_FULLY_PAID
(``selling.py``).
"""

from __future__ import annotations

from typing import Any

from fourws_pay_saleor.backoffice import BACKOFFICE_PATH, LOGIN_PATH
from fourws_pay_saleor.config import AppConfig
from fourws_pay_saleor.payloads import WebhookEvent
from fourws_pay_saleor.selling import ORDER_FULLY_PAID_PATH, ORDER_FULLY_PAID_QUERY
from fourws_pay_saleor.versions import REQUIRED_SALEOR_VERSION

_SOURCE_OBJECT = """
    sourceObject {
      __typename
      ... on Checkout { id channel { slug } totalPrice { gross { amount currency } } }
      ... on Order { id channel { slug } total { gross { amount currency } } }
    }"""

_TRANSACTION = """
    transaction { id pspReference }"""

_ACTION = """
    action { amount currency actionType }"""

SUBSCRIPTIONS: dict[WebhookEvent, str] = {
    WebhookEvent.PAYMENT_GATEWAY_INITIALIZE_SESSION: (
        "subscription { event { version ... on PaymentGatewayInitializeSession {\n"
        "    issuedAt amount data" + _SOURCE_OBJECT + "\n  } } }"
    ),
    WebhookEvent.TRANSACTION_INITIALIZE_SESSION: (
        "subscription { event { version ... on TransactionInitializeSession {\n"
        "    issuedAt data merchantReference idempotencyKey customerIpAddress"
        + _TRANSACTION
        + _ACTION
        + _SOURCE_OBJECT
        + "\n  } } }"
    ),
    WebhookEvent.TRANSACTION_PROCESS_SESSION: (
        "subscription { event { version ... on TransactionProcessSession {\n"
        "    issuedAt data merchantReference customerIpAddress"
        + _TRANSACTION
        + _ACTION
        + _SOURCE_OBJECT
        + "\n  } } }"
    ),
    WebhookEvent.TRANSACTION_CHARGE_REQUESTED: (
        "subscription { event { version ... on TransactionChargeRequested {\n"
        "    issuedAt" + _TRANSACTION + _ACTION + "\n  } } }"
    ),
    WebhookEvent.TRANSACTION_REFUND_REQUESTED: (
        "subscription { event { version ... on TransactionRefundRequested {\n"
        "    issuedAt grantedRefund { id }" + _TRANSACTION + _ACTION + "\n  } } }"
    ),
    WebhookEvent.TRANSACTION_CANCELATION_REQUESTED: (
        "subscription { event { version ... on TransactionCancelationRequested {\n"
        "    issuedAt" + _TRANSACTION + _ACTION + "\n  } } }"
    ),
}

WEBHOOK_PATHS: dict[WebhookEvent, str] = {
    event: "/api/webhooks/" + event.value.replace("_", "-") for event in WebhookEvent
}

APP_EVENTS_PATH = "/api/webhooks/app-events"
APP_EVENTS_QUERY = (
    "subscription { event { version"
    " ... on AppDeleted { app { id } }"
    " ... on AppStatusChanged { app { id isActive } } } }"
)

MANIFEST_PATH = "/api/manifest"
REGISTER_PATH = "/api/register"


def build_manifest(config: AppConfig) -> dict[str, Any]:
    """The JSON Saleor fetches from the manifest URL when the App is installed."""
    return {
        "id": config.app_id,
        "version": config.app_version,
        "name": config.app_name,
        "about": "Accept 4WS Suite gift cards as a payment method (Transaction API).",
        "author": config.author,
        "requiredSaleorVersion": REQUIRED_SALEOR_VERSION,
        "permissions": ["HANDLE_PAYMENTS", "MANAGE_ORDERS"]
        if config.sell_giftcards
        else ["HANDLE_PAYMENTS"],
        "appUrl": config.url("/"),
        "tokenTargetUrl": config.url(REGISTER_PATH),
        "extensions": [
            {
                # Saleor 3.24 (manifest_validations.py): a relative url is joined to appUrl;
                # APP_PAGE opens it inside the Dashboard, which hands it a token over
                # AppBridge; the extension's permissions must be the App's own.
                "identifier": "fourws-backoffice",
                "label": "Gift card back office",
                "mount": "NAVIGATION_ORDERS",
                "target": "APP_PAGE",
                "url": BACKOFFICE_PATH + LOGIN_PATH,
                "permissions": ["HANDLE_PAYMENTS"],
            }
        ]
        if config.backoffice
        else [],
        "webhooks": [
            {
                "name": f"4WS gift cards: {event.enum_name}",
                "syncEvents": [event.enum_name],
                "asyncEvents": [],
                "query": SUBSCRIPTIONS[event],
                "targetUrl": config.url(WEBHOOK_PATHS[event]),
                "isActive": True,
            }
            for event in WebhookEvent
        ]
        + [
            {
                "name": "4WS gift cards: app lifecycle",
                "syncEvents": [],
                "asyncEvents": ["APP_DELETED", "APP_STATUS_CHANGED"],
                "query": APP_EVENTS_QUERY,
                "targetUrl": config.url(APP_EVENTS_PATH),
                "isActive": True,
            }
        ]
        + (
            [
                {
                    "name": "4WS gift cards: sell cards of paid orders",
                    "syncEvents": [],
                    "asyncEvents": ["ORDER_FULLY_PAID"],
                    "query": ORDER_FULLY_PAID_QUERY,
                    "targetUrl": config.url(ORDER_FULLY_PAID_PATH),
                    "isActive": True,
                }
            ]
            if config.sell_giftcards
            else []
        ),
    }
