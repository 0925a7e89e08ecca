"""No table: a model only so that Django has somewhere to hang the back office's permissions.

Django's permissions belong to a model's content type. ``BackOfficeAccess`` is unmanaged
(``migrate`` creates no table for it) and has no default add/change/delete/view
permissions, only the three the back office checks (``fourws_pay_oscar.backoffice``):
assign them to staff users or groups in Django's admin or Oscar's dashboard like any other.
"""

from typing import ClassVar

from django.db import models


class BackOfficeAccess(models.Model):
    class Meta:
        managed = False
        default_permissions = ()
        permissions: ClassVar[list[tuple[str, str]]] = [
            ("view_backoffice", "Can see the gift-card back office (cards, queue, report)"),
            ("resolve_backoffice", "Can resolve gift-card operations in review"),
            ("reveal_giftcard_number", "Can show a gift card's whole number"),
        ]
