"""The staff back office inside the App, at ``/backoffice``: Saleor staff only.

The console is ``fourws_pay.backoffice.web.console_app`` over the App's own ledger
(``gateway.payments``); this module only decides who may use it.

How staff get in. Saleor's Dashboard opens an App page in an iframe and hands it a JWT over
AppBridge (``postMessage``: the page announces itself with ``notifyReady``, the Dashboard
answers ``handshake`` with ``{token}``). Server-rendered pages cannot read that message, so
``/backoffice/login`` is a small page whose script receives the token and POSTs it back to
the App together with ``saleorApiUrl`` (a query parameter the Dashboard adds to the iframe's
URL); outside the Dashboard the same page has a form to paste a token (``tokenCreate``).
The App then asks that Saleor who the token belongs to (``me { email isStaff
userPermissions { code } }``) and lets in only:

- a Saleor that installed the App and is active (the token is never sent anywhere else: a
  login naming another URL is refused before any request);
- a user Saleor answers as staff with ``HANDLE_PAYMENTS`` -- the App's own permission. An
  App's token has no user (``me`` is null), a customer is not staff, and a Dashboard token
  carries only the permissions the user and the App share, so a staff member without
  ``HANDLE_PAYMENTS`` is refused whichever token they bring;
- a token minted for this App, when it was minted for an App at all: Saleor's Dashboard
  tokens name their App in the ``app`` claim, and a token another installed App received
  for the same user must not open this App's console. (The claims are read without
  checking the signature: Saleor has just accepted the token, so they are Saleor's.)

The answer is a session cookie: the staff member's e-mail, the Saleor and an expiry, signed
with HMAC-SHA256 under ``backoffice_secret``; HttpOnly, ``SameSite`` (``strict`` by default),
``Secure`` when the App is served over https, scoped to ``/backoffice``, valid
``backoffice_session_ttl`` seconds (1 h). The e-mail becomes the console's ``Staff.name``, so
a resolve is recorded with it as the actor. Every request re-checks the signature, the expiry
and that the Saleor is still installed and active (``APP_DELETED`` ends every session).
Permission changes in Saleor take effect at the next login, at most one session later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fourws_pay.backoffice import BackOffice
from fourws_pay.backoffice.web import Staff, console_app
from fourws_pay.clock import Clock
from fourws_pay.logs import get_logger
from fourws_pay_saleor.config import AppConfig
from fourws_pay_saleor.store import AppStore

log = get_logger(component="saleor.backoffice")

BACKOFFICE_PATH = "/backoffice"
LOGIN_PATH = "/login"
SESSION_COOKIE = "fourws_backoffice"
REQUIRED_PERMISSION = "HANDLE_PAYMENTS"
ME_QUERY = "query FourWSStaff { me { email isStaff userPermissions { code } } }"
TOKEN_MAX = 8192  # a Saleor JWT is ~1 KB; anything far larger is not one


class Refused(Exception):
    """A login that is not let in: ``status`` for the page, ``reason`` for staff and logs."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class StaffSession:
    email: str
    api_url: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (call only after Saleor accepted the token)."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


