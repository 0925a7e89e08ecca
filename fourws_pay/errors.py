"""Every error fourws-pay raises, in one tree.

Callers catch the branch that matches what they can do about it::

    FourWSError                        anything raised by this package
    ├── ConfigurationError             settings missing or inconsistent; fix the configuration
    │   └── MissingConfigurationError  the 4WS tenant's settings are not set; ``missing``
    │                                  names the ``FOURWS_*`` variables (not in sandbox mode)
    ├── InvalidInputError              the caller passed something unusable; nothing was sent
    │   ├── InvalidAmountError         NaN, infinity, zero/negative, float, too many decimals
    │   └── CurrencyMismatchError      order currency differs from the card's (also a
    │                                  PaymentRefused with reason ``currency_mismatch``)
    ├── TransportError                 no HTTP response was received
    │   ├── ConnectError               the request certainly never reached 4WS (safe to retry)
    │   └── RequestTimeout             no answer in time
    │       ├── ConnectTimeout         timed out connecting (never sent, safe to retry)
    │       └── ReadTimeout            sent, then no answer (may have been applied)
    ├── APIError                       4WS answered, and the answer is a failure
    │   ├── APIStatusError             a non-2xx status; ``status_code`` says which
    │   │   ├── BadRequestError           400
    │   │   ├── AuthenticationError       401 (after one re-login for bearer calls)
    │   │   ├── PermissionDeniedError     403
    │   │   ├── NotFoundError             404
    │   │   ├── UniqueConstraintError     422 (and 400 "Unique constraint error …")
    │   │   ├── RateLimitedError          429; ``retry_after`` seconds, when 4WS said
    │   │   └── ServerError               5xx
    │   ├── APIFailure                 HTTP 2xx with ``"success": false``; ``message`` is 4WS's
    │   └── MalformedResponseError     the body is not JSON or not the documented shape
    ├── AmbiguousOutcomeError          a balance-changing POST may or may not have been applied:
    │                                  never retried automatically; reconcile instead
    ├── LedgerError                    the ledger store could not complete a transaction;
    │   │                              nothing of it was written, the action may be retried
    │   └── LedgerConflict             a commit was refused (lock lost, record changed)
    │   │   └── LedgerLockTimeout      a card stayed locked longer than the store waits
    │   └── LedgerClosedError          the store was closed; no new call is accepted
    └── PaymentError                   the payments layer (see ``fourws_pay.payments``)
        ├── PaymentRefused             the card cannot pay; ``reason`` is a RefusalReason
        │   ├── CurrencyMismatchError  (see above)
        │   └── SaleAlreadySpentError  a sold card to cancel has nothing left to take back
        ├── CardBusyError              another balance change of this card is unresolved;
        │                              retryable: nothing was written or sent
        ├── OrderAllocationError       one card of a several-card order could not be held;
        │                              the holds of that call were released
        ├── OrderCaptureError          some holds of an order could not be captured; the
        │                              others were (re-run ``capture_order``)
        ├── ThrottledError             too many failed lookups for this client key
        ├── NotFoundInLedgerError      unknown reservation or operation id
        ├── InvalidStateError          the operation is not allowed in the current state
        │   └── StaleResolveError      a staff page resolved an operation that had moved on
        └── CallbackRejected           a callback was forged, unknown or malformed

Errors carry what a caller needs (``status_code``, ``message``, ``retry_after``,
``endpoint``) and never a credential, bearer token, callback token or full barcode:
messages are built from masked values only (invariant 12 in docs/design.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fourws_pay.payments.reasons import RefusalReason


class FourWSError(Exception):
    """Base class of every error raised by fourws-pay."""


class ConfigurationError(FourWSError):
    """Settings are missing or inconsistent (for example no base URL)."""


class MissingConfigurationError(ConfigurationError):
    """Settings that 4WS needs were given nowhere; ``missing`` names their ``FOURWS_*``
    variables, in the order the documentation lists them.

    Without them ``Settings`` would fall back to its defaults (a sandbox address on this
    machine, empty credentials), and a shop would start, take orders and fail at the first
    card with 4WS's "Access Denied", which reads like wrong credentials rather than none.
    ``FOURWS_SANDBOX=1`` (``Settings.sandbox``) is the explicit way to run on the sandbox's
    defaults instead. ``hint`` is where the caller may set them (the command line adds its
    ``.env`` and flags).
    """

    def __init__(self, missing: Iterable[str], *, hint: str | None = None) -> None:
        self.missing: tuple[str, ...] = tuple(missing)
        where = hint or (
            "set them in the environment, or FOURWS_SANDBOX=1 for the defaults of a local "
            "sandbox, `fourws-pay sandbox serve`"
        )
        super().__init__(f"missing configuration: {', '.join(self.missing)}; {where}")


class InvalidInputError(FourWSError, ValueError):
    """The caller passed an unusable value; nothing was sent and nothing was written."""


class InvalidAmountError(InvalidInputError):
    """An amount is not a finite, positive Decimal with the allowed number of decimals."""


class TransportError(FourWSError):
    """No HTTP response was received.

    ``request_sent`` is False only when the request certainly never left this process
    (connection refused, DNS failure, connect timeout); only then is a retry of a
    balance-changing call safe.
    """

    request_sent: ClassVar[bool] = True

    def __init__(self, message: str, *, endpoint: str = "") -> None:
        super().__init__(message)
        self.endpoint = endpoint


class ConnectError(TransportError):
    """The connection could not be established: the request was never sent."""

    request_sent = False


class RequestTimeout(TransportError):
    """No answer within the configured timeout.

    Not named ``TimeoutError``: that would shadow the builtin in every module that imports it.
    """


class ConnectTimeout(RequestTimeout):
    """Timed out while connecting: the request was never sent."""

    request_sent = False


class ReadTimeout(RequestTimeout):
    """The request was sent but no answer arrived in time; it may have been applied."""


class APIError(FourWSError):
    """4WS answered with a failure.

    ``message`` is the text 4WS gave (``"barcode not found"``), or a description of what
    was wrong with the answer.
    """

    def __init__(self, message: str, *, endpoint: str = "", status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.status_code = status_code


class APIStatusError(APIError):
    """A non-2xx HTTP status."""

    status_code: int  # always set for status errors


class BadRequestError(APIStatusError):
    """400: the request was rejected as malformed."""


class AuthenticationError(APIStatusError):
    """401: credentials or token refused. Check username, password and applicationId."""


class PermissionDeniedError(APIStatusError):
    """403: the API user lacks the permission for this operation."""


class NotFoundError(APIStatusError):
    """404: the product, SKU or barcode does not exist."""


class UniqueConstraintError(APIStatusError):
    """422 (or 400 with a unique-constraint message): the value already exists."""


class RateLimitedError(APIStatusError):
    """429: too many requests. ``retry_after`` is the interval 4WS asked for, in seconds."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status_code: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status_code=status_code)
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """5xx: 4WS failed. For reads this is retried; for balance changes it is ambiguous."""


