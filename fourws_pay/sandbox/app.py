"""The sandbox's HTTP surface: a thin Starlette layer over ``Sandbox``'s books and queue.

Routes come from the sandbox's ``Settings`` (``cmd_*``, ``param_*``, ``path_*``), the same
fields the client builds its requests from, so client and sandbox agree by construction.

- ``/api?cmd=...`` (GET and POST): the Documents API, credentials in headers; a wrong or
  missing credential gets HTTP 401 ``{"success": false, "message": "Access Denied."}``.
- the Data management paths: login issues bearer tokens (also set as a cookie) that
  expire by the sandbox clock; anything else without a valid token gets HTTP 401
  ``{"message": "Access Denied."}``.
- ``/_sandbox/...``: the control API used by the CLI and by served-mode tests (faults,
  cards, in-shop spends, ledger, queue processing, callbacks, generated PDFs). It has no
  authentication: the sandbox only ever listens on loopback.

Formal validation errors of Documents API requests (missing barcode, non-numeric amount)
answer HTTP 400 with ``{"success": false, "message"}``: the reference says only that
asynchronous services "acknowledge receipt and formal validation", so the status is a
simulator choice.

Faults that must break the connection itself (``hang``, ``reset``) cannot be expressed as a
Starlette response; the route marks its response with a private header and ``FaultLayer``,
a raw ASGI wrapper outside Starlette's error middleware, turns it into the failure:
in-process it raises ``SandboxHang`` / ``SandboxReset`` that the sandbox transports map to
``httpx.ReadTimeout`` / ``httpx.RemoteProtocolError``; served, it sleeps or sends half an
answer and aborts, so uvicorn drops the connection.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fourws_pay.api import wirejson
from fourws_pay.api.endpoints import ENDPOINTS
from fourws_pay.api.fields import parse_datetime
from fourws_pay.sandbox import relaxed_json
from fourws_pay.sandbox.auth import LOGIN_COOKIE, documents_credentials_ok
from fourws_pay.sandbox.ean import is_valid_ean13
from fourws_pay.sandbox.faults import Fault
from fourws_pay.sandbox.queue import ItemKind
from fourws_pay.sandbox.state import wire_code

if TYPE_CHECKING:
    from fourws_pay.sandbox.sandbox import Sandbox

FAULT_HEADER = "x-fourws-sandbox-fault"
ACCESS_DENIED = "Access Denied."
ASYNC_ENDPOINTS = frozenset(e.name for e in ENDPOINTS if e.callback)


class SandboxHang(Exception):
    """Raised by the in-process app when a ``hang`` fault fires (-> httpx.ReadTimeout)."""


class SandboxReset(Exception):
    """Raised when a ``reset`` fault drops the connection (-> httpx.RemoteProtocolError)."""


class BadInput(Exception):
    """Formal validation failed: HTTP 400."""


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        wirejson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def control_response(body: Any, status: int = 200) -> Response:
    """JSON for the control API, where floats (fault seconds) are fine."""
    import json

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return float(value) if value != value.to_integral_value() else int(value)
        raise TypeError(f"cannot encode {type(value).__name__}")

    return Response(
        json.dumps(body, default=default, ensure_ascii=False),
        status_code=status,
        media_type="application/json",
    )


def _js_literal(content: bytes) -> bytes:
    """Strict JSON rewritten with unquoted keys: what the reference's examples look like,
    and not JSON any more."""
    return re.sub(rb'"([A-Za-z_]\w*)"\s*:', rb"\1:", content) or b"{success: true"


def _with_pk(voucher: dict[str, Any], pk: str, card: str) -> dict[str, Any]:
    """Echo ``pkFieldName`` right after ``cardBarcode``, where the reference shows it."""
    out: dict[str, Any] = {}
    for key, value in voucher.items():
        out[key] = value
        if key == "cardBarcode":
            out[pk] = card
    out.setdefault(pk, card)
    return out


class FaultLayer:
    """Raw ASGI wrapper that turns ``hang`` / ``reset`` markers into broken connections."""

    def __init__(self, app: ASGIApp, *, inprocess: bool) -> None:
        self.app = app
        self.inprocess = inprocess

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        marker: str | None = None
        held: list[Message] = []

        async def intercept(message: Message) -> None:
            nonlocal marker
            if message["type"] == "http.response.start":
                for key, value in message.get("headers", []):
                    if key.decode("latin-1").lower() == FAULT_HEADER:
                        marker = value.decode("latin-1")
                if marker is not None:
                    held.append(message)
                    return
            elif marker is not None:
                held.append(message)
                return
            await send(message)

        await self.app(scope, receive, intercept)
        if marker is None:
            return
        kind, _, arg = marker.partition(":")
        if kind == "hang":
            if not self.inprocess:
                await asyncio.sleep(float(arg or 30))
            raise SandboxHang("sandbox fault: hang")
        body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        start = held[0]
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.decode("latin-1").lower() not in (FAULT_HEADER, "content-length")
        ]
        headers.append((b"content-length", str(len(body) + 64).encode()))
        await send({"type": "http.response.start", "status": start["status"], "headers": headers})
        await send(
            {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
        )
        raise SandboxReset("sandbox fault: connection reset")


Handler = Callable[[Request], Awaitable[Response]]


class SandboxRoutes:
    """Route handlers bound to one ``Sandbox``."""

    def __init__(self, sandbox: Sandbox, *, inprocess: bool) -> None:
        self.sb = sandbox
        self.inprocess = inprocess
        s = sandbox.settings
        # every endpoint is served by the handler of the same name (a missing one fails here)
        self.get_cmds: dict[str, tuple[str, Handler]] = {}
        self.post_cmds: dict[str, tuple[str, Handler]] = {}
        for endpoint in ENDPOINTS:
            if endpoint.family == "documents":
                table = self.get_cmds if endpoint.method == "GET" else self.post_cmds
                table[endpoint.address(s)] = (endpoint.name, self.handler(endpoint.name))

    # ------------------------------------------------------------------ plumbing

    def handler(self, name: str) -> Handler:
        """The route handler serving endpoint ``name``: the method of that name."""
        handler: Handler = getattr(self, name)
        return handler

    def routes(self) -> list[Route]:
        s = self.sb.settings
        routes = [Route("/api", self.documents, methods=["GET", "POST"])]
        for endpoint in ENDPOINTS:  # in ENDPOINTS order, which puts specific paths first
            if endpoint.family == "data":
                route = self._data_route(endpoint.name, self.handler(endpoint.name))
                routes.append(Route(endpoint.address(s), route, methods=[endpoint.method]))
        routes += control_routes(self.sb)
        return routes

    def _data_route(self, name: str, handler: Handler) -> Handler:
        async def route(request: Request) -> Response:
            if name != "login" and not self._bearer_ok(request):
                self.sb.log_request(name, 401, None)
                return json_response({"message": ACCESS_DENIED}, 401)
            return await self._with_faults(request, name, handler, family="data")

        return route

    def _bearer_ok(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        token = token or request.cookies.get(LOGIN_COOKIE)
        return self.sb.tokens.valid(token, self.sb.clock.now())

    async def documents(self, request: Request) -> Response:
        cmd = request.query_params.get("cmd", "")
        table = self.get_cmds if request.method == "GET" else self.post_cmds
        if cmd not in table:
            return json_response({"success": False, "message": f"unknown cmd {cmd[:60]}"}, 404)
        name, handler = table[cmd]
        if not documents_credentials_ok(request.headers, self.sb.settings):
            self.sb.log_request(name, 401, None)
            return json_response({"success": False, "message": ACCESS_DENIED}, 401)
        return await self._with_faults(request, name, handler, family="documents")

    def _error(self, family: str, status: int, message: str) -> Response:
        body: dict[str, Any] = {"message": message}
        if family == "documents":
            body = {"success": False, "message": message}
        return json_response(body, status)

    async def _with_faults(
        self, request: Request, name: str, handler: Handler, *, family: str
    ) -> Response:
        fault = None
        try:
            response, fault = await self._faulted(request, name, handler, family=family)
        except Exception:
            self.sb.log_request(name, 500, None)
            raise
        self.sb.log_request(name, response.status_code, fault)
        return response

    async def _faulted(
        self, request: Request, name: str, handler: Handler, *, family: str
    ) -> tuple[Response, Fault | None]:
        sb = self.sb
        if sb.rate_limiter is not None:
            allowed, headers = sb.rate_limiter.acquire(sb.clock.monotonic())
            if not allowed:
                response = self._error(family, 429, "Too Many Requests")
                response.headers.update(headers)
                return response, None
        fault = sb.faults.take(name)
        request.state.callback_fault = (
            sb.faults.take(name, callback=True) if name in ASYNC_ENDPOINTS else None
        )
        if fault is not None:
            early = await self._before(fault, family)
            if early is not None:
                return early, fault
        try:
            response = await handler(request)
        except BadInput as exc:
            response = self._error(family, 400, str(exc))
        if fault is not None:
            response = self._after(fault, family, response)
        return response, fault

    async def _before(self, fault: Fault, family: str) -> Response | None:
        sb = self.sb
        if fault.kind == "latency":
            await sb.clock.asleep(fault.seconds)
        elif fault.kind == "in_shop_spend":
            sb.spend_in_shop(fault.barcode, fault.amount)
        elif fault.kind == "rate_limited":
            seconds = f"{fault.seconds:g}"
            response = self._error(family, 429, "Too Many Requests")
            response.headers.update(
                {
                    "Retry-After": seconds,
                    "X-RateLimit-Limit": "0",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": seconds,
                }
            )
            return response
        elif fault.kind == "success_false":
            return json_response({"success": False, "message": fault.message})
        elif not fault.after_enqueue:
            if fault.kind == "http_status":
                return self._error(family, fault.status, fault.message or "sandbox fault")
            if fault.kind in ("hang", "reset"):
                return self._marked(fault, json_response({"success": True}))
        return None

    def _after(self, fault: Fault, family: str, response: Response) -> Response:
        if not fault.after_enqueue:
            return response
        if fault.kind == "http_status":
            return self._error(family, fault.status, fault.message or "sandbox fault")
        if fault.kind in ("hang", "reset"):
            return self._marked(fault, response)
        if fault.kind == "truncated_body":
            body = bytes(response.body)
            return Response(
                body[: len(body) // 2], response.status_code, media_type="application/json"
            )
        if fault.kind == "invalid_json":
            return Response(
                _js_literal(bytes(response.body)),
                response.status_code,
                media_type="application/json",
            )
        return response

    @staticmethod
    def _marked(fault: Fault, response: Response) -> Response:
        response.headers[FAULT_HEADER] = f"{fault.kind}:{fault.seconds:g}"
        return response

    @staticmethod
    async def _body(request: Request, *, relaxed: bool) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            body = relaxed_json.loads(raw) if relaxed else wirejson.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BadInput(f"invalid body: {str(exc)[:80]}") from None
        if not isinstance(body, dict):
            raise BadInput("invalid body: expected an object")
        return body

    # ------------------------------------------------------------- Documents API

    async def get_giftcard(self, request: Request) -> Response:
        barcode = request.query_params.get(self.sb.settings.param_giftcard_barcode, "").strip()
        if not barcode:
            raise BadInput("barcode is required")
        card = self.sb.card_wire(barcode)
        if card is None:
            return json_response(
                {"success": False, "message": "barcode not found"}, self.sb.unknown_barcode_status
            )
        return json_response({"success": True, "giftcard": card})

    async def update_giftcard(self, request: Request) -> Response:
        body = await self._body(request, relaxed=True)
        barcode = body.get("barcode")
        if isinstance(barcode, int) and not isinstance(barcode, bool):
            barcode = str(barcode)
        if not isinstance(barcode, str) or not barcode.strip():
            raise BadInput("barcode is required")
        if body.get("entityCode") in (None, ""):
            raise BadInput("entityCode is required")
        amount = body.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
            raise BadInput("amount must be a number")
        if not Decimal(amount).is_finite() or amount == 0:
            raise BadInput("amount must be a non-zero number")
        body["barcode"] = barcode.strip()
        body["amount"] = Decimal(amount)
        self._check_callback(body)
        return await self._enqueue(request, "update", "update_giftcard", body)

    async def generate_giftcards(self, request: Request) -> Response:
        body = await self._body(request, relaxed=True)
        if not isinstance(body.get("itemCode"), str) or not body["itemCode"]:
            raise BadInput("itemCode is required")
        count = body.get("giftcards")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
            raise BadInput("giftcards must be an integer between 1 and 10000")
        self._check_callback(body)
        return await self._enqueue(request, "generate", "generate_giftcards", body)

    async def giftcard_pdf(self, request: Request) -> Response:
        body = await self._body(request, relaxed=True)
        codes = body.get("barcodes")
        if not isinstance(codes, list) or not codes:
            raise BadInput("barcodes must be a non-empty list")
        body["barcodes"] = [str(c) for c in codes]
        self._check_callback(body)
        if body.get("callback"):
            return await self._enqueue(request, "pdf", "giftcard_pdf", body)
        if any(self.sb.card_wire(c) is None for c in body["barcodes"]):
            return json_response({"success": False, "message": "barcode not found"})
        return json_response(
            {"success": True, "url": self.sb.pdf_url(body["barcodes"], str(request.base_url))}
        )

    @staticmethod
    def _check_callback(body: dict[str, Any]) -> None:
        url = body.get("callback")
        if url is not None and (
            not isinstance(url, str) or not url.startswith(("http://", "https://"))
        ):
            raise BadInput("callback must be an http(s) URL")

    async def _enqueue(
        self, request: Request, kind: ItemKind, endpoint: str, body: dict[str, Any]
    ) -> Response:
        callback_fault: Fault | None = request.state.callback_fault
        item = self.sb.enqueue(kind, endpoint, body, callback_fault)
        if callback_fault is not None and callback_fault.kind == "before_response":
            await self.sb.aprocess_now(item.queue_id)
        return json_response({"success": True, "queueId": item.queue_id})

    def _voucher_page(
        self, request: Request, vouchers: list[dict[str, Any]], extra: dict[str, Any]
    ) -> Response:
        try:
            start = max(0, int(request.query_params.get("start", "0")))
            limit = min(20, max(1, int(request.query_params.get("limit", "20"))))
        except ValueError:
            raise BadInput("start and limit must be integers") from None
        page = vouchers[start : start + limit]
        body: dict[str, Any] = {
            "success": True,
            **extra,
            "valueObjectList": page,
            "moreRows": start + limit < len(vouchers),
        }
        return json_response(body)

    async def loyalty_vouchers(self, request: Request) -> Response:
        card = request.query_params.get(self.sb.settings.param_card_barcode, "").strip()
        if not card:
            raise BadInput("cardBarcode is required")
        pk = request.query_params.get("pkFieldName", "").strip() or None
        vouchers, stats = self.sb.customer_vouchers(card)
        if pk:
            vouchers = [_with_pk(v, pk, card) for v in vouchers]
            stats = {**stats, pk: card}
        return self._voucher_page(request, vouchers, stats)

    def _when(self, request: Request, param: str) -> Any:
        raw = request.query_params.get(param)
        try:
            value = parse_datetime(raw)
        except ValueError:
            value = None
        if value is None:
            raise BadInput(f"{param} must be a date-time 'yyyy-MM-dd HH:mm:ss'")
        return value

    async def loyalty_vouchers_between(self, request: Request) -> Response:
        s = self.sb.settings
        start = self._when(request, s.param_interval_start)
        end = self._when(request, s.param_interval_end)
        card = request.query_params.get(s.param_card_barcode) or None
        return self._voucher_page(request, self.sb.vouchers_between(start, end, card), {})

    async def last_loyalty_vouchers(self, request: Request) -> Response:
        since = self._when(request, self.sb.settings.param_last_from)
        return self._voucher_page(request, self.sb.vouchers_since(since), {})

    # ------------------------------------------------------- Data management API

    async def login(self, request: Request) -> Response:
        try:
            body = await self._body(request, relaxed=False)
        except BadInput:
            body = {}
        s = self.sb.settings
        import hmac

        user_ok = hmac.compare_digest(str(body.get("username", "")).encode(), s.username.encode())
        pass_ok = hmac.compare_digest(
            str(body.get("password", "")).encode(), s.password.get_secret_value().encode()
        )
        if not (user_ok and pass_ok):
            return json_response({"message": ACCESS_DENIED}, 401)
        now = self.sb.clock.now()
        token, expires = self.sb.tokens.issue(now)
        answer = {
            "username": s.username,
            "companyId": s.company_id,
            "siteId": wire_code(s.site_id),
            "token": token,
            "expires": expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{expires.microsecond // 1000:03d}Z",
            "expiresInMS": self.sb.tokens.ttl_ms,
        }
        response = json_response(answer)
        response.set_cookie(
            LOGIN_COOKIE,
            token,
            max_age=self.sb.tokens.ttl_ms // 1000,
            httponly=True,
            samesite="strict",
        )
        return response

    async def insert_barcode(self, request: Request) -> Response:
        body = await self._body(request, relaxed=False)
        item_code = request.path_params["item_code"]
        barcode = body.get("barcode")
        if not isinstance(barcode, str) or not barcode.strip():
            return json_response({"message": "barcode is required"}, 400)
        barcode_type = str(body.get("barcode_type") or "EAN13")
        if (
            self.sb.validate_inserted_ean13
            and barcode_type.upper() == "EAN13"
            and not is_valid_ean13(barcode)
        ):
            return json_response({"message": f"Invalid EAN13 barcode: {barcode}"}, 400)
        dims = [body.get(f"dimension_level{i}") for i in range(1, 6)]
        try:
            rec = self.sb.insert_barcode(item_code, barcode.strip(), dims, barcode_type)
        except LookupError as exc:
            return json_response({"message": str(exc.args[0])}, 404)
        except FileExistsError as exc:
            return json_response({"message": str(exc)}, self.sb.duplicate_barcode_status)
        return json_response(
            {"success": True, "barcode": {"prog_id": rec.prog_id, "barcode": rec.barcode}}
        )

    async def sku_from_barcode(self, request: Request) -> Response:
        barcode = request.path_params["barcode"]
        rec = self.sb.barcode_record(barcode)
        if rec is None:
            return json_response({"message": f"Barcode not found: {barcode}"}, 404)
        return json_response(rec)

    async def delete_barcode(self, request: Request) -> Response:
        ignore = request.query_params.get("ignore_movements", "false").lower() in ("true", "1")
        try:
            self.sb.delete_barcode(
                request.path_params["item_code"], request.path_params["barcode"], ignore
            )
        except LookupError as exc:
            return json_response({"message": str(exc.args[0])}, 404)
        except PermissionError as exc:
            return json_response({"message": str(exc)}, 422)
        return json_response({"success": True})

    async def generate_missing_barcodes(self, request: Request) -> Response:
        body = await self._body(request, relaxed=False)
        try:
            created = self.sb.generate_missing_barcodes(request.path_params["item_code"], body)
        except LookupError as exc:
            return json_response({"message": str(exc.args[0])}, 404)
        return json_response({"success": True, "barcodes": created})


def control_routes(sb: Sandbox) -> list[Route]:
    """``/_sandbox/...``: scripting and inspection over HTTP (CLI, served-mode tests)."""

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        try:
            return wirejson.loads(raw) if raw.strip() else {}
        except ValueError:
            raise BadInput("invalid JSON body") from None

    def guarded(fn: Callable[[Request], Awaitable[Response]]) -> Handler:
        async def route(request: Request) -> Response:
            try:
                return await fn(request)
            except (BadInput, ValueError, TypeError, KeyError) as exc:
                return control_response({"success": False, "message": str(exc)[:200]}, 400)

        return route

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            sb.faults.clear()
        elif request.method == "POST":
            spec = await body_of(request)
            for item in spec if isinstance(spec, list) else [spec]:
                sb.faults.add_spec(item)
        return control_response({"success": True, "faults": sb.faults.pending()})

    async def cards(request: Request) -> Response:
        spec = await body_of(request)
        card = sb.add_giftcard(**spec)
        return control_response({"success": True, "giftcard": sb.card_wire(card.barcode)})

    async def card(request: Request) -> Response:
        barcode = request.path_params["barcode"]
        wire = sb.card_wire(barcode)
        if wire is None:
            return control_response({"success": False, "message": "barcode not found"}, 404)
        return control_response(
            {"success": True, "giftcard": wire, "operations": [r for r in sb.ledger_wire(barcode)]}
        )

    async def spend(request: Request) -> Response:
        spec = await body_of(request)
        sb.spend_in_shop(request.path_params["barcode"], Decimal(str(spec["amount"])))
        return control_response(
            {"success": True, "giftcard": sb.card_wire(request.path_params["barcode"])}
        )

    async def operations(request: Request) -> Response:
        return control_response(
            {"success": True, "operations": sb.ledger_wire(request.query_params.get("barcode"))}
        )

    async def process(request: Request) -> Response:
        run = await sb.aprocess_queue()
        return control_response({"success": True, **run.summary()})

    async def callbacks(request: Request) -> Response:
        return control_response({"success": True, "callbacks": [c.summary() for c in sb.callbacks]})

    async def pdf(request: Request) -> Response:
        content = sb.pdf_bytes(request.path_params["doc_id"])
        if content is None:
            return control_response({"success": False, "message": "not found"}, 404)
        return Response(content, media_type="application/pdf")

    async def health(request: Request) -> Response:
        return control_response({"success": True, "now": sb.clock.now().isoformat()})

    return [
        Route("/_sandbox/health", guarded(health), methods=["GET"]),
        Route("/_sandbox/faults", guarded(faults), methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/cards", guarded(cards), methods=["POST"]),
        Route("/_sandbox/cards/{barcode}", guarded(card), methods=["GET"]),
        Route("/_sandbox/cards/{barcode}/spend", guarded(spend), methods=["POST"]),
        Route("/_sandbox/operations", guarded(operations), methods=["GET"]),
        Route("/_sandbox/process", guarded(process), methods=["POST"]),
        Route("/_sandbox/callbacks", guarded(callbacks), methods=["GET"]),
        Route("/_sandbox/pdf/{doc_id}", guarded(pdf), methods=["GET"]),
    ]


def build_app(sandbox: Sandbox, *, inprocess: bool) -> ASGIApp:
    """The ASGI app: ``FaultLayer`` around Starlette around ``SandboxRoutes``."""
    routes = SandboxRoutes(sandbox, inprocess=inprocess)
    return FaultLayer(Starlette(routes=routes.routes()), inprocess=inprocess)
