"""The ``fourws-pay`` command (typer + rich); the library itself never imports this package.

One module per command group: ``giftcard``, ``vouchers``, ``barcodes``, ``sandbox_cmd``,
``ledger_cmd`` (reservations, reconcile) and ``demo``; ``main`` holds the root app, global
options and the error-to-exit-code mapping (``exitcodes``).
"""
