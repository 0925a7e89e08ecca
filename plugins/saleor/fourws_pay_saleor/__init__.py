"""fourws-pay-saleor: a Saleor payment App that accepts 4WS Suite gift cards.

Run it with ``fourws-pay-saleor serve`` (or
``uvicorn --factory fourws_pay_saleor.cli:app_from_env``) and install it in Saleor from
``<app url>/api/manifest``.
"""

from fourws_pay_saleor.app import SaleorApp, create_app
from fourws_pay_saleor.config import AppConfig
from fourws_pay_saleor.gateway import Gateway, PaymentsGateway
from fourws_pay_saleor.manifest import SUBSCRIPTIONS, build_manifest
from fourws_pay_saleor.store import AppStore

__version__ = "0.2.0"

__all__ = [
    "SUBSCRIPTIONS",
    "AppConfig",
    "AppStore",
    "Gateway",
    "PaymentsGateway",
    "SaleorApp",
    "build_manifest",
    "create_app",
]
