"""Durable ledgers of reservations and operations.

``open_store(url)`` picks the implementation from the URL scheme so that a shop switches
stores by configuration (``Settings.ledger_url``) without code changes:

- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the embedded default);
- other schemes (``postgresql://``, ``mysql://``, ``redis://``) are loaded from
  ``fourws_pay.ledger.<scheme>`` when installed, so that drivers stay optional extras.
"""

from __future__ import annotations

import importlib
from typing import Any

from fourws_pay.errors import ConfigurationError
from fourws_pay.ledger.sqlite import SQLiteStore
from fourws_pay.payments.ports import LedgerStore, LedgerTransaction

_SCHEMES = {
    "postgresql": "fourws_pay.ledger.postgres",
    "postgres": "fourws_pay.ledger.postgres",
    "mysql": "fourws_pay.ledger.mysql",
    "mariadb": "fourws_pay.ledger.mysql",
    "redis": "fourws_pay.ledger.redis",
}
# The distribution extra that installs each store's driver (pyproject.toml).
_EXTRAS = {
    "fourws_pay.ledger.postgres": "postgres",
    "fourws_pay.ledger.mysql": "mysql",
    "fourws_pay.ledger.redis": "redis",
}


def open_store(url: str, **options: Any) -> LedgerStore:
    """Open the ledger named by ``url`` (see the module docstring)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError(f"ledger URL needs a scheme, e.g. sqlite:///ledger.db: {url!r}")
    if scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        if not path:
            raise ConfigurationError("sqlite ledger URL needs a path: sqlite:///ledger.db")
        return SQLiteStore(path, **options)
    module_name = _SCHEMES.get(scheme)
    if module_name is None:
        raise ConfigurationError(f"unknown ledger scheme {scheme!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRAS[module_name]
        raise ConfigurationError(
            f"the {scheme} ledger needs its driver ({exc.name} is not installed): "
            f'pip install "fourws-pay[{extra}]"'
        ) from None
    store: LedgerStore = module.open_store(url, **options)
    return store


__all__ = ["LedgerStore", "LedgerTransaction", "SQLiteStore", "open_store"]
