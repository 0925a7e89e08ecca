"""The demo's 4WS: a sandbox served on loopback by the shop's web server process.

Every process of the shop talks to it over HTTP, as it would talk to 4WS: the web server
that serves it, and ``manage.py shell`` or ``manage.py fourws_pay_refund`` run next to it.
(An in-process simulator per process would give each command its own cards: a refund from
the shell would land on a card the shop never sees.) ``manage.py runserver`` starts it
(``shop/management/commands/runserver.py``); the other commands need the shop running.

It calls the shop back at ``SHOP_PUBLIC_URL`` a moment after each capture or refund,
like 4WS does.
"""

import os
from decimal import Decimal
from typing import Any

from shop.demo_cards import DEMO_CARDS, GIFTCARD_ITEM, sandbox_kwargs

HOST = "127.0.0.1"
PORT = int(os.environ.get("SHOP_SANDBOX_PORT", "8766"))
URL = f"http://{HOST}:{PORT}"

_served: Any = None


def settings_kwargs() -> dict[str, Any]:
    """``fourws_pay.Settings`` keyword arguments for talking to the demo sandbox."""
    from fourws_pay.sandbox.sandbox import sandbox_settings

    return sandbox_settings(URL).model_dump(exclude={"ledger_url", "callback_base_url"})


def start() -> Any:
    """Serve the demo sandbox, with the demo cards, from this process (once)."""
    global _served
    if _served is None:
        from fourws_pay.sandbox.server import start_in_thread

        try:
            served = start_in_thread(host=HOST, port=PORT, seed="empty")
        except (OSError, RuntimeError) as exc:
            raise RuntimeError(
                f"the demo 4WS sandbox could not listen on {URL} ({exc}); is another shop "
                "running? Set SHOP_SANDBOX_PORT to use another port"
            ) from None
        for card in DEMO_CARDS:
            kwargs = sandbox_kwargs(card)
            kwargs["amount"] = Decimal(str(kwargs["amount"]))
            served.sandbox.add_giftcard(**kwargs)
        served.sandbox.add_product(GIFTCARD_ITEM, item_type="FINANCIAL")  # cards the shop sells
        _served = served
    return _served