class SaleorStaffGate:
    """Login against the installing Saleor, and the signed session that follows it."""

    def __init__(
        self,
        config: AppConfig,
        store: AppStore,
        http: httpx.AsyncClient,
        clock: Clock,
        secret: bytes,
    ) -> None:
        self.config = config
        self.store = store
        self.http = http
        self.clock = clock
        self._session_key = hmac.new(secret, b"fourws-backoffice-session", hashlib.sha256).digest()

    # -- the login -----------------------------------------------------------------------

    async def verify(self, api_url: str, token: str) -> StaffSession:
        """Ask the installing Saleor whose token this is; ``Refused`` unless staff may in."""
        api_url = api_url.strip()
        installation = self.store.get_installation(api_url) if api_url else None
        if installation is None or not installation.active:
            raise Refused(403, "this Saleor has not installed the App (or it is deactivated)")
        if not token or len(token) > TOKEN_MAX:
            raise Refused(403, "no token")
        try:
            response = await self.http.post(
                api_url,
                json={"query": ME_QUERY},
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.config.http_timeout,
            )
        except httpx.HTTPError:
            raise Refused(503, "cannot reach Saleor to check the token; try again") from None
        if response.status_code >= 500:
            raise Refused(503, "Saleor could not check the token now; try again")
        try:
            document = response.json() if response.status_code == 200 else None
        except ValueError:
            document = None
        data = document.get("data") if isinstance(document, dict) else None
        me = data.get("me") if isinstance(data, dict) else None
        if not isinstance(me, dict):
            # An App's token, an expired or forged JWT, a token of another Saleor: Saleor
            # answers ``me: null`` (and errors), or a 4xx.
            raise Refused(403, "Saleor does not know this token as a signed-in user")
        email = me.get("email")
        if not isinstance(email, str) or not email.strip():
            raise Refused(403, "Saleor did not say who this is")
        if me.get("isStaff") is not True:
            raise Refused(403, f"{email} is not a staff member of this Saleor")
        granted = me.get("userPermissions")
        codes = {p.get("code") for p in granted if isinstance(p, dict)} if granted else set()
        if REQUIRED_PERMISSION not in codes:
            raise Refused(403, f"{email} lacks {REQUIRED_PERMISSION} (for this App)")
        app = token_claims(token).get("app")
        if app is not None and app != installation.app_id:
            raise Refused(403, "the token was issued to another App")
        expires = int(self.clock.now().timestamp() + self.config.backoffice_session_ttl)
        return StaffSession(email=email.strip(), api_url=api_url, expires=expires)

    # -- the session cookie --------------------------------------------------------------

    def _mac(self, body: str) -> str:
        return hmac.new(self._session_key, body.encode(), hashlib.sha256).hexdigest()

    def cookie_value(self, session: StaffSession) -> str:
        body = _b64(
            json.dumps(
                {"e": session.email, "s": session.api_url, "x": session.expires},
                separators=(",", ":"),
            ).encode()
        )
        return f"{body}.{self._mac(body)}"

    def session(self, value: str | None) -> StaffSession | None:
        """The session a cookie carries, or None when forged, expired or uninstalled."""
        if not value or "." not in value:
            return None
        body, _, mac = value.rpartition(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            fields = json.loads(_unb64(body))
            session = StaffSession(email=fields["e"], api_url=fields["s"], expires=fields["x"])
        except (ValueError, binascii.Error, KeyError, TypeError):
            return None
        if not isinstance(session.expires, int) or session.expires <= self.clock.now().timestamp():
            return None
        installation = self.store.get_installation(session.api_url)
        if installation is None or not installation.active:
            return None
        return session

    def authenticate(self, request: Request) -> Staff | None:
        """The console's ``authenticate``: the staff member of a valid session cookie."""
        session = self.session(request.cookies.get(SESSION_COOKIE))
        return None if session is None else Staff(name=session.email)

    def set_cookie(self, response: Response, session: StaffSession, path: str) -> None:
        """Written by hand: ``Partitioned`` (CHIPS, for a Dashboard on another site) is not
        available from the standard library's cookie module before Python 3.14."""
        same_site = self.config.backoffice_cookie_samesite
        attributes = [
            f"{SESSION_COOKIE}={self.cookie_value(session)}",
            f"Max-Age={int(self.config.backoffice_session_ttl)}",
            f"Path={path or '/'}",
            "HttpOnly",
            f"SameSite={same_site.capitalize()}",
        ]
        if self.config.app_url.startswith("https://") or same_site == "none":
            attributes.append("Secure")
        if same_site == "none":
            attributes.append("Partitioned")
        response.raw_headers.append((b"set-cookie", "; ".join(attributes).encode("latin-1")))


# -- pages -----------------------------------------------------------------------------------

_LOGIN_SCRIPT = """
(function () {
  var form = document.getElementById("login");
  var api = new URLSearchParams(window.location.search).get("saleorApiUrl");
  if (api && !form.saleor_api_url.value) { form.saleor_api_url.value = api; }
  if (window.parent === window || !api) { return; }  // standalone: the form is the way in
  var dashboard = document.referrer ? new URL(document.referrer).origin : null;
  var sent = false;
  window.addEventListener("message", function (event) {
    if (event.source !== window.parent || (dashboard && event.origin !== dashboard)) { return; }
    var data = event.data || {};
    if (sent || (data.type !== "handshake" && data.type !== "tokenRefresh")) { return; }
    if (!data.payload || !data.payload.token) { return; }
    sent = true;
    form.token.value = data.payload.token;
    form.submit();
  });
  var id = (window.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Math.random());
  window.parent.postMessage({type: "notifyReady", payload: {actionId: id}}, dashboard || "*");
})();
"""


def _login_page(base: str, api_url: str, message: str, status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    note = f'<p style="padding:.5em;background:#f8d7da">{html.escape(message)}</p>'
    return HTMLResponse(
        "<!doctype html><html><head><meta charset=utf-8>"
        "<title>Sign in · 4WS gift cards back office</title></head>"
        '<body style="font-family:system-ui,sans-serif;margin:2em">'
        "<h1>4WS gift cards back office</h1>"
        + (note if message else "")
        + "<p>Opened from Saleor's Dashboard, this page signs you in by itself. Elsewhere,"
        " paste a Saleor staff token (<code>tokenCreate</code>) of a user with"
        f" {REQUIRED_PERMISSION}.</p>"
        f'<form id="login" method="post" action="{html.escape(base + LOGIN_PATH)}">'
        '<p><label>Saleor API URL <input name="saleor_api_url" size="50" required'
        f' value="{html.escape(api_url)}"></label></p>'
        '<p><label>Token <input name="token" type="password" autocomplete="off"'
        " required></label></p><p><button>Sign in</button></p></form>"
        f'<script nonce="{nonce}">{_LOGIN_SCRIPT}</script></body></html>',
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Content-Security-Policy": (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline';"
                " form-action 'self'; base-uri 'none'"
            ),
        },
    )


