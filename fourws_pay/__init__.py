"""fourws-pay: pay with 4WS Suite gift cards in e-commerce checkouts.

The public surface is re-exported here; everything else is internal. Importing this package
loads no web framework, database driver or CLI library (see ``tests/test_import_light.py``).
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    # For type checkers only; ``_EXPORTS`` below is what runs. ``X as X`` marks an explicit
    # re-export (``__all__`` is computed, so mypy cannot read it); isort would split such
    # imports one per statement, hence the noqa.
    from fourws_pay.api.client import (  # noqa: I001
        AsyncClient as AsyncClient,
        Client as Client,
    )
    from fourws_pay.api.models import (
        GeneratedGiftCard as GeneratedGiftCard,
        GiftCard as GiftCard,
        GiftCardPdf as GiftCardPdf,
        GiftCardUpdate as GiftCardUpdate,
        InsertedBarcode as InsertedBarcode,
        LoginToken as LoginToken,
        LoyaltyVoucher as LoyaltyVoucher,
        QueuedOperation as QueuedOperation,
        Sku as Sku,
        VoucherStatus as VoucherStatus,
    )
    from fourws_pay.clock import (
        Clock as Clock,
        ManualClock as ManualClock,
        SystemClock as SystemClock,
    )
    from fourws_pay.errors import (
        AmbiguousOutcomeError as AmbiguousOutcomeError,
        APIError as APIError,
        APIFailure as APIFailure,
        APIStatusError as APIStatusError,
        AuthenticationError as AuthenticationError,
        BadRequestError as BadRequestError,
        CallbackRejected as CallbackRejected,
        CardBusyError as CardBusyError,
        ConfigurationError as ConfigurationError,
        ConnectError as ConnectError,
        ConnectTimeout as ConnectTimeout,
        CurrencyMismatchError as CurrencyMismatchError,
        FourWSError as FourWSError,
        InvalidAmountError as InvalidAmountError,
        InvalidInputError as InvalidInputError,
        InvalidStateError as InvalidStateError,
        LedgerClosedError as LedgerClosedError,
        LedgerConflict as LedgerConflict,
        LedgerError as LedgerError,
        LedgerLockTimeout as LedgerLockTimeout,
        MalformedResponseError as MalformedResponseError,
        MissingConfigurationError as MissingConfigurationError,
        NotFoundError as NotFoundError,
        NotFoundInLedgerError as NotFoundInLedgerError,
        OrderAllocationError as OrderAllocationError,
        OrderCaptureError as OrderCaptureError,
        PaymentError as PaymentError,
        PaymentRefused as PaymentRefused,
        PermissionDeniedError as PermissionDeniedError,
        RateLimitedError as RateLimitedError,
        ReadTimeout as ReadTimeout,
        RequestTimeout as RequestTimeout,
        SaleAlreadySpentError as SaleAlreadySpentError,
        ServerError as ServerError,
        StaleResolveError as StaleResolveError,
        ThrottledError as ThrottledError,
        TransportError as TransportError,
        UniqueConstraintError as UniqueConstraintError,
    )
    from fourws_pay.hookspecs import (
        hookimpl as hookimpl,
    )
    from fourws_pay.ledger import (
        LedgerStore as LedgerStore,
        SQLiteStore as SQLiteStore,
        open_store as open_store,
    )
    from fourws_pay.logs import (
        AccessLogRedactingFilter as AccessLogRedactingFilter,
        mask_barcode as mask_barcode,
        protect_access_logs as protect_access_logs,
    )
    from fourws_pay.payments import (
        AsyncGiftCardPayments as AsyncGiftCardPayments,
        CallbackResult as CallbackResult,
        CartSnapshot as CartSnapshot,
        Decision as Decision,
        EventKind as EventKind,
        GiftCardPayments as GiftCardPayments,
        IssuedCard as IssuedCard,
        IssuedCardState as IssuedCardState,
        Operation as Operation,
        OperationKind as OperationKind,
        OperationState as OperationState,
        OrderAllocation as OrderAllocation,
        OrderRefund as OrderRefund,
        OrderRefundOutcome as OrderRefundOutcome,
        OrderRefundState as OrderRefundState,
        PaymentEvent as PaymentEvent,
        ReconcileReport as ReconcileReport,
        RefundStrategy as RefundStrategy,
        RefusalReason as RefusalReason,
        Reservation as Reservation,
        ReservationState as ReservationState,
    )
    from fourws_pay.plugins import (
        make_plugin_manager as make_plugin_manager,
    )
    from fourws_pay.settings import (
        RetryPolicy as RetryPolicy,
        Settings as Settings,
    )

__version__ = "0.1.0"

# Public name -> module that defines it. Modules load on first use (PEP 562), so
# ``import fourws_pay`` costs almost nothing and ``from fourws_pay import Client``
# loads only what the client needs.
_EXPORTS: dict[str, str] = {
    "APIError": "fourws_pay.errors",
    "APIFailure": "fourws_pay.errors",
    "APIStatusError": "fourws_pay.errors",
    "AccessLogRedactingFilter": "fourws_pay.logs",
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
    "IssuedCard": "fourws_pay.payments",
    "IssuedCardState": "fourws_pay.payments",
    "LedgerClosedError": "fourws_pay.errors",
    "LedgerConflict": "fourws_pay.errors",
    "LedgerError": "fourws_pay.errors",
    "LedgerLockTimeout": "fourws_pay.errors",
    "LedgerStore": "fourws_pay.ledger",
    "LoginToken": "fourws_pay.api.models",
    "LoyaltyVoucher": "fourws_pay.api.models",
    "MalformedResponseError": "fourws_pay.errors",
    "ManualClock": "fourws_pay.clock",
    "MissingConfigurationError": "fourws_pay.errors",
    "NotFoundError": "fourws_pay.errors",
    "NotFoundInLedgerError": "fourws_pay.errors",
    "Operation": "fourws_pay.payments",
    "OperationKind": "fourws_pay.payments",
    "OperationState": "fourws_pay.payments",
    "OrderAllocation": "fourws_pay.payments",
    "OrderAllocationError": "fourws_pay.errors",
    "OrderCaptureError": "fourws_pay.errors",
    "OrderRefund": "fourws_pay.payments",
    "OrderRefundOutcome": "fourws_pay.payments",
    "OrderRefundState": "fourws_pay.payments",
    "PaymentError": "fourws_pay.errors",
    "PaymentEvent": "fourws_pay.payments",
    "PaymentRefused": "fourws_pay.errors",
    "PermissionDeniedError": "fourws_pay.errors",
    "QueuedOperation": "fourws_pay.api.models",
    "RateLimitedError": "fourws_pay.errors",
    "ReadTimeout": "fourws_pay.errors",
    "ReconcileReport": "fourws_pay.payments",
    "RefundStrategy": "fourws_pay.payments",
    "RefusalReason": "fourws_pay.payments",
    "RequestTimeout": "fourws_pay.errors",
    "Reservation": "fourws_pay.payments",
    "ReservationState": "fourws_pay.payments",
    "RetryPolicy": "fourws_pay.settings",
    "SQLiteStore": "fourws_pay.ledger",
    "SaleAlreadySpentError": "fourws_pay.errors",
    "ServerError": "fourws_pay.errors",
    "Settings": "fourws_pay.settings",
    "Sku": "fourws_pay.api.models",
    "StaleResolveError": "fourws_pay.errors",
    "SystemClock": "fourws_pay.clock",
    "ThrottledError": "fourws_pay.errors",
    "TransportError": "fourws_pay.errors",
    "UniqueConstraintError": "fourws_pay.errors",
    "VoucherStatus": "fourws_pay.api.models",
    "hookimpl": "fourws_pay.hookspecs",
    "make_plugin_manager": "fourws_pay.plugins",
    "mask_barcode": "fourws_pay.logs",
    "open_store": "fourws_pay.ledger",
    "protect_access_logs": "fourws_pay.logs",
}


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fourws_pay' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


# Derived, so a name cannot be exported but missing from ``__all__`` (or the reverse). The map
# is kept sorted by hand, which ``tests/test_exported_members.py`` checks through ``__all__``.
__all__ = list(_EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
