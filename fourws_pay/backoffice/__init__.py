"""The staff back office: card look-up with history, the review queue, resolve, reports.

``BackOffice`` (``service.py``) is what every console shows and does, free of any web
framework: the Oscar dashboard section, the Saleor App's page and the standalone ASGI
console (``fourws_pay.backoffice.web``, behind the ``[console]`` extra) are thin views over
it, so a resolve is the same guarded step whichever page it comes from. Authentication is
always the host's (Django staff permissions, a Saleor staff token, a configured credential);
``BackOffice`` takes the authenticated staff member's name as ``actor`` and trusts it.
"""

from fourws_pay.backoffice.service import (
    REVIEW_STATES,
    BackOffice,
    CardLookup,
    DailyReport,
    ReportRow,
)
from fourws_pay.errors import StaleResolveError

__all__ = [
    "REVIEW_STATES",
    "BackOffice",
    "CardLookup",
    "DailyReport",
    "ReportRow",
    "StaleResolveError",
]
