"""``manage.py fourws_pay_reconcile``: settle what lost its callback, expire stale holds.

Run it from cron every few minutes; it is idempotent.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from fourws_pay_oscar import provider


class Command(BaseCommand):
    help = "Resolve gift-card operations with an unknown outcome and sweep expired holds."

    def handle(self, *args: Any, **options: Any) -> None:
        payments = provider.get_payments()
        report = payments.reconcile()
        swept = payments.sweep()
        self.stdout.write(
            f"succeeded={len(report.succeeded)} failed={len(report.failed)} "
            f"manual_review={len(report.manual_review)} "
            f"still_pending={len(report.still_pending)} expired={swept}"
        )
