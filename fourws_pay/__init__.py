"""fourws-pay: pay with 4WS Suite gift cards in e-commerce checkouts.

The public surface is re-exported here; everything else is internal. Importing this package
loads no web framework, database driver or CLI library (see ``tests/test_import_light.py``).
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from fourws_pay.api.client import (
        AsyncClient,
        Client,
    )
    from fourws_pay.api.models import (
        GeneratedGiftCard,
        GiftCard,
        GiftCardPdf,
        GiftCardUpdate,
        InsertedBarcode,
        LoginToken,
        LoyaltyVoucher,
        QueuedOperation,
        Sku,
        VoucherStatus,
    )
    from fourws_pay.clock import (
        Clock,
        ManualClock,
        SystemClock,
    )
    from fourws_pay.errors import (
        AmbiguousOutcomeError,
        APIError,
        APIFailure,
        APIStatusError,
        AuthenticationError,
        BadRequestError,
        CallbackRejected,
        CardBusyError,
        ConfigurationError,
        ConnectError,
        ConnectTimeout,
        CurrencyMismatchError,
        FourWSError,
        InvalidAmountError,
        InvalidInputError,
        InvalidStateError,
        LedgerConflict,
        LedgerError,
        LedgerLockTimeout,
        MalformedResponseError,
        NotFoundError,
        NotFoundInLedgerError,
        PaymentError,
        PaymentRefused,
        PermissionDeniedError,
        RateLimitedError,
        ReadTimeout,
        ServerError,
        ThrottledError,
        TimeoutError,
        TransportError,
        UniqueConstraintError,
    )
    from fourws_pay.hookspecs import (
        hookimpl,
    )
    from fourws_pay.ledger import (
        LedgerStore,
        SQLiteStore,
        open_store,
    )
    from fourws_pay.logs import (
        mask_barcode,
    )
    from fourws_pay.payments import (
        AsyncGiftCardPayments,
        CallbackResult,
        CartSnapshot,
        Decision,
        EventKind,
        GiftCardPayments,
        Operation,
        OperationKind,
        OperationState,
        PaymentEvent,
        ReconcileReport,
        RefusalReason,
        Reservation,
        ReservationState,
    )
    from fourws_pay.plugins import (
        make_plugin_manager,
    )
    from fourws_pay.settings import (
        RetryPolicy,
        Settings,
    )

__version__ = "0.1.0"

# Public name -> module that defines it. Modules load on first use (PEP 562), so
# ``import fourws_pay`` costs almost nothing and ``from fourws_pay import Client``
# loads only what the client needs.
_EXPORTS: dict[str, str] = {
    "APIError": "fourws_pay.errors",
    "APIFailure": "fourws_pay.errors",
    "APIStatusError": "fourws_pay.errors",
    "AmbiguousOutcomeError": "fourws_pay.errors",
    "AsyncClient": "fourws_pay.api.client",
    "AsyncGiftCardPayments": "fourws_pay.payments",
    "AuthenticationError": "fourws_pay.errors",
    "BadRequestError": "fourws_pay.errors",
    "CallbackRejected": "fourws_pay.errors",
    "CallbackResult": "fourws_pay.payments",
    "CardBusyError": "fourws_pay.errors",
    "CartSnapshot": "fourws_pay.payments",
    "Client": "fourws_pay.api.client",
    "Clock": "fourws_pay.clock",
    "ConfigurationError": "fourws_pay.errors",
    "ConnectError": "fourws_pay.errors",
    "ConnectTimeout": "fourws_pay.errors",
    "CurrencyMismatchError": "fourws_pay.errors",
    "Decision": "fourws_pay.payments",
    "EventKind": "fourws_pay.payments",
    "FourWSError": "fourws_pay.errors",
    "GeneratedGiftCard": "fourws_pay.api.models",
    "GiftCard": "fourws_pay.api.models",
    "GiftCardPayments": "fourws_pay.payments",
    "GiftCardPdf": "fourws_pay.api.models",
    "GiftCardUpdate": "fourws_pay.api.models",
    "InsertedBarcode": "fourws_pay.api.models",
    "InvalidAmountError": "fourws_pay.errors",
    "InvalidInputError": "fourws_pay.errors",
    "InvalidStateError": "fourws_pay.errors",
    "LedgerConflict": "fourws_pay.errors",
    "LedgerError": "fourws_pay.errors",
    "LedgerLockTimeout": "fourws_pay.errors",
    "LedgerStore": "fourws_pay.ledger",
    "LoginToken": "fourws_pay.api.models",
    "LoyaltyVoucher": "fourws_pay.api.models",
    "MalformedResponseError": "fourws_pay.errors",
    "ManualClock": "fourws_pay.clock",
    "NotFoundError": "fourws_pay.errors",
    "NotFoundInLedgerError": "fourws_pay.errors",
    "Operation": "fourws_pay.payments",
    "OperationKind": "fourws_pay.payments",
    "OperationState": "fourws_pay.payments",
    "PaymentError": "fourws_pay.errors",
    "PaymentEvent": "fourws_pay.payments",
    "PaymentRefused": "fourws_pay.errors",
    "PermissionDeniedError": "fourws_pay.errors",
    "QueuedOperation": "fourws_pay.api.models",
    "RateLimitedError": "fourws_pay.errors",
    "ReadTimeout": "fourws_pay.errors",
    "ReconcileReport": "fourws_pay.payments",
    "RefusalReason": "fourws_pay.payments",
    "Reservation": "fourws_pay.payments",
    "ReservationState": "fourws_pay.payments",
    "RetryPolicy": "fourws_pay.settings",
    "SQLiteStore": "fourws_pay.ledger",
    "ServerError": "fourws_pay.errors",
    "Settings": "fourws_pay.settings",
    "Sku": "fourws_pay.api.models",
    "SystemClock": "fourws_pay.clock",
    "ThrottledError": "fourws_pay.errors",
    "TimeoutError": "fourws_pay.errors",
    "TransportError": "fourws_pay.errors",
    "UniqueConstraintError": "fourws_pay.errors",
    "VoucherStatus": "fourws_pay.api.models",
    "hookimpl": "fourws_pay.hookspecs",
    "make_plugin_manager": "fourws_pay.plugins",
    "mask_barcode": "fourws_pay.logs",
    "open_store": "fourws_pay.ledger",
}


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fourws_pay' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "APIError",
    "APIFailure",
    "APIStatusError",
    "AmbiguousOutcomeError",
    "AsyncClient",
    "AsyncGiftCardPayments",
    "AuthenticationError",
    "BadRequestError",
    "CallbackRejected",
    "CallbackResult",
    "CardBusyError",
    "CartSnapshot",
    "Client",
    "Clock",
    "ConfigurationError",
    "ConnectError",
    "ConnectTimeout",
    "CurrencyMismatchError",
    "Decision",
    "EventKind",
    "FourWSError",
    "GeneratedGiftCard",
    "GiftCard",
    "GiftCardPayments",
    "GiftCardPdf",
    "GiftCardUpdate",
    "InsertedBarcode",
    "InvalidAmountError",
    "InvalidInputError",
    "InvalidStateError",
    "LedgerConflict",
    "LedgerError",
    "LedgerLockTimeout",
    "LedgerStore",
    "LoginToken",
    "LoyaltyVoucher",
    "MalformedResponseError",
    "ManualClock",
    "NotFoundError",
    "NotFoundInLedgerError",
    "Operation",
    "OperationKind",
    "OperationState",
    "PaymentError",
    "PaymentEvent",
    "PaymentRefused",
    "PermissionDeniedError",
    "QueuedOperation",
    "RateLimitedError",
    "ReadTimeout",
    "ReconcileReport",
    "RefusalReason",
    "Reservation",
    "ReservationState",
    "RetryPolicy",
    "SQLiteStore",
    "ServerError",
    "Settings",
    "Sku",
    "SystemClock",
    "ThrottledError",
    "TimeoutError",
    "TransportError",
    "UniqueConstraintError",
    "VoucherStatus",
    "hookimpl",
    "make_plugin_manager",
    "mask_barcode",
    "open_store",
]
