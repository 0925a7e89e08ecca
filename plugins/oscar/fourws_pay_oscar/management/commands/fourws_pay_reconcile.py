"""``manage.py fourws_pay_reconcile``: settle what lost its callback, give queued captures
and refunds their turn, expire stale holds (``GiftCardPayments.reconcile``).

Run it from cron every few minutes; it is idempotent (every move is a compare-and-set).
Orders learn the outcomes through fourws-pay's payment events, as for any callback.
Paid orders of the last 30 days whose gift cards were never asked for (the process died
right after the payment committed) are issued too (``selling.issue_missed_orders``).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from fourws_pay_oscar import provider, selling


class Command(BaseCommand):
    help = (
        "Resolve gift-card operations with an unknown outcome, post queued captures and "
        "refunds whose card is free, and sweep expired holds."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = provider.get_payments().reconcile()
        self.stdout.write(
            f"succeeded={len(report.succeeded)} failed={len(report.failed)} "
            f"manual_review={len(report.manual_review)} "
            f"still_pending={len(report.still_pending)} expired={report.expired_reservations} "
            f"queued_posted={len(report.advanced)} sold_cards={len(report.issuing)} "
            f"giftcard_orders_issued={selling.issue_missed_orders()}"
        )
