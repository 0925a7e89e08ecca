"""The "Gift cards" section of Oscar's dashboard: thin Django views over ``BackOffice``.

Everything staff see and do is ``fourws_pay.backoffice.BackOffice`` (look-up, lists,
resolve with its stale-page guard, the daily report); these views only check who asks,
render, and turn typed errors into messages. They follow the rules of the standalone
console (``fourws_pay.backoffice.web``), with Django's machinery in place of its own:

- **who**: every view wants an active staff user with ``fourws_pay_oscar.view_backoffice``
  (``nav.may_view``); anonymous users are sent to the login page, anyone else gets 403.
  Resolving also needs ``fourws_pay_oscar.resolve_backoffice``; showing a card's whole
  number ``fourws_pay_oscar.reveal_giftcard_number``. The actor written on a resolve is
  the Django user's username.
- **no card number in a URL** (URLs land in access logs and browser history): the look-up is
  a POST; pages link to a card through one of its operations' ids; the operations filter
  takes at most ``SUFFIX_MAX`` last digits. Lists show masked codes. "Show the whole
  number" is a POST, and who revealed which card is logged (masked).
- **forms**: Django's CSRF protection; the resolve form carries the state its page showed,
  so a page drawn before a late 4WS callback (or before another operator) changes nothing.
- operations and holds are rendered field by field (templates name each field): never a
  callback token hash, never the tenant's credentials.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from fourws_pay.backoffice import REVIEW_STATES, BackOffice, CardLookup, StaleResolveError
from fourws_pay.errors import FourWSError
from fourws_pay.logs import get_logger, mask_barcode
from fourws_pay.payments.models import Operation, OperationKind, OperationState
from fourws_pay_oscar import nav, provider
from fourws_pay_oscar.forms import MAX_CODE_LENGTH

log = get_logger(component="oscar.backoffice")

SUFFIX_MAX = 6  # last digits the operations filter takes: never enough to be a card number
View = Callable[..., HttpResponse]


def _office() -> BackOffice:
    return BackOffice(provider.get_payments())


def _staff(*, resolve: bool = False) -> Callable[[View], View]:
    """Anonymous: to the login page. Not staff, or without the permission: 403."""

    def wrap(view: View) -> View:
        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not nav.may_view(user) or (resolve and not user.has_perm(nav.RESOLVE)):
                return HttpResponseForbidden(_("Staff with the back office permission only."))
            try:
                return view(request, *args, **kwargs)
            except FourWSError as exc:  # a typed error: shown, never a traceback
                messages.error(request, str(exc))
                return _render(request, "error.html", {}, status=400)

        return never_cache(guarded)

    return wrap


def _render(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    user = request.user
    context = {
        "can_resolve": user.has_perm(nav.RESOLVE),
        "can_reveal": user.has_perm(nav.REVEAL),
        "lookup_form": LookupForm(),
        **context,
    }
    response = render(request, f"fourws_pay_oscar/backoffice/{template}", context, status=status)
    response["X-Content-Type-Options"] = "nosniff"
    return response


# -- forms ------------------------------------------------------------------------------------


class LookupForm(forms.Form):
    barcode = forms.CharField(
        label=gettext_lazy("Card number"),
        max_length=MAX_CODE_LENGTH,
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "card number"}),
    )


class ResolveForm(forms.Form):
    """What 4WS says about an operation in review, and why staff believe it."""

    verdict = forms.ChoiceField(
        label=gettext_lazy("4WS says"),
        choices=[
            ("applied", gettext_lazy("applied")),
            ("not_applied", gettext_lazy("not applied")),
        ],
    )
    note = forms.CharField(
        label=gettext_lazy("Note"),
        max_length=500,
        widget=forms.TextInput(attrs={"placeholder": "what 4WS confirmed"}),
    )
    seen_state = forms.ChoiceField(
        choices=[(s.value, s.value) for s in OperationState], widget=forms.HiddenInput
    )

    def clean_note(self) -> str:
        note = str(self.cleaned_data["note"]).strip()
        if not note:
            raise forms.ValidationError(_("Say why: what did 4WS confirm?"))
        return note


class OperationFilterForm(forms.Form):
    state = forms.ChoiceField(
        required=False,
        choices=[("", gettext_lazy("any state"))]
        + [
            (s.value, s.value)
            for s in (*REVIEW_STATES, *(s for s in OperationState if s not in REVIEW_STATES))
        ],
    )
    kind = forms.ChoiceField(
        required=False,
        choices=[("", gettext_lazy("any kind"))] + [(k.value, k.value) for k in OperationKind],
    )
    order = forms.CharField(required=False, max_length=128, label=gettext_lazy("Order"))
    card = forms.RegexField(
        required=False,
        regex=rf"^\w{{1,{SUFFIX_MAX}}}$",
        max_length=SUFFIX_MAX,
        label=gettext_lazy("Last digits"),
        error_messages={"invalid": gettext_lazy("Up to %d last digits.") % SUFFIX_MAX},
    )


def _resolve_form(op: Operation) -> ResolveForm:
    return ResolveForm(initial={"seen_state": op.state.value}, auto_id=False)


def _rows(ops: list[Operation]) -> list[dict[str, Any]]:
    """What a row shows of an operation, field by field (never a token hash)."""
    return [
        {
            "op": op,
            "form": _resolve_form(op) if op.state is OperationState.MANUAL_REVIEW else None,
        }
        for op in ops
    ]


# -- pages ------------------------------------------------------------------------------------


@require_GET
@_staff()
def queue(request: HttpRequest) -> HttpResponse:
    rows = _rows(_office().review_queue())
    return _render(request, "queue.html", {"rows": rows, "page": "queue"})


@require_GET
@_staff()
def operations(request: HttpRequest) -> HttpResponse:
    form = OperationFilterForm(request.GET or None)
    ops: list[Operation] = []
    if form.is_bound and not form.is_valid():
        messages.error(request, _("Check the filters: nothing listed."))
    else:
        data = form.cleaned_data if form.is_bound else {}
        state = data.get("state") or None
        ops = _office().operations(
            [state] if state else None,
            kind=data.get("kind") or None,
            order_ref=data.get("order") or None,
            card_suffix=data.get("card") or None,
        )
    return _render(
        request, "operations.html", {"rows": _rows(ops), "filters": form, "page": "operations"}
    )


@require_GET
@_staff()
def holds(request: HttpRequest) -> HttpResponse:
    return _render(request, "holds.html", {"holds": _office().active_holds(), "page": "holds"})


@require_http_methods(["GET", "POST"])
@_staff()
def find(request: HttpRequest) -> HttpResponse:
    """The look-up form (GET) and its answer (POST: the number stays out of the URL)."""
    if request.method == "GET":
        return _render(request, "find.html", {"page": "find"})
    form = LookupForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Type a card number."))
        return _render(request, "find.html", {"page": "find", "lookup_form": form}, status=400)
    view = _office().find_card(form.cleaned_data["barcode"])
    return _card_page(request, view, whole=False)


@require_http_methods(["GET", "POST"])
@_staff()
def card(request: HttpRequest, operation_id: str) -> HttpResponse:
    """A card's page, reached through one of its operations; POST ``reveal=1`` shows the
    whole number to staff allowed to (logged: who, and which card, masked)."""
    office = _office()
    op = office.payments.store.get_operation(operation_id)
    if op is None:
        messages.error(request, _("No such operation."))
        return redirect("fourws_pay_oscar:backoffice-queue")
    whole = False
    if request.method == "POST" and request.POST.get("reveal") == "1":
        if not request.user.has_perm(nav.REVEAL):
            return HttpResponseForbidden(_("Not allowed to show whole card numbers."))
        whole = True
        log.warning(
            "fourws_pay_oscar.backoffice.revealed",
            actor=request.user.get_username(),
            card=mask_barcode(op.barcode),
            operation=op.id,
        )
    return _card_page(request, office.find_card(op.barcode), whole=whole)


def _card_page(request: HttpRequest, view: CardLookup, *, whole: bool) -> HttpResponse:
    live = view.live
    context = {
        "page": "find",
        "view": view,
        "shown": view.barcode if whole else view.masked,
        "whole": whole,
        "live": live,
        "rows": _rows(list(view.operations)),
        "holds": list(view.holds),
        "sold": list(view.sold),
        "reveal_via": view.operations[0].id if view.operations else None,
    }
    response = _render(request, "card.html", context)
    return response


@require_POST
@_staff(resolve=True)
def resolve(request: HttpRequest, operation_id: str) -> HttpResponse:
    form = ResolveForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(str(e) for errs in form.errors.values() for e in errs)
        messages.error(request, _("Nothing was changed: %s") % errors)
        return redirect("fourws_pay_oscar:backoffice-queue")
    data = form.cleaned_data
    try:
        done = _office().resolve(
            operation_id,
            applied=data["verdict"] == "applied",
            note=data["note"],
            actor=request.user.get_username(),
            seen_state=data["seen_state"],
        )
    except StaleResolveError as exc:
        messages.warning(request, _("Not changed: %s") % exc)
        return redirect("fourws_pay_oscar:backoffice-queue")
    messages.success(
        request,
        _("Operation %(id)s on card %(card)s is %(state)s now.")
        % {"id": done.id, "card": done.masked_barcode, "state": done.state.value},
    )
    return redirect("fourws_pay_oscar:backoffice-queue")


def _day(request: HttpRequest) -> date:
    value = request.GET.get("day")
    if not value:
        return timezone.localdate()
    try:
        return date.fromisoformat(value)
    except ValueError:
        from fourws_pay.errors import InvalidInputError

        raise InvalidInputError(_("Not a day (YYYY-MM-DD): %r") % value[:20]) from None


@require_GET
@_staff()
def report(request: HttpRequest) -> HttpResponse:
    """What settled on a day, midnight to midnight in the shop's time zone (``TIME_ZONE``)."""
    day = _day(request)
    zone = timezone.get_current_timezone()
    daily = _office().daily_report(day, zone)
    return _render(
        request, "report.html", {"report": daily, "day": day, "zone": zone, "page": "report"}
    )


@require_GET
@_staff()
def report_csv(request: HttpRequest) -> HttpResponse:
    day = _day(request)
    office = _office()
    text = office.report_csv(office.daily_report(day, timezone.get_current_timezone()))
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="fourws-pay-{day.isoformat()}.csv"'
    return response
