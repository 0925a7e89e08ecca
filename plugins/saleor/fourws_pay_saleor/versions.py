"""Which Saleor is calling, read tolerantly.

Saleor puts its version in the ``version`` field of every subscription event (the App's
queries select it, so it arrives inside the signed body) and sends a
``Saleor-Schema-Version`` header when it fetches the manifest and installs the App; a
``Saleor-Version`` header is honoured too. The signed payload wins over headers. The App
uses the version to shape answers the caller can accept: an answer an older Saleor rejects
is dropped whole and turns into a failure *after* the App moved money. An unknown version
only ever makes the App more conservative.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SaleorVersion = tuple[int, int]

# The oldest Saleor the App works with: ``TRANSACTION_*`` sync webhooks with
# ``issuedAt``/``idempotencyKey`` and ``transactionEventReport`` returning
# ``alreadyProcessed`` (Saleor 3.20).
MINIMUM_VERSION: SaleorVersion = (3, 20)
REQUIRED_SALEOR_VERSION = ">=3.20"

_VERSION = re.compile(r"^\s*(\d{1,3})\.(\d{1,3})(?:\.\d+)?(?:[-+.]?[0-9A-Za-z.\-]*)?\s*$")


def parse_version(header: str | None) -> SaleorVersion | None:
    """``"3.24.0-a.0"`` -> ``(3, 24)``; anything unreadable -> None (unknown)."""
    if not header:
        return None
    match = _VERSION.match(header)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def too_old(version: SaleorVersion | None) -> bool:
    """True only for a version known to be below the minimum (unknown is not too old)."""
    return version is not None and version < MINIMUM_VERSION


def saleor_version(headers: Mapping[str, str], document: Any = None) -> SaleorVersion | None:
    """The caller's version: the payload's ``version``, else the headers, else None."""
    if isinstance(document, dict):
        found = parse_version(
            document.get("version") if isinstance(document.get("version"), str) else None
        )
        if found is not None:
            return found
    for name in ("saleor-version", "saleor-schema-version"):
        found = parse_version(headers.get(name))
        if found is not None:
            return found
    return None
