"""A 4WS simulator for demos, tests, fault drills and benchmarks.

``Sandbox`` keeps its own books (cards, products, vouchers, an append-only ledger), answers
the Documents and Data management APIs the client speaks, queues asynchronous updates and
POSTs their callbacks, and misbehaves on request (``Fault``). In-process it is reached
through httpx transports (``sb.client()``); served, through uvicorn on loopback
(``fourws_pay.sandbox.server.serve``).

Importing this package pulls in Starlette only when the ASGI app is first built, so the
pure parts (``ean``, ``relaxed_json``, ``state``, ``faults``) stay cheap to import.
"""

from fourws_pay.sandbox.callbacks import CallbackDelivery
from fourws_pay.sandbox.faults import Fault, FaultPlan
from fourws_pay.sandbox.sandbox import (
    QueueRun,
    RequestRecord,
    Sandbox,
    sandbox_settings,
)
from fourws_pay.sandbox.state import Card, LedgerRecord

__all__ = [
    "CallbackDelivery",
    "Card",
    "Fault",
    "FaultPlan",
    "LedgerRecord",
    "QueueRun",
    "RequestRecord",
    "Sandbox",
    "sandbox_settings",
]