class APIFailure(APIError):
    """HTTP 2xx whose body says ``"success": false``; ``message`` is 4WS's explanation."""


class MalformedResponseError(APIError):
    """The body is not JSON or lacks what the documented shape requires."""


class AmbiguousOutcomeError(FourWSError):
    """A balance-changing POST may have been applied: do not resend it blindly.

    Raised for a timeout after sending, a 5xx, a dropped connection or an unreadable
    2xx body on ``updateGiftcard``. The payments layer records the operation as
    ``unknown`` and ``reconcile()`` decides from the card's balance. ``__cause__`` holds
    the underlying error.
    """

    def __init__(self, message: str, *, endpoint: str = "") -> None:
        super().__init__(message)
        self.endpoint = endpoint


class LedgerError(FourWSError):
    """The ledger store could not complete a transaction; nothing of it was written."""


class LedgerConflict(LedgerError):
    """A ledger commit was refused (lock expired, record changed, duplicate id).

    Nothing of the transaction was written; the caller may retry the whole operation.
    """


class LedgerLockTimeout(LedgerConflict):
    """A card stayed locked by another transaction for longer than the store waits."""


class LedgerClosedError(LedgerError):
    """The ledger store was closed: calls in flight finished first, new ones are refused."""


class PaymentError(FourWSError):
    """Base class of the payments layer's errors."""


