"""``manage.py runserver``, which in the demo mode also serves the demo 4WS sandbox.

Started in ``inner_run``, the process that serves requests (the autoreloader's child, or
the only process with ``--noreload``), so it lives exactly as long as the shop does.
"""

from django.conf import settings
from django.contrib.staticfiles.management.commands import runserver


class Command(runserver.Command):
    def inner_run(self, *args, **options):
        if settings.SHOP_DEMO_SANDBOX:
            from shop import demo_sandbox

            served = demo_sandbox.start()
            self.stdout.write(f"Demo 4WS sandbox on {served.url} (cards: manage.py seed_giftcards)")
        super().inner_run(*args, **options)
