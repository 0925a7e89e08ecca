"""The 4WS operations, listed once (issue 22: one shape per job).

Everything that must know the endpoints derives from ``ENDPOINTS``: the client core builds
its requests from each ``Endpoint``'s method and ``cmd``/path setting, the sandbox routes
and accepts faults for exactly these names, and the CLI tells from ``family`` which base
URL a failure was about. ``tests/sandbox/test_endpoint_list.py`` fails if one drifts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fourws_pay.settings import Settings


@dataclass(frozen=True)
class Endpoint:
    """One 4WS operation, described once for everything that must know it.

    ``ENDPOINTS`` is the single list: the client core builds its requests from it, the
    sandbox routes and scripts faults from it, and the CLI tells which base URL an error
    was about from it, so adding an operation here is what makes all of them know it.
    """

    name: str
    method: str
    family: str  # which API: "documents" (``/api?cmd=``) or "data" (Data management paths)
    idempotent: bool
    setting: str  # the Settings field holding its ``cmd`` (documents) or path (data)
    callback: bool = False  # queued by 4WS, which answers later on the request's callback URL

    def address(self, settings: Settings) -> str:
        """The tenant's ``cmd`` (Documents API) or path template (Data management)."""
        return str(getattr(settings, self.setting))


GET_GIFTCARD = Endpoint("get_giftcard", "GET", "documents", True, "cmd_get_giftcard")
UPDATE_GIFTCARD = Endpoint(
    "update_giftcard", "POST", "documents", False, "cmd_update_giftcard", callback=True
)
GENERATE_GIFTCARDS = Endpoint(
    "generate_giftcards", "POST", "documents", False, "cmd_generate_giftcards", callback=True
)
# the callback is optional here: without one 4WS answers with the PDF's URL at once
GIFTCARD_PDF = Endpoint(
    "giftcard_pdf", "POST", "documents", True, "cmd_giftcard_pdf", callback=True
)
LOYALTY_VOUCHERS = Endpoint("loyalty_vouchers", "GET", "documents", True, "cmd_loyalty_vouchers")
LOYALTY_VOUCHERS_BETWEEN = Endpoint(
    "loyalty_vouchers_between", "GET", "documents", True, "cmd_loyalty_vouchers_between"
)
LAST_LOYALTY_VOUCHERS = Endpoint(
    "last_loyalty_vouchers", "GET", "documents", True, "cmd_last_loyalty_vouchers"
)
LOGIN = Endpoint("login", "POST", "data", True, "path_login")
INSERT_BARCODE = Endpoint("insert_barcode", "POST", "data", True, "path_insert_barcode")
SKU_FROM_BARCODE = Endpoint("sku_from_barcode", "GET", "data", True, "path_sku_from_barcode")
DELETE_BARCODE = Endpoint("delete_barcode", "DELETE", "data", True, "path_delete_barcode")
GENERATE_MISSING_BARCODES = Endpoint(
    "generate_missing_barcodes", "POST", "data", True, "path_generate_missing_barcodes"
)

# Data management paths in the order the sandbox routes them: ``.../barcodes/generate``
# before the paths whose ``{barcode}`` parameter would also match it.
ENDPOINTS = (
    GET_GIFTCARD,
    UPDATE_GIFTCARD,
    GENERATE_GIFTCARDS,
    GIFTCARD_PDF,
    LOYALTY_VOUCHERS,
    LOYALTY_VOUCHERS_BETWEEN,
    LAST_LOYALTY_VOUCHERS,
    LOGIN,
    GENERATE_MISSING_BARCODES,
    INSERT_BARCODE,
    SKU_FROM_BARCODE,
    DELETE_BARCODE,
)


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
    "SKU_FROM_BARCODE",
    "UPDATE_GIFTCARD",
    "Endpoint",
]