class PaymentRefused(PaymentError):
    """The card cannot pay what was asked.

    ``reason`` is the precise RefusalReason for the shop's logs and back office;
    ``public_message`` is what to show a customer, uniform for not-found, inactive,
    expired and empty cards so that the answer does not help guessing card numbers.
    """

    def __init__(self, reason: RefusalReason, message: str, *, public_message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.public_message = public_message


class CurrencyMismatchError(PaymentRefused, InvalidInputError):
    """The order's currency is not the card's: a refusal (``reason`` is
    ``currency_mismatch``) that is also bad input, so either ``except`` clause catches it."""


class SaleAlreadySpentError(PaymentRefused):
    """A sold card cannot be cancelled: nothing of it is left to take back (it was spent,
    or is held for a checkout). Nothing was written; the card stays as it is."""


class CardBusyError(PaymentError):
    """Another capture or refund of this card is still unresolved; retry later.

    4WS has no idempotency key, so whether an operation was applied can only be read off the
    card's balance, and only while nothing else moves that balance. So while an operation of
    the card is in flight, ``unknown`` or in ``manual_review``, a new capture or refund of the
    same card is refused with this error before anything is written or sent. It is never a
    final answer about the card: retry after ``retry_after`` seconds (a hint), once the
    callback has arrived, ``reconcile`` has decided or an operator has resolved the review
    (``fourws-pay resolve``). ``blocking_operation_id`` names the operation in the way and
    ``blocking_state`` its state; a shop shows "payment pending, try again shortly".
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        blocking_operation_id: str | None = None,
        blocking_state: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.blocking_operation_id = blocking_operation_id
        self.blocking_state = blocking_state


class OrderAllocationError(PaymentError):
    """``reserve_order`` could not hold its share on one card (or the cards together do not
    cover the order); every hold that call placed was released before this was raised, so
    nothing of the order is held (all or nothing).

    ``masked_barcode`` names the card (last 4 digits only), None when no single card is to
    blame (the cards together fall short). ``reason`` is the card's ``RefusalReason`` when
    the card refused; None when the failure is retryable (the card busy with a race, 4WS
    or the ledger unreachable; ``cause`` is that error and ``retry_after`` a hint), because
    a race is never a final refusal. ``public_message`` is what a customer may be told.
    ``released`` are the ids of the holds the call let go.
    """

    def __init__(
        self,
        message: str,
        *,
        masked_barcode: str | None,
        reason: RefusalReason | None,
        public_message: str,
        released: tuple[str, ...] = (),
        cause: FourWSError | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.masked_barcode = masked_barcode
        self.reason = reason
        self.public_message = public_message
        self.released = released
        self.cause = cause
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """True when nothing about the cards was refused: the same call may succeed later."""
        return self.reason is None


class OrderCaptureError(PaymentError):
    """``capture_order`` captured some holds of the order and not others.

    ``operations`` are the captures that went through (or were already there);
    ``failures`` pairs each hold that was not captured (masked card, reservation id) with
    its error. Captures cannot be taken back by this call: re-run ``capture_order`` (it
    captures only what is still held) or refund what was captured.
    """

    def __init__(
        self,
        message: str,
        *,
        operations: tuple[object, ...],
        failures: tuple[tuple[str, str, FourWSError], ...],
    ) -> None:
        super().__init__(message)
        self.operations = operations
        self.failures = failures


class ThrottledError(PaymentError):
    """Too many failed card lookups for this client key; ``retry_after`` is in seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFoundInLedgerError(PaymentError, KeyError):
    """No reservation or operation with that id exists in the ledger."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidStateError(PaymentError):
    """The reservation or operation is in a state that does not allow this action."""


class StaleResolveError(InvalidStateError):
    """A resolve from a page showing an older state: the operation settled (a late callback,
    ``reconcile``, another operator) since the page was drawn; nothing was changed.
    ``state`` is what the operation is now."""

    def __init__(self, message: str, *, state: str) -> None:
        super().__init__(message)
        self.state = state


class CallbackRejected(PaymentError):
    """A callback was forged, unknown, replayed or malformed; nothing was written.

    ``status_code`` is the HTTP status a receiver should answer with.
    """

    def __init__(self, message: str, *, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code
