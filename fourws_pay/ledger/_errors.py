"""Driver errors become the ledger's own errors at the store boundary.

``errors.py`` promises callers ``LedgerError`` (and ``LedgerLockTimeout`` for a card that
stayed locked too long), never a raw ``sqlite3``/``psycopg``/``pymysql``/``redis`` exception:
a web view's ``except FourWSError`` must catch a ledger outage. Each store says which of its
driver's errors mean "lock wait timed out" and "conflict" (a duplicate key, a deadlock
victim); everything else from the driver is a plain ``LedgerError``. Our own errors raised
inside a transaction (``InvalidStateError``, ``CardBusyError`` …) pass through untouched.

Messages keep the driver's first line (for operators) with long digit runs masked: a
driver may quote a value it choked on, and a value may be a card number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fourws_pay.errors import FourWSError, LedgerConflict, LedgerError, LedgerLockTimeout

_DIGIT_RUN = re.compile(r"\d{6,}")


def _describe(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    first = _DIGIT_RUN.sub(lambda m: "*" * (len(m.group()) - 4) + m.group()[-4:], first)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@contextmanager
def mapped_errors(
    driver_errors: type[BaseException] | tuple[type[BaseException], ...],
    *,
    store: str,
    is_lock_timeout: Callable[[BaseException], bool] = lambda exc: False,
    is_conflict: Callable[[BaseException], bool] = lambda exc: False,
) -> Iterator[None]:
    """Re-raise the driver's errors inside the block as ``LedgerError`` and subclasses."""
    try:
        yield
    except FourWSError:
        raise
    except driver_errors as exc:
        if is_lock_timeout(exc):
            raise LedgerLockTimeout(
                f"{store} ledger: a card stayed locked longer than the store waits "
                f"({_describe(exc)}); nothing was written, retry"
            ) from exc
        if is_conflict(exc):
            raise LedgerConflict(
                f"{store} ledger refused the commit ({_describe(exc)}); nothing was written"
            ) from exc
        raise LedgerError(f"{store} ledger failed: {_describe(exc)}") from exc
