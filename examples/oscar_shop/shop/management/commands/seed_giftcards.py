"""``manage.py seed_giftcards``: the demo gift cards, wherever the sandbox runs.

- ``FOURWS_PAY_BACKEND=demo`` (default): the sandbox ``runserver`` serves creates these
  cards when it starts (``shop/demo_sandbox.py``); this command lists them.
- ``FOURWS_PAY_BACKEND=http`` with a served sandbox (``fourws-pay sandbox serve``): this
  command creates them there through the sandbox's control API.
"""

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fourws_pay.settings import Settings
from shop.demo_cards import DEMO_CARDS, sandbox_kwargs


class Command(BaseCommand):
    help = "Create (served sandbox) or list (the shop's demo sandbox) the demo gift cards."

    def handle(self, *args, **options):
        if not settings.SHOP_DEMO_SANDBOX:
            base = Settings.from_env().documents_base_url
            try:
                with httpx.Client(base_url=base, timeout=10) as http:
                    for card in DEMO_CARDS:
                        http.post("/_sandbox/cards", json=sandbox_kwargs(card)).raise_for_status()
            except httpx.HTTPError as exc:
                raise CommandError(
                    f"could not reach a served sandbox at {base}: {exc}. "
                    "Start one with `fourws-pay sandbox serve`."
                ) from None
            where = f"created on the sandbox at {base}"
        else:
            where = "created by the demo sandbox when `manage.py runserver` starts"
        self.stdout.write(f"Demo gift cards ({where}):")
        for card in DEMO_CARDS:
            currency = card.get("currency", "EUR")
            self.stdout.write(
                f"  {card['barcode']}  {card['amount']:>7} {currency}  {card['note']}"
            )
