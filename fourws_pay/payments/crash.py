"""Named crash points for the crash-safety tests (invariant 14).

When ``FOURWS_PAY_CRASH_AT`` names a point, the process kills itself with SIGKILL there,
exactly like ``kill -9``: no ``finally`` blocks, no commit. Production never sets it; the
cost when unset is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

CRASH_POINTS = (
    "reserve.before_commit",
    "capture.after_prepare",
    "capture.after_sending",
    "capture.after_post",
    "callback.before_commit",
    "refund.after_prepare",
    "refund.after_sending",
    "refund.after_post",
    "generate.after_sending",
    "generate.after_post",
    "activate.after_prepare",
    "activate.after_sending",
    "activate.after_post",
    "order_refund.after_plan",
    "order_refund.after_part_prepared",
    "reserve_order.between_holds",
)


def crash_point(name: str) -> None:
    if os.environ.get("FOURWS_PAY_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
