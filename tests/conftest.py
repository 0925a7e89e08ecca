"""Shared fixtures: ledger stores over every backend (see tests/services.py)."""

from tests.services import any_store, store_factory  # noqa: F401
