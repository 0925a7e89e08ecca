"""``manage.py fourws_pay_refund ORDER_NUMBER [--amount 5.00] [--key CREDIT-NOTE-17]``:
refund to the gift cards (an order refund, newest capture first; the same ``--key`` again
refunds nothing twice)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from oscar.core.loading import get_model

from fourws_pay.errors import FourWSError, TransportError
from fourws_pay_oscar import provider
from fourws_pay_oscar.refunds import refund_gift_card


class Command(BaseCommand):
    help = "Refund part or all of an order's gift-card payment back to the card."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("order_number")
        parser.add_argument("--amount", help="amount to refund (default: all refundable)")
        parser.add_argument("--key", help="names this refund: run again with it, it lands once")

    def handle(self, *args: Any, **options: Any) -> None:
        order_model = get_model("order", "Order")
        try:
            order = order_model.objects.get(number=options["order_number"])
        except order_model.DoesNotExist:
            raise CommandError(f"no order {options['order_number']}") from None
        amount = None
        if options["amount"]:
            try:
                amount = Decimal(options["amount"])
            except InvalidOperation:
                raise CommandError(f"not an amount: {options['amount']!r}") from None
        try:
            operations = refund_gift_card(order, amount, refund_key=options["key"])
        except TransportError as exc:
            url = provider.get_payments().settings.documents_base_url
            raise CommandError(f"{exc} (tried {url}; is it running?)") from None
        except FourWSError as exc:
            raise CommandError(str(exc)) from None
        for op in operations:
            self.stdout.write(f"refund {op.id}: {op.amount} {op.currency} ({op.state})")
