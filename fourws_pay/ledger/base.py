"""Compatibility re-export: the store protocol moved to ``fourws_pay.payments.ports``.

The payments layer owns the port it needs and the stores here implement it, so nothing in
fourws-pay imports this module any more; it stays so that code importing
``fourws_pay.ledger.base`` (as the docs used to say) keeps working.
"""

from fourws_pay.payments.ports import LedgerStore, LedgerTransaction

__all__ = ["LedgerStore", "LedgerTransaction"]
