"""Include with ``path("fourws-pay/", include("fourws_pay_oscar.urls"))``.

The back office's pages are under ``backoffice/`` (staff only; ``fourws_pay_oscar.nav``
puts them in Oscar's dashboard menu). No URL carries a card number: a card's page is
reached through one of its operations' ids, and the look-up is a POST.

The callback base URL is then ``https://<shop>/fourws-pay/callback`` (no trailing slash:
fourws-pay appends ``/<operation id>/<token>``).
"""

from django.urls import path

from fourws_pay_oscar import backoffice_views as backoffice
from fourws_pay_oscar import staff_views, views

app_name = "fourws_pay_oscar"

urlpatterns = [
    path("callback/<str:operation_id>/<str:token>", views.callback, name="callback"),
    path("giftcards/<str:number>/resend", staff_views.resend, name="giftcards-resend"),
    path("giftcards/<str:number>/refund", staff_views.refund, name="giftcards-refund"),
    path(
        "giftcards/<str:number>/cancel/<str:card_id>",
        staff_views.cancel,
        name="giftcard-cancel",
    ),
    path("backoffice/", backoffice.queue, name="backoffice-queue"),
    path("backoffice/operations", backoffice.operations, name="backoffice-operations"),
    path("backoffice/holds", backoffice.holds, name="backoffice-holds"),
    path("backoffice/card", backoffice.find, name="backoffice-find"),
    path("backoffice/card/<str:operation_id>", backoffice.card, name="backoffice-card"),
    path(
        "backoffice/operations/<str:operation_id>/resolve",
        backoffice.resolve,
        name="backoffice-resolve",
    ),
    path("backoffice/report", backoffice.report, name="backoffice-report"),
    path("backoffice/report.csv", backoffice.report_csv, name="backoffice-report-csv"),
]
