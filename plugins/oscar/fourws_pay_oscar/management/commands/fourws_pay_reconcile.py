"""``manage.py fourws_pay_reconcile``: settle what lost its callback, post captures that
waited for a busy card, expire stale holds.

Run it from cron every few minutes; it is idempotent: a deferred capture is posted at most
once (the provider's capture is idempotent per reservation, and the order records it).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from fourws_pay.errors import CardBusyError, FourWSError, PaymentRefused
from fourws_pay_oscar import provider, recording


class Command(BaseCommand):
    help = (
        "Resolve gift-card operations with an unknown outcome, post captures deferred on a "
        "busy card, and sweep expired holds."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        payments = provider.get_payments()
        report = payments.reconcile()
        posted = waiting = failed = 0
        for order, reservation_id in recording.deferred_captures():
            try:
                operation = payments.capture(reservation_id)
            except CardBusyError:
                waiting += 1
                continue
            except (PaymentRefused, FourWSError) as exc:
                # e.g. the hold expired while the card stayed busy: staff collect otherwise
                reservation = payments.get_reservation(reservation_id)
                recording.record_capture_problem(
                    order,
                    title=recording.CAPTURE_FAILED,
                    amount=reservation.applied_amount,
                    reference=reservation_id,
                    detail=str(exc),
                )
                failed += 1
                continue
            recording.record_capture_requested(order, operation)
            posted += 1
        swept = payments.sweep()
        self.stdout.write(
            f"succeeded={len(report.succeeded)} failed={len(report.failed)} "
            f"manual_review={len(report.manual_review)} "
            f"still_pending={len(report.still_pending)} expired={swept} "
            f"deferred_posted={posted} deferred_waiting={waiting} deferred_failed={failed}"
        )
