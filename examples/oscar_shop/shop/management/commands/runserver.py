"""``manage.py runserver``, which in the demo mode also serves the demo 4WS sandbox.

Started in ``inner_run``, the process that serves requests (the autoreloader's child, or
the only process with ``--noreload``), so it lives exactly as long as the shop does.

It also warns when it listens on another port than ``SHOP_PUBLIC_URL``'s: the payments'
callback URLs are built from ``SHOP_PUBLIC_URL``, so 4WS (or the demo sandbox) would call
back a port where this shop is not, and every payment would wait for ``reconcile``.
"""

from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.staticfiles.management.commands import runserver

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def callback_port_warning(public_url: str, port: int | str) -> str | None:
    """Why callbacks would miss a server on ``port``, or None.

    Only a loopback ``SHOP_PUBLIC_URL`` is compared: a public name is normally a proxy in
    front of the server, on its own port."""
    parts = urlsplit(public_url)
    if parts.hostname not in LOOPBACK_HOSTS:
        return None
    public_port = parts.port or (443 if parts.scheme == "https" else 80)
    if public_port == int(port):
        return None
    fixed = parts._replace(netloc=f"{parts.hostname}:{port}").geturl()
    return (
        f"WARNING: SHOP_PUBLIC_URL is {public_url}, but this server listens on port {port}: "
        f"4WS's payment callbacks would go to port {public_port}, not here, and payments would "
        f"stay pending. Start it on port {public_port}, or set SHOP_PUBLIC_URL={fixed}"
    )


class Command(runserver.Command):
    def inner_run(self, *args, **options):
        warning = callback_port_warning(settings.SHOP_PUBLIC_URL, self.port)
        if warning:
            self.stderr.write(warning)
        if settings.SHOP_DEMO_SANDBOX:
            from shop import demo_sandbox

            served = demo_sandbox.start()
            self.stdout.write(f"Demo 4WS sandbox on {served.url} (cards: manage.py seed_giftcards)")
        super().inner_run(*args, **options)
