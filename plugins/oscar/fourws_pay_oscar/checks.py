"""Django system checks: the 4WS tenant is configured before the shop takes orders.

Without the tenant's settings ``fourws_pay.Settings`` would fall back to a sandbox address on
this machine and empty credentials: the shop would start, show the gift-card field and fail
at the first card with 4WS's "Access Denied". ``manage.py check``, ``migrate`` and
``runserver`` stop instead, naming the ``FOURWS_*`` variables to set (the provider itself is
built lazily, on the first payment, and would refuse only then). Sandbox mode
(``FOURWS_SANDBOX=1``, or ``FOURWS_PAY["SETTINGS"] = {"sandbox": True}``) needs nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error

from fourws_pay.errors import ConfigurationError
from fourws_pay.settings import Settings
from fourws_pay_oscar import conf

MISSING = "fourws_pay_oscar.E001"
INVALID = "fourws_pay_oscar.E002"


def tenant_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E001 when the 4WS tenant is not configured (not in sandbox mode); E002 for a
    setting 4WS settings refuse (the message names it, never a secret's value)."""
    overrides = dict(conf.get("SETTINGS") or {})
    try:
        missing = Settings.missing_from_env(**overrides)
    except ConfigurationError as exc:
        return [Error(str(exc), obj="FOURWS_PAY", id=INVALID)]
    if not missing:
        return []
    keys = ", ".join(repr(name.removeprefix("FOURWS_").lower()) for name in missing)
    return [
        Error(
            f"4WS settings missing: {', '.join(missing)}",
            hint=(
                f"set these environment variables, or FOURWS_PAY['SETTINGS'] keys {keys}; "
                "for a local sandbox (`fourws-pay sandbox serve`) set FOURWS_SANDBOX=1 or "
                "FOURWS_PAY['SETTINGS'] = {'sandbox': True}"
            ),
            obj="FOURWS_PAY",
            id=MISSING,
        )
    ]
