"""The back office as an ASGI app (Starlette, extra ``[console]``): mount it in any host.

Why an ASGI app and not Django views: three hosts need it (Oscar, the Saleor App, a shop
with neither), and only one of them is Django; the Saleor App is already Starlette. The Oscar
integration has its own dashboard section over the same ``BackOffice`` service (Oscar's
navigation, Django's staff permissions), so nothing of the logic is written twice.

Security, each point tested:

- **Authentication is the host's**: ``console_app(backoffice, authenticate=...)`` calls
  ``authenticate(request)`` on every request, before anything else; it returns a ``Staff``
  or None (401, nothing shown). ``basic_auth({...})`` is the standalone credential
  (``FOURWS_CONSOLE_USERS``, ``app_from_env``); the Saleor App passes one that checks a
  Saleor staff token.
- **No card number in a URL**: look-up is a POST (URLs land in access logs and browser
  history); pages link to a card through one of its operations' ids. Lists show masked
  codes; the whole code is shown only on a card's page, to staff allowed to reveal it, after
  pressing "show the whole number" (a POST), and who revealed which card is logged (masked).
- **Forms carry a CSRF token** (an HMAC of the staff member's name under the app's secret) and
  the resolve form the state the page showed, so a stale page cannot turn a settled
  operation around (``StaleResolveError``, shown as such).
- No page shows credentials, tokens, callback secrets or hashes: operations are rendered
  field by field, never by ``repr``.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import inspect
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from fourws_pay.backoffice.service import REVIEW_STATES, BackOffice, CardLookup
from fourws_pay.errors import ConfigurationError, FourWSError, StaleResolveError
from fourws_pay.logs import get_logger, mask_barcode
from fourws_pay.money import format_amount
from fourws_pay.payments.models import Operation, OperationState, Reservation

log = get_logger(component="backoffice.web")


@dataclass(frozen=True)
class Staff:
    """Who is using the console, as the host authenticated them."""

    name: str
    can_resolve: bool = True
    can_reveal: bool = True


Authenticate = Callable[[Request], "Awaitable[Staff | None] | Staff | None"]


def basic_auth(users: Mapping[str, str], *, realm: str = "fourws-pay back office") -> Authenticate:
    """HTTP Basic against ``{name: password}`` (compared in constant time)."""
    import base64

    if not users:
        raise ConfigurationError("the console needs at least one user")
    known = {name: password.encode() for name, password in users.items()}

    def authenticate(request: Request) -> Staff | None:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None
        try:
            name, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        expected = known.get(name)
        ok = hmac.compare_digest(password.encode(), expected or secrets.token_bytes(16))
        return Staff(name=name) if expected is not None and ok else None

    authenticate.realm = realm  # type: ignore[attr-defined]
    return authenticate


# -- rendering --------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
header{background:#1d3557;color:#fff;padding:.6em 1em}
header a{color:#fff;margin-right:1.2em;text-decoration:none}
main{padding:1em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;font-size:.92em}
.msg{padding:.5em;background:#fff3cd}.err{padding:.5em;background:#f8d7da}
.ok{padding:.5em;background:#d1e7dd}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _money(amount: Decimal | None, currency: str | None = "") -> str:
    """At least two decimals (4WS may answer ``100`` for a card of two): ``100.00 EUR``."""
    if amount is None:
        return ""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        amount = amount.quantize(Decimal("0.01"))
    return f"{format_amount(amount)} {currency or ''}".strip()


def _time(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class _Pages:
    def __init__(self, office: BackOffice, authenticate: Authenticate, secret: bytes) -> None:
        self.office = office
        self.authenticate = authenticate
        self.secret = secret
        # The asyncio provider is awaited; the blocking one runs on Starlette's threads.
        self.awaited = inspect.iscoroutinefunction(getattr(office.payments, "resolve", None))

    # -- plumbing ------------------------------------------------------------------------

    async def staff(self, request: Request) -> Staff | None:
        found = self.authenticate(request)
        if inspect.isawaitable(found):
            found = await found
        return found if isinstance(found, Staff) else None

    def csrf(self, staff: Staff) -> str:
        return hmac.new(self.secret, staff.name.encode(), hashlib.sha256).hexdigest()

    def page(self, request: Request, staff: Staff, title: str, body: str) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        nav = "".join(
            f'<a href="{base}{path}">{label}</a>'
            for path, label in (
                ("/", "Review queue"),
                ("/operations", "Operations"),
                ("/holds", "Holds"),
                ("/report", "Daily report"),
            )
        )
        flash = request.query_params.get("msg")
        note = f'<p class="msg">{_e(flash)}</p>' if flash else ""
        search = (
            f'<form method="post" action="{base}/card"><input type="hidden" name="csrf"'
            f' value="{self.csrf(staff)}"><input name="barcode" placeholder="card number"'
            ' autocomplete="off" required> <button>Find card</button></form>'
        )
        return HTMLResponse(
            f"<!doctype html><html><head><meta charset=utf-8><title>{_e(title)} · fourws-pay"
            f"</title><style>{_STYLE}</style></head><body><header>{nav}"
            f'<span style="float:right">{_e(staff.name)}</span></header><main>'
            f"<h1>{_e(title)}</h1>{note}{search}{body}</main></body></html>",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    async def form(self, request: Request, staff: Staff) -> dict[str, str] | None:
        raw = (await request.body()).decode("utf-8", "replace")
        fields = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        if not hmac.compare_digest(fields.get("csrf", ""), self.csrf(staff)):
            return None
        return fields

    def operation_rows(self, request: Request, staff: Staff, ops: list[Operation]) -> str:
        base = request.scope.get("root_path", "")
        if not ops:
            return "<p>None.</p>"
        rows = []
        for op in ops:
            action = ""
            if op.state is OperationState.MANUAL_REVIEW and staff.can_resolve:
                action = self.resolve_form(request, staff, op)
            rows.append(
                f"<tr><td>{_e(op.id)}</td><td>{_e(op.kind.value)}</td>"
                f'<td><a href="{base}/card/{quote(op.id)}">{_e(op.masked_barcode)}</a></td>'
                f"<td>{_e(_money(op.amount, op.currency))}</td><td>{_e(op.state.value)}</td>"
                f"<td>{_e(_money(op.balance_before, op.currency))}</td>"
                f"<td>{_e(_time(op.updated_at))}</td><td>{_e(op.message)}</td>"
                f"<td>{action}</td></tr>"
            )
        return (
            "<table><tr><th>operation</th><th>kind</th><th>card</th><th>amount</th>"
            "<th>state</th><th>balance before (evidence)</th><th>updated</th><th>message</th>"
            "<th></th></tr>" + "".join(rows) + "</table>"
        )

    def resolve_form(self, request: Request, staff: Staff, op: Operation) -> str:
        base = request.scope.get("root_path", "")
        return (
            f'<form method="post" action="{base}/operations/{quote(op.id)}/resolve">'
            f'<input type="hidden" name="csrf" value="{self.csrf(staff)}">'
            f'<input type="hidden" name="seen_state" value="{_e(op.state.value)}">'
            '<select name="verdict"><option value="">4WS says…</option>'
            '<option value="applied">applied</option>'
            '<option value="not_applied">not applied</option></select> '
            '<input name="note" placeholder="what 4WS confirmed" required> '
            "<button>Resolve</button></form>"
        )

    def hold_rows(self, holds: list[Reservation]) -> str:
        if not holds:
            return "<p>None.</p>"
        return (
            "<table><tr><th>hold</th><th>order</th><th>card</th><th>amount</th><th>state</th>"
            "<th>expires</th></tr>"
            + "".join(
                f"<tr><td>{_e(r.id)}</td><td>{_e(r.order_ref)}</td><td>{_e(r.masked_barcode)}"
                f"</td><td>{_e(_money(r.amount, r.currency))}</td><td>{_e(r.state.value)}</td>"
                f"<td>{_e(_time(r.expires_at))}</td></tr>"
                for r in holds
            )
            + "</table>"
        )

    def card_body(self, request: Request, staff: Staff, view: CardLookup, whole: bool) -> str:
        base = request.scope.get("root_path", "")
        shown = view.barcode if whole else view.masked
        live = view.live
        if live is None:
            facts = f'<p class="err">4WS did not answer: {_e(view.live_error)}</p>'
        else:
            status = "active" if live.flg_active else "not active"
            if view.expired:
                status += ", EXPIRED"
            facts = (
                "<table>"
                f"<tr><th>4WS balance</th><td>{_e(_money(live.amount, live.currency))}</td></tr>"
                f"<tr><th>status</th><td>{_e(status)}</td></tr>"
                f"<tr><th>valid</th><td>{_e(_time(live.activation_date))} to"
                f" {_e(_time(live.expiration_date))}</td></tr>"
                f"<tr><th>partial use</th><td>{'yes' if live.flg_partially_usage else 'no'}</td>"
                f"</tr><tr><th>network use</th><td>{'yes' if live.flg_network_usage else 'no'}"
                f"</td></tr><tr><th>held by the ledger</th>"
                f"<td>{_e(_money(view.held, live.currency))}</td></tr>"
                "</table>"
            )
        reveal = ""
        if not whole and staff.can_reveal and view.operations:
            reveal = (
                f'<form method="post" action="{base}/card/{quote(view.operations[0].id)}">'
                f'<input type="hidden" name="csrf" value="{self.csrf(staff)}">'
                '<input type="hidden" name="reveal" value="1">'
                "<button>Show the whole number</button></form>"
            )
        return (
            f"<p>Card <b>{_e(shown)}</b></p>{reveal}{facts}"
            f"<h2>History</h2>{self.operation_rows(request, staff, list(view.operations))}"
            f"<h2>Holds</h2>{self.hold_rows(list(view.holds))}"
        )

    def back(self, request: Request, path: str, message: str) -> RedirectResponse:
        base = request.scope.get("root_path", "")
        return RedirectResponse(f"{base}{path}?msg={quote(message)}", status_code=303)

    # -- endpoints -----------------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        staff = await self.staff(request)
        if staff is None:
            realm = getattr(self.authenticate, "realm", None)
            headers = {"WWW-Authenticate": f'Basic realm="{realm}"'} if realm else {}
            return PlainTextResponse("authentication required", 401, headers=headers)
        handler = request.scope["endpoint_handler"]
        try:
            response: Response = await handler(request, staff)
        except FourWSError as exc:  # a typed error: shown, never a traceback
            response = self.page(request, staff, "Refused", f'<p class="err">{_e(exc)}</p>')
            response.status_code = 400
        return response

    async def home(self, request: Request, staff: Staff) -> Response:
        queue = self.office.review_queue()
        return self.page(
            request,
            staff,
            "Review queue",
            "<p>Operations whose outcome 4WS has not confirmed. Ask 4WS, then record what it"
            " says; <i>unknown</i> ones are still being reconciled.</p>"
            + self.operation_rows(request, staff, queue),
        )

    async def operations(self, request: Request, staff: Staff) -> Response:
        params = request.query_params
        state = params.get("state") or None
        ops = self.office.operations(
            [state] if state else None,
            kind=params.get("kind") or None,
            order_ref=params.get("order") or None,
            card_suffix=params.get("card") or None,
        )
        options = "".join(
            f'<option value="{s.value}"{" selected" if s.value == state else ""}>{s.value}</option>'
            for s in (*REVIEW_STATES, *(s for s in OperationState if s not in REVIEW_STATES))
        )
        filters = (
            f'<form method="get"><select name="state"><option value="">any state</option>'
            f'{options}</select> <input name="order" placeholder="order" value='
            f'"{_e(params.get("order", ""))}"> <input name="card" placeholder="last digits"'
            f' value="{_e(params.get("card", ""))}" size=6> <button>Filter</button></form>'
        )
        return self.page(
            request, staff, "Operations", filters + self.operation_rows(request, staff, ops)
        )

    async def holds(self, request: Request, staff: Staff) -> Response:
        return self.page(request, staff, "Active holds", self.hold_rows(self.office.active_holds()))

    async def find(self, request: Request, staff: Staff) -> Response:
        fields = await self.form(request, staff)
        if fields is None:
            return PlainTextResponse("bad form token", 403)
        view = await self._find_card(fields.get("barcode", ""))
        return self.page(request, staff, "Card", self.card_body(request, staff, view, False))

    async def card(self, request: Request, staff: Staff) -> Response:
        op = self.office.payments.store.get_operation(request.path_params["operation_id"])
        if op is None:
            return self.back(request, "/", "no such operation")
        whole = False
        if request.method == "POST":
            fields = await self.form(request, staff)
            if fields is None:
                return PlainTextResponse("bad form token", 403)
            whole = fields.get("reveal") == "1" and staff.can_reveal
            if whole:
                log.warning(
                    "fourws_pay.backoffice.revealed",
                    actor=staff.name,
                    card=mask_barcode(op.barcode),
                )
        view = await self._find_card(op.barcode)
        return self.page(request, staff, "Card", self.card_body(request, staff, view, whole))

    async def _find_card(self, barcode: str) -> CardLookup:
        if self.awaited:
            return await self.office.afind_card(barcode)
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self.office.find_card, barcode)

    async def resolve(self, request: Request, staff: Staff) -> Response:
        if not staff.can_resolve:
            return PlainTextResponse("not allowed to resolve", 403)
        fields = await self.form(request, staff)
        if fields is None:
            return PlainTextResponse("bad form token", 403)
        verdict = fields.get("verdict", "")
        if verdict not in ("applied", "not_applied"):
            return self.back(request, "/", "choose what 4WS says: applied or not applied")
        operation_id = request.path_params["operation_id"]
        kwargs: dict[str, Any] = {
            "applied": verdict == "applied",
            "note": fields.get("note", ""),
            "actor": staff.name,
            "seen_state": fields.get("seen_state") or OperationState.MANUAL_REVIEW,
        }
        try:
            if self.awaited:
                done = await self.office.aresolve(operation_id, **kwargs)
            else:
                from starlette.concurrency import run_in_threadpool

                done = await run_in_threadpool(lambda: self.office.resolve(operation_id, **kwargs))
        except StaleResolveError as exc:
            return self.back(request, "/", f"not changed: {exc}")
        return self.back(request, "/", f"{done.id} is {done.state.value} now")

    async def report(self, request: Request, staff: Staff) -> Response:
        day = _day(request.query_params.get("day"))
        report = self.office.daily_report(day)
        base = request.scope.get("root_path", "")
        rows = "".join(
            f"<tr><td>{_e(r.currency)}</td><td>{_e(_money(r.captured))}</td>"
            f"<td>{_e(_money(r.refunded))}</td><td>{_e(_money(r.net))}</td>"
            f"<td>{_e(_money(r.issued))}</td><td>{r.captures}</td><td>{r.refunds}</td>"
            f"<td>{r.activations}</td></tr>"
            for r in report.rows
        )
        body = (
            f'<form method="get"><input type="date" name="day" value="{day.isoformat()}">'
            f' <button>Show</button> <a href="{base}/report.csv?day={day.isoformat()}">'
            "Download CSV</a></form>"
            "<table><tr><th>currency</th><th>captured</th><th>refunded</th><th>net</th>"
            "<th>loaded on sold cards</th><th>captures</th><th>refunds</th><th>activations</th>"
            f"</tr>{rows}</table>"
        )
        return self.page(request, staff, f"Daily report {day.isoformat()} (UTC)", body)

    async def report_csv(self, request: Request, staff: Staff) -> Response:
        day = _day(request.query_params.get("day"))
        text = self.office.report_csv(self.office.daily_report(day))
        return Response(
            text,
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="fourws-pay-{day}.csv"'},
        )


def _day(value: str | None) -> date:
    if not value:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        from fourws_pay.errors import InvalidInputError

        raise InvalidInputError(f"not a day (YYYY-MM-DD): {value[:20]!r}") from None


def console_app(
    backoffice: BackOffice, *, authenticate: Authenticate, secret: bytes | None = None
) -> Starlette:
    """The console; mount it anywhere (``Mount("/backoffice", app)``): links follow
    ``root_path``. ``secret`` signs form tokens; give every worker the same one."""
    pages = _Pages(backoffice, authenticate, secret or secrets.token_bytes(32))

    def route(path: str, handler: Any, methods: list[str]) -> Route:
        async def endpoint(request: Request) -> Response:
            request.scope["endpoint_handler"] = handler
            return await pages.dispatch(request)

        return Route(path, endpoint, methods=methods)

    return Starlette(
        routes=[
            route("/", pages.home, ["GET"]),
            route("/operations", pages.operations, ["GET"]),
            route("/holds", pages.holds, ["GET"]),
            route("/card", pages.find, ["POST"]),
            route("/card/{operation_id}", pages.card, ["GET", "POST"]),
            route("/operations/{operation_id}/resolve", pages.resolve, ["POST"]),
            route("/report", pages.report, ["GET"]),
            route("/report.csv", pages.report_csv, ["GET"]),
        ]
    )


def app_from_env() -> Starlette:
    """``uvicorn --factory fourws_pay.backoffice.web:app_from_env``: the standalone console.

    ``FOURWS_CONSOLE_USERS`` = ``name:password[,name:password]`` (required: the console is
    never served without a credential), ``FOURWS_CONSOLE_SECRET`` signs form tokens (shared by
    workers); the 4WS tenant and the ledger come from ``FOURWS_*`` (``Settings.from_env``)."""
    from fourws_pay.payments import GiftCardPayments
    from fourws_pay.settings import Settings

    users: dict[str, str] = {}
    for entry in os.environ.get("FOURWS_CONSOLE_USERS", "").split(","):
        name, sep, password = entry.strip().partition(":")
        if sep and name and password:
            users[name] = password
    if not users:
        raise ConfigurationError(
            "FOURWS_CONSOLE_USERS is required (name:password[,name:password]): the back office"
            " is never served without a credential"
        )
    secret = os.environ.get("FOURWS_CONSOLE_SECRET", "").encode() or None
    payments = GiftCardPayments(settings=Settings.from_env())
    return console_app(BackOffice(payments), authenticate=basic_auth(users), secret=secret)
