"""The "Gift cards" entry of Oscar's dashboard navigation; safe to import from settings.

Oscar's default access check only knows its own dashboard apps' URLs, so the entry brings
its own (``may_view``): the same test every back-office view makes (staff, and the
``fourws_pay_oscar.view_backoffice`` permission). In settings::

    from oscar.defaults import OSCAR_DASHBOARD_NAVIGATION
    from fourws_pay_oscar.nav import backoffice_navigation

    OSCAR_DASHBOARD_NAVIGATION = [*OSCAR_DASHBOARD_NAVIGATION, backoffice_navigation()]

Nothing here imports a Django model (settings are read before the apps are loaded).
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

VIEW = "fourws_pay_oscar.view_backoffice"
RESOLVE = "fourws_pay_oscar.resolve_backoffice"
REVEAL = "fourws_pay_oscar.reveal_giftcard_number"


def may_view(user: Any, *_args: object) -> bool:
    """Staff with ``fourws_pay_oscar.view_backoffice`` (superusers have every permission).

    Also Oscar's ``access_fn`` signature: ``(user, url_name, url_args, url_kwargs)``."""
    return bool(
        getattr(user, "is_authenticated", False)
        and getattr(user, "is_active", False)
        and getattr(user, "is_staff", False)
        and user.has_perm(VIEW)
    )


def backoffice_navigation(label: Any = None) -> dict[str, Any]:
    """A top-level dashboard menu with the back office's pages."""

    def item(text: Any, url_name: str) -> dict[str, Any]:
        return {"label": text, "url_name": f"fourws_pay_oscar:{url_name}", "access_fn": may_view}

    return {
        "label": label or _("Gift cards"),
        "icon": "fas fa-gift",
        "access_fn": may_view,
        "children": [
            item(_("Review queue"), "backoffice-queue"),
            item(_("Operations"), "backoffice-operations"),
            item(_("Active holds"), "backoffice-holds"),
            item(_("Find a card"), "backoffice-find"),
            item(_("Daily report"), "backoffice-report"),
        ],
    }
