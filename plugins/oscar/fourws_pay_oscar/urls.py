"""Include with ``path("fourws-pay/", include("fourws_pay_oscar.urls"))``.

The callback base URL is then ``https://<shop>/fourws-pay/callback`` (no trailing slash:
fourws-pay appends ``/<operation id>/<token>``).
"""

from django.urls import path

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
]
