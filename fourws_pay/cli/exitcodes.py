"""Exit codes of ``fourws-pay``: one per kind of failure an operator reacts to differently.

Scripts branch on these, so they are part of the CLI's contract: never renumber one.
The table is rendered into ``fourws-pay --help`` from ``EXIT_CODES``.
"""

from __future__ import annotations

from fourws_pay.errors import (
    AmbiguousOutcomeError,
    APIError,
    APIFailure,
    AuthenticationError,
    CardBusyError,
    ConfigurationError,
    CurrencyMismatchError,
    FourWSError,
    InvalidInputError,
    InvalidStateError,
    LedgerLockTimeout,
    MalformedResponseError,
    NotFoundError,
    NotFoundInLedgerError,
    PaymentRefused,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ThrottledError,
    TransportError,
)

OK = 0
FAILURE = 1  # the command ran but its outcome is not clean (rejected rows, unreconciled)
USAGE = 2  # bad arguments or bad input; nothing was sent
CONFIGURATION = 3
AUTHENTICATION = 4
NOT_FOUND = 5
REFUSED = 6  # 4WS (or the payment rules) said no
RATE_LIMITED = 7
UNAVAILABLE = 8  # no answer, timeout or 5xx: try again later
AMBIGUOUS = 9  # a balance change may or may not have been applied: run `reconcile`
MALFORMED = 10
INTERRUPTED = 130

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (OK, "success"),
    (FAILURE, "finished, but not cleanly (rejected rows, unreconciled balances, review needed)"),
    (USAGE, "bad arguments or input; nothing was sent"),
    (CONFIGURATION, "missing or invalid configuration (FOURWS_* / .env / flags)"),
    (AUTHENTICATION, "4WS refused the credentials or the permission"),
    (NOT_FOUND, "card, barcode, product, reservation or operation not found"),
    (REFUSED, "4WS or the payment rules refused the request"),
    (RATE_LIMITED, "rate limited: retry after the interval shown"),
    (UNAVAILABLE, "4WS unreachable, timed out or failing (5xx), or the card busy: retry later"),
    (AMBIGUOUS, "a balance change may have been applied: run `fourws-pay reconcile`"),
    (MALFORMED, "4WS answered something unreadable"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
)

# Most specific first: the first matching class wins.
_BY_CLASS: tuple[tuple[type[FourWSError], int], ...] = (
    (ConfigurationError, CONFIGURATION),
    (CurrencyMismatchError, REFUSED),  # also an InvalidInputError; a refusal to the user
    (InvalidInputError, USAGE),
    (CardBusyError, UNAVAILABLE),  # another operation of the card is unresolved: retry later
    (LedgerLockTimeout, UNAVAILABLE),
    (AuthenticationError, AUTHENTICATION),
    (PermissionDeniedError, AUTHENTICATION),
    (NotFoundError, NOT_FOUND),
    (NotFoundInLedgerError, NOT_FOUND),
    (RateLimitedError, RATE_LIMITED),
    (ThrottledError, RATE_LIMITED),
    (ServerError, UNAVAILABLE),
    (TransportError, UNAVAILABLE),
    (AmbiguousOutcomeError, AMBIGUOUS),
    (MalformedResponseError, MALFORMED),
    (PaymentRefused, REFUSED),
    (InvalidStateError, REFUSED),  # e.g. activating a card that is already active
    (APIError, REFUSED),
)


def exit_code_for(error: FourWSError) -> int:
    """The documented exit code for ``error``."""
    if isinstance(error, APIFailure) and "not found" in error.message.lower():
        return NOT_FOUND  # 4WS says "barcode not found" with success: false, not a 404
    for cls, code in _BY_CLASS:
        if isinstance(error, cls):
            return code
    return FAILURE


def epilog() -> str:
    """The exit-code table for ``--help`` (click keeps lines that follow a ``\\b`` line)."""
    lines = ["\b", "Exit codes:"]
    lines += [f"  {code:>3}  {text}" for code, text in EXIT_CODES]
    return "\n".join(lines)