class _Gate:
    """In front of the console: no valid session -> the login page (GET) or 401."""

    def __init__(self, gate: SaleorStaffGate, console: ASGIApp) -> None:
        self.gate = gate
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            if self.gate.authenticate(request) is None:
                base = scope.get("root_path", "")
                response: Response
                if request.method in ("GET", "HEAD"):
                    response = RedirectResponse(base + LOGIN_PATH, status_code=303)
                else:
                    response = PlainTextResponse("sign in again", status_code=401)
                await response(scope, receive, send)
                return
        await self.console(scope, receive, send)


def backoffice_app(
    config: AppConfig,
    store: AppStore,
    http: httpx.AsyncClient,
    clock: Clock,
    payments: Any,
) -> Starlette:
    """The console over ``payments`` behind the Saleor staff login; mount at ``/backoffice``."""
    secret = config.backoffice_secret.encode()
    if not secret:
        secret = secrets.token_bytes(32)
        log.warning(
            "saleor.backoffice_ephemeral_secret",
            hint="set FOURWS_SALEOR_BACKOFFICE_SECRET: without it sessions end when the App"
            " restarts and are not shared between workers",
        )
    gate = SaleorStaffGate(config, store, http, clock, secret)
    csrf_secret = hmac.new(secret, b"fourws-backoffice-forms", hashlib.sha256).digest()
    console = console_app(BackOffice(payments), authenticate=gate.authenticate, secret=csrf_secret)
    app_origin = _origin(config.app_url)

    async def login_form(request: Request) -> Response:
        base = request.scope.get("root_path", "")
        return _login_page(base, request.query_params.get("saleorApiUrl", ""), "")

    async def login(request: Request) -> Response:
        base = request.scope.get("root_path", "")
        origin = request.headers.get("origin")
        if origin is not None and origin != "null" and origin != app_origin:
            # A form on another site posting someone's token: not a sign-in of this browser.
            return PlainTextResponse("cross-site sign-in refused", status_code=403)
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        api_url = (fields.get("saleor_api_url") or [""])[-1]
        token = (fields.get("token") or [""])[-1].strip()
        try:
            session = await gate.verify(api_url, token)
        except Refused as refused:
            log.warning("saleor.backoffice_login_refused", api_url=api_url, reason=refused.reason)
            return _login_page(base, api_url, refused.reason, refused.status)
        log.info("saleor.backoffice_login", api_url=api_url, staff=session.email)
        response = RedirectResponse(base + "/", status_code=303)
        gate.set_cookie(response, session, base)
        return response

    app = Starlette(
        routes=[
            Route(LOGIN_PATH, login_form, methods=["GET"]),
            Route(LOGIN_PATH, login, methods=["POST"]),
            Mount("", app=_Gate(gate, console)),
        ]
    )
    app.state.gate = gate
    return app


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def login_redirect(query: str) -> str:
    """Where the App's home sends the Dashboard's iframe: the login, query kept."""
    kept = {k: v[-1] for k, v in parse_qs(query).items() if k in ("saleorApiUrl", "domain", "id")}
    return BACKOFFICE_PATH + LOGIN_PATH + (f"?{urlencode(kept)}" if kept else "")
