"""The 4WS API client: ``Client``/``AsyncClient`` over one sans-I/O ``ClientCore``."""

from fourws_pay.api.client import AsyncClient, Client
from fourws_pay.api.core import ClientCore

__all__ = ["AsyncClient", "Client", "ClientCore"]
