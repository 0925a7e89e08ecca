"""The sans-I/O heart of the 4WS client, shared by ``Client`` and ``AsyncClient``.

Each endpoint is a *flow*: a generator that yields ``Send(request)`` or ``Sleep(seconds)``
steps and receives, for each ``Send``, either the ``httpx.Response`` (already read) or the
``httpx.HTTPError`` raised while sending. The twins only drive flows (a dozen lines each), so
request building, response parsing, error mapping, retry decisions, token caching and
logging exist once.

Retry rules are in ``fourws_pay.api.exchange`` (docs/design.md invariant 3).

The code is split by job: ``fourws_pay.api.endpoints`` (the one endpoint list),
``fourws_pay.api.wire`` (reading answers, mapping errors), ``fourws_pay.api.exchange``
(steps, retries, tokens, login) and one module per API family,
``fourws_pay.api.documents_flows`` and ``fourws_pay.api.data_flows``. This module joins
them into ``ClientCore`` and keeps the names it has always exported.
"""

from __future__ import annotations

from fourws_pay.api.data_flows import DataFlows
from fourws_pay.api.documents_flows import MAX_PAGES, DocumentsFlows
from fourws_pay.api.endpoints import (
    DELETE_BARCODE,
    ENDPOINTS,
    GENERATE_GIFTCARDS,
    GENERATE_MISSING_BARCODES,
    GET_GIFTCARD,
    GIFTCARD_PDF,
    INSERT_BARCODE,
    LAST_LOYALTY_VOUCHERS,
    LOGIN,
    LOYALTY_VOUCHERS,
    LOYALTY_VOUCHERS_BETWEEN,
    SKU_FROM_BARCODE,
    UPDATE_GIFTCARD,
    Endpoint,
)
from fourws_pay.api.exchange import MAX_TOKEN_LIFETIME_MS, Flow, Send, Sleep, Step
from fourws_pay.api.wire import json_body, parse_model, require_success
from fourws_pay.errors import APIError


class ClientCore(DocumentsFlows, DataFlows):
    """Request building, parsing, error mapping, retries and token cache for one tenant."""


__all__ = [
    "DELETE_BARCODE",
    "ENDPOINTS",
    "GENERATE_GIFTCARDS",
    "GENERATE_MISSING_BARCODES",
    "GET_GIFTCARD",
    "GIFTCARD_PDF",
    "INSERT_BARCODE",
    "LAST_LOYALTY_VOUCHERS",
    "LOGIN",
    "LOYALTY_VOUCHERS",
    "LOYALTY_VOUCHERS_BETWEEN",
    "MAX_PAGES",
    "MAX_TOKEN_LIFETIME_MS",
    "SKU_FROM_BARCODE",
    "UPDATE_GIFTCARD",
    "APIError",
    "ClientCore",
    "Endpoint",
    "Flow",
    "Send",
    "Sleep",
    "Step",
    "json_body",
    "parse_model",
    "require_success",
]
