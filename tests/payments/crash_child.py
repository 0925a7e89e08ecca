"""A shop process that is killed at a named step (run by test_crash_safety.py).

Usage: ``python -m tests.payments.crash_child '<json config>'`` with ``FOURWS_PAY_CRASH_AT``
naming the step. ``FOURWS_PAY_TEST_BREAK=write_ahead`` removes the write-ahead protection so
the twin test can show the crash test notices.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace

from fourws_pay import (
    CardBusyError,
    GiftCardPayments,
    Settings,
    SQLiteStore,
    make_plugin_manager,
)
from fourws_pay.payments import core
from fourws_pay.payments.models import OperationState


def main() -> None:
    config = json.loads(sys.argv[1])
    if os.environ.get("FOURWS_PAY_TEST_BREAK") == "write_ahead":
        core.PaymentsCore._mark_sending = (  # type: ignore[method-assign]
            lambda self, tx, claim, card, now: replace(claim, state=OperationState.SENDING)
        )
    payments = GiftCardPayments(
        settings=Settings(**config["settings"]),
        store=SQLiteStore(config["ledger"]),
        plugin_manager=make_plugin_manager(load_entrypoints=False),
    )
    step = config["step"]
    if step == "capture":
        reservation = payments.reserve(
            config["barcode"], amount="30.00", currency="EUR", order_ref="CRASH-1"
        )
        payments.capture(reservation.id)
    elif step == "capture_when_idle":
        # A second capture on the card while the first may still be settling: retried
        # while the card is busy, as a shop would (bounded), then captured.
        reservation = payments.reserve(
            config["barcode"], amount="30.00", currency="EUR", order_ref="CRASH-2"
        )
        for _ in range(400):
            try:
                payments.capture(reservation.id)
                break
            except CardBusyError:
                time.sleep(0.01)
        else:
            raise SystemExit("the card stayed busy")
    elif step == "refund":
        payments.refund(config["operation_id"], amount="10.00")
    elif step == "reserve_order":
        payments.reserve_order(
            "CRASH-ORDER", cards=config["cards"], amount="130.00", currency="EUR"
        )
    elif step == "callback":
        payments.handle_callback(config["path"], config["body"].encode())
    elif step == "issue":
        payments.issue_cards(
            config["order_ref"],
            "gift",
            amount="30.00",
            currency="EUR",
            count=2,
            item_code=config["item"],
        )
    print("completed")


if __name__ == "__main__":
    main()
