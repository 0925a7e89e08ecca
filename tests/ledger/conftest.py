"""The store fixtures over every ledger kind (see tests/services.py)."""

from tests.services import any_store, store_factory

__all__ = ["any_store", "store_factory"]
