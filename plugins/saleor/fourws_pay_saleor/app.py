"""The ASGI application: manifest, install, the six sync webhooks, the 4WS callback.

Every webhook goes through the same gate before any business code runs:

1. ``Saleor-Api-Url`` names an installed Saleor (a token is stored for it), else 401;
2. ``Saleor-Signature`` verifies over the raw body against that Saleor's JWKS, else 401
   (503 when the JWKS cannot be fetched, so that Saleor retries);
3. ``Saleor-Event`` matches the endpoint, else 400 (headers are not signed, so this only
   catches a misrouted webhook; the payload model checks the body's shape);
4. the body parses as the expected payload, else 400 -- except a signed body that is
   empty or not JSON on a ``*_REQUESTED`` endpoint: that is Saleor retrying a sync webhook
   (since late 2024 Saleor re-sends such retries without their body). Nothing is acted on:
   the App answers 200 with the bare ``pspReference`` of its answer that was lost -- the
   newest to that webhook, or, when recent answers span several transactions, the one
   Saleor has not filed (``_lost_answer``) -- so Saleor books no event (an error answer
   would be booked as a ``*_FAILURE``); an error when it answered none recently or cannot
   tell which it was; and it re-arms the reports of what it answered to
   that Saleor recently, so an outcome whose answer Saleor lost still reaches it by
   ``transactionEventReport``.

Errors are ``{"error": {"message": ...}}``, the shape Saleor reads. Sync action webhooks are
never answered >= 500 on purpose: anything the App cannot finish now is answered pending.

Reports to Saleor are flushed in a background task after each request that can queue one,
and by a periodic loop while the server runs, which also works through pending actions,
re-holds the rest of partially charged authorizations and prunes old rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from fourws_pay.clock import Clock, SystemClock
from fourws_pay.errors import CallbackRejected
from fourws_pay.logs import get_logger
from fourws_pay_saleor.actions import ACTION_PREFIX
from fourws_pay_saleor.backoffice import BACKOFFICE_PATH, LOGIN_PATH, backoffice_app, login_redirect
from fourws_pay_saleor.config import AppConfig
from fourws_pay_saleor.events import PLUGIN_NAME, SaleorEventListener
from fourws_pay_saleor.gateway import Gateway
from fourws_pay_saleor.handler_core import delivery_key, request_psp
from fourws_pay_saleor.handlers import PaymentHandlers, Unavailable
from fourws_pay_saleor.jsonutil import dumps, loads
from fourws_pay_saleor.jws import JWKSVerifier, KeysUnavailable, SignatureError
from fourws_pay_saleor.manifest import (
    APP_EVENTS_PATH,
    MANIFEST_PATH,
    REGISTER_PATH,
    WEBHOOK_PATHS,
    build_manifest,
)
from fourws_pay_saleor.payloads import (
    ACTION_EVENTS,
    PayloadError,
    PaymentGatewayInitializeSession,
    TransactionActionRequest,
    TransactionSession,
    WebhookEvent,
    parse_payload,
)
from fourws_pay_saleor.reporter import SaleorReporter
from fourws_pay_saleor.responses import async_response
from fourws_pay_saleor.sales import SaleStore
from fourws_pay_saleor.selling import (
    ORDER_FULLY_PAID_PATH,
    SELLING_PLUGIN_NAME,
    DeliverGiftcards,
    SaleorSelling,
    load_delivery,
)
from fourws_pay_saleor.store import AppStore
from fourws_pay_saleor.versions import SaleorVersion, saleor_version

log = get_logger(component="saleor.app")

APP_ID_QUERY = "query FourWSAppId { app { id } }"


class JSONBody(Response):
    """A JSON response rendered with ``jsonutil.dumps`` (Decimal-safe)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")


def _error(status: int, message: str) -> JSONResponse:
    """Saleor reads ``error.message`` from a failed App response (install, webhooks)."""
    return JSONResponse({"error": {"message": message}}, status_code=status)


# Saleor's webhook retries (handle_webhook_retry) back off 10 s * 2^n, five times: ~5 min.
RETRY_WINDOW = timedelta(minutes=10)

# An empty retry that may repeat a request of several transactions: which of them Saleor
# has not booked an answer for (its request event carries no reference yet).
TRANSACTION_EVENTS_QUERY = (
    "query FourWSTransactionEvents($id: ID!) {"
    " transaction(id: $id) { id events { type pspReference } } }"
)
REQUEST_EVENT = {
    WebhookEvent.TRANSACTION_CHARGE_REQUESTED: "CHARGE_REQUEST",
    WebhookEvent.TRANSACTION_REFUND_REQUESTED: "REFUND_REQUEST",
    WebhookEvent.TRANSACTION_CANCELATION_REQUESTED: "CANCEL_REQUEST",
}
# The newest transactions looked at; the lost answer is one of the latest (seconds ago).
RETRY_CANDIDATES = 20


@dataclass
class SaleorApp:
    """Everything a running App holds; ``create_app`` wires it into Starlette."""

    config: AppConfig
    store: AppStore
    gateway: Gateway
    http: httpx.AsyncClient
    clock: Clock
    channel_gateways: dict[str, Gateway] = field(default_factory=dict)
    deliver_giftcards: DeliverGiftcards | None = None
    handlers: PaymentHandlers = field(init=False)
    selling: SaleorSelling | None = field(init=False, default=None)
    verifier: JWKSVerifier = field(init=False)
    reporter: SaleorReporter = field(init=False)
    listener: SaleorEventListener = field(init=False)
    backoffice_mounted: bool = field(init=False, default=False)
    _flush_wanted: asyncio.Event | None = field(init=False, default=None)
    _loop: asyncio.AbstractEventLoop | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.handlers = PaymentHandlers(
            self.config, self.store, self.gateway, self.clock, self.channel_gateways
        )
        self.verifier = JWKSVerifier(self.http, self.clock, ttl=self.config.jwks_ttl)
        self.reporter = SaleorReporter(
            self.store, self.http, self.clock, self.config, self.handlers.available_actions
        )
        self.listener = SaleorEventListener(
            self.store,
            self.clock,
            self._wake,
            callback_base_url=self.config.url(self.config.callback_path)
            if self.config.provide_callback_base_url
            else None,
        )
        for gateway in self.gateways():
            gateway.add_listener(self.listener, PLUGIN_NAME)
        if self.config.sell_giftcards:
            deliver = self.deliver_giftcards
            if deliver is None and self.config.giftcard_delivery:
                deliver = load_delivery(self.config.giftcard_delivery)
            if deliver is None:
                log.warning(
                    "saleor.giftcards_not_delivered",
                    hint="sold cards are issued and recorded, but nothing hands them to the"
                    " buyer: set FOURWS_SALEOR_GIFTCARD_DELIVERY or pass deliver_giftcards=",
                )
            self.selling = SaleorSelling(
                self.config,
                SaleStore(self.store.path),
                self.store,
                self.gateway_for,
                self.http,
                self.clock,
                self._wake,
                deliver,
            )
            for gateway in self.gateways():
                gateway.add_listener(self.selling, SELLING_PLUGIN_NAME)

    def gateway_for(self, channel: str) -> Gateway:
        """The gateway of a Saleor channel (by slug): its own, else the default."""
        return self.channel_gateways.get(channel, self.gateway)

    def gateways(self) -> list[Gateway]:
        """The default gateway and each channel's, once each."""
        unique: list[Gateway] = [self.gateway]
        for gateway in self.channel_gateways.values():
            if all(gateway is not known for known in unique):
                unique.append(gateway)
        return unique

    def _wake(self) -> None:
        # Called from inside payment calls, possibly on a worker thread: only signal.
        event, loop = self._flush_wanted, self._loop
        if event is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(event.set)

    async def flush_reports(self) -> None:
        try:
            await self.reporter.flush()
        except Exception as exc:  # the outbox keeps the rows; the next flush retries
            log.error("saleor.flush_failed", error=repr(exc))
        if self.selling is not None:
            try:
                await self.selling.flush_metadata()
            except Exception as exc:  # the sale stays due; the next flush retries
                log.error("saleor.sale_metadata_flush_failed", error=repr(exc))

    async def react(self) -> None:
        """After a payment event: finish what waited for it, re-hold remainders, report.

        Run right after a 4WS callback (and when an event is queued), so the rest of a
        partially charged authorization is held again within moments of the settlement
        that freed it, not at the next maintenance pass.
        """
        for step in (
            self.verify_held,
            self.handlers.run_pending,
            self.handlers.keep_remainders,
            *self._selling_steps(),
        ):
            try:
                await step()
            except Exception as exc:  # the maintenance pass tries again
                log.error("saleor.react_failed", step=step.__name__, error=repr(exc))
        await self.flush_reports()

    def _selling_steps(self) -> list[Callable[[], Awaitable[None]]]:
        return [] if self.selling is None else [self.selling.run_pending]

    # -- endpoints -----------------------------------------------------------------------

    async def manifest(self, request: Request) -> Response:
        return JSONResponse(build_manifest(self.config))

    async def home(self, request: Request) -> Response:
        if self.backoffice_mounted:
            if "saleorApiUrl" in request.query_params:
                # The Dashboard opening the App: its iframe goes on to the back office.
                return RedirectResponse(login_redirect(request.url.query), status_code=303)
            link = f'<p><a href="{BACKOFFICE_PATH}{LOGIN_PATH}">Staff back office</a></p>'
        else:
            link = ""
        return HTMLResponse(
            "<!doctype html><title>4WS gift cards</title>"
            "<h1>4WS gift cards for Saleor</h1>"
            "<p>This App accepts 4WS Suite gift cards through Saleor's Transaction API.</p>" + link
        )

    async def register(self, request: Request) -> Response:
        api_url = request.headers.get("saleor-api-url", "").strip()
        domain = request.headers.get("saleor-domain", "").strip()
        if not _is_http_url(api_url):
            return _error(400, "missing or invalid Saleor-Api-Url header")
        if not self.config.is_allowed(api_url):
            log.warning("saleor.register_refused", api_url=api_url)
            return _error(403, "this Saleor instance may not install the App")
        try:
            body = loads(await request.body())
        except ValueError:
            return _error(400, "body is not JSON")
        token = body.get("auth_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return _error(400, "auth_token is required")
        app_id: str | None = None
        active = True
        if self.config.verify_token_on_register:
            try:
                refused, app_id = await self._app_id(api_url, token)
            except httpx.HTTPError:
                return _error(503, "cannot reach Saleor to confirm the token")
            if app_id is None:
                existing = self.store.get_installation(api_url)
                if not refused or (existing is not None and existing.active):
                    return _error(401, "Saleor did not accept the token")
                # ``activateAfterInstallation: false``: Saleor refuses an inactive App's
                # token until it is activated. Keep it, inactive: the App does not act or
                # report for this Saleor until it is activated (APP_STATUS_CHANGED or a
                # first signed webhook). An active installation is never replaced this way.
                active = False
        self.store.save_installation(
            api_url, domain or (urlsplit(api_url).hostname or ""), token, app_id, self.clock.now()
        )
        if not active:
            self.store.set_installation_active(api_url, False)
        self.verifier.forget(api_url)
        log.info("saleor.registered", api_url=api_url, app_id=app_id, active=active)
        return JSONResponse({"success": True})

    async def _app_id(self, api_url: str, token: str) -> tuple[bool, str | None]:
        """(Saleor refused the token, the App's id) for ``query { app { id } }``.

        Saleor 3.24 answers an inactive App's token (``activateAfterInstallation: false``)
        with HTTP 200, ``app: null`` and a ``PermissionDenied`` error: its middleware only
        authenticates active Apps. HTTP 401 is taken the same way. Anything else without an
        id (5xx, another error, an unreadable body) is not a refusal of the token.
        """
        response = await self.http.post(
            api_url,
            json={"query": APP_ID_QUERY},
            headers={"Authorization": f"Bearer {token}"},
            timeout=self.config.http_timeout,
        )
        if response.status_code != 200:
            return response.status_code == 401, None
        try:
            document = response.json()
        except ValueError:
            return False, None
        data = document.get("data") if isinstance(document, dict) else None
        app = data.get("app") if isinstance(data, dict) else None
        app_id = app.get("id") if isinstance(app, dict) else None
        if app_id:
            return False, str(app_id)
        return _permission_denied(document), None

    async def _verified(self, request: Request, event_name: str) -> tuple[str, bytes]:
        """Authenticate one webhook (installation, signature, event); raises ``_Reject``."""
        body = await request.body()
        api_url = request.headers.get("saleor-api-url", "").strip()
        if not api_url or self.store.get_installation(api_url) is None:
            log.warning("saleor.webhook_unknown_saleor", api_url=api_url or None)
            raise _Reject(401, "unknown Saleor-Api-Url")
        try:
            await self.verifier.verify(api_url, request.headers.get("saleor-signature"), body)
        except SignatureError as exc:
            log.warning("saleor.webhook_bad_signature", api_url=api_url, error=str(exc))
            raise _Reject(401, "invalid signature") from None
        except KeysUnavailable as exc:
            log.warning("saleor.jwks_unavailable", api_url=api_url, error=str(exc))
            raise _KeysDown(api_url, body) from None
        header_event = request.headers.get("saleor-event", "").strip().lower()
        if header_event != event_name:
            log.warning("saleor.webhook_wrong_event", expected=event_name, got=header_event)
            raise _Reject(400, "Saleor-Event does not match this endpoint")
        return api_url, body

    async def _gate(
        self, request: Request, event: WebhookEvent
    ) -> tuple[str, bytes, Any, SaleorVersion | None]:
        """Authenticate and parse one webhook; raises ``_Reject`` or ``_EmptyRetry``."""
        api_url, body = await self._verified(request, event.value)
        installation = self.store.get_installation(api_url)
        if installation is not None and not installation.active:
            # Saleor only calls active Apps: a signed webhook means it was activated.
            self.store.set_installation_active(api_url, True)
        try:
            document = loads(body) if body.strip() else None
        except ValueError:
            document = None
        if document is None:
            if event in ACTION_EVENTS:
                raise _EmptyRetry(api_url)
            raise _Reject(400, "body is not JSON")
        try:
            payload = parse_payload(event, document)
        except PayloadError as exc:
            raise _Reject(400, str(exc)) from None
        version = saleor_version(request.headers, document)
        return api_url, body, payload, version

    def webhook(self, event: WebhookEvent) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                api_url, body, payload, version = await self._gate(request, event)
            except _Reject as reject:
                return _error(reject.status, reject.message)
            except _EmptyRetry as retry:
                return await self._empty_retry(retry.api_url, event)
            except _KeysDown as down:
                return self._hold_until_verifiable(request, down, event)
            try:
                result = await self._dispatch(event, api_url, body, payload, version)
            except Unavailable as exc:
                log.warning("saleor.webhook_unavailable", webhook=event.value, error=str(exc))
                return _error(503, "temporarily unavailable")
            return JSONBody(result, background=BackgroundTask(self.flush_reports))

        return endpoint

    def _hold_until_verifiable(
        self, request: Request, down: _KeysDown, event: WebhookEvent
    ) -> Response:
        """Saleor's JWKS is unreachable: a 5xx would be retried without its body.

        A ``*_REQUESTED`` request is kept, unverified and untouched, and answered pending
        under the ``pspReference`` it will have once verified; the runner verifies it when
        the keys can be fetched and only then acts on it (a request whose signature then
        fails is dropped: the pending answer went to whoever forged it, not to Saleor).
        """
        header_event = request.headers.get("saleor-event", "").strip().lower()
        signature = request.headers.get("saleor-signature", "")
        if event not in ACTION_EVENTS or header_event != event.value or not down.body.strip():
            return _error(503, "cannot verify the signature now")
        key = delivery_key(down.api_url, event, down.body)
        if not self.store.hold_unverified(
            key,
            down.api_url,
            event.value,
            down.body,
            signature,
            self.clock.now(),
            limit=self.config.unverified_limit,
        ):
            return _error(503, "cannot verify the signature now")
        return JSONResponse(async_response(request_psp(ACTION_PREFIX[event.value], key)))

    async def verify_held(self) -> None:
        """Verify and handle requests held while Saleor's keys were unreachable."""
        for key, api_url, event_name, body, signature in self.store.unverified():
            if self.store.get_installation(api_url) is None:
                self.store.drop_unverified(key)
                continue
            try:
                await self.verifier.verify(api_url, signature, body)
            except KeysUnavailable:
                return  # still down; the next pass tries again
            except SignatureError as exc:
                log.warning("saleor.held_request_forged", api_url=api_url, error=str(exc))
                self.store.drop_unverified(key)
                continue
            event = WebhookEvent(event_name)
            try:
                payload = parse_payload(event, loads(body))
            except ValueError as exc:  # PayloadError is a ValueError
                log.warning("saleor.held_request_unreadable", api_url=api_url, error=str(exc))
                self.store.drop_unverified(key)
                continue
            assert isinstance(payload, TransactionActionRequest)
            response = await self.handlers.action_requested(api_url, event, payload, body)
            if "result" in response:
                # Saleor got "pending" for this request: its outcome goes as a report.
                self.handlers.report_answer(response)
            self.store.drop_unverified(key)

    async def _empty_retry(self, api_url: str, event: WebhookEvent) -> Response:
        """A signed ``*_REQUESTED`` delivery without a usable body: Saleor's retry.

        Saleor books whatever this answer says against the request event it retries
        (``create_transaction_event_from_request_and_webhook_response`` in
        ``saleor/payment/utils.py``): an answer without ``pspReference`` becomes a
        ``*_FAILURE`` event staff see beside the outcome the App reported, while a bare
        ``{"pspReference": P}`` only files the request under ``P`` and books no event, and
        the outcome under ``P`` (already reported, or re-armed here) closes it -- provided
        ``P`` belongs to the same transaction (``_lost_answer``). So the retry is answered
        with the reference of the lost answer, and with an error only when the App answered
        none recently or cannot tell which transaction's it was.
        """
        now = self.clock.now()
        since = now - RETRY_WINDOW
        rearmed = self.store.rearm_answered(api_url, event.value, since, now)
        psp = await self._lost_answer(
            api_url, event, self.store.answered_since(api_url, event.value, since)
        )
        log.warning(
            "saleor.empty_retry",
            webhook=event.value,
            api_url=api_url,
            rearmed=rearmed,
            psp_reference=psp,
        )
        if psp is not None:
            return JSONResponse(
                {"pspReference": psp},
                status_code=200,
                background=BackgroundTask(self.flush_reports),
            )
        return JSONResponse(
            {
                "error": {
                    "message": "Empty webhook body (a Saleor retry). The request is handled"
                    " from its first delivery; its outcome is reported with"
                    " transactionEventReport."
                }
            },
            status_code=200,
            background=BackgroundTask(self.flush_reports),
        )

    async def _lost_answer(
        self, api_url: str, event: WebhookEvent, answers: list[tuple[str, str]]
    ) -> str | None:
        """The ``pspReference`` of the answer the empty retry most likely repeats, or None.

        The retry names no transaction. With answers of one transaction only, the newest
        is taken: filed under another reference of the same transaction, the request is
        still closed by that reference's outcome. With answers to several transactions (a
        checkout paid with several cards, whose refunds staff send one after the other)
        the newest may be another transaction's, under which Saleor would file this
        request on its own transaction where no outcome ever closes it: the refund would
        show pending for ever and its amount be taken from ``charged`` twice. So the App
        asks Saleor which of those transactions still has a request event of this kind
        without the App's reference -- the one whose answer never arrived -- and takes
        that one when it is a single transaction; else None (an error answer: a visible
        ``*_FAILURE`` that Saleor does not count, the outcome still reported).
        """
        if not answers:
            return None
        if len({tx for tx, _ in answers}) == 1:
            return answers[0][1]
        installation = self.store.get_installation(api_url)
        if installation is None:
            return None
        transactions = list(dict.fromkeys(tx for tx, _ in answers))[:RETRY_CANDIDATES]
        booked = await asyncio.gather(
            *(
                self._request_references(api_url, installation.token, tx, event)
                for tx in transactions
            )
        )
        by_tx = dict(zip(transactions, booked, strict=True))
        if any(refs is None for refs in by_tx.values()):
            return None  # Saleor did not say: better a visible failure than a wrong filing
        unbooked = [
            (tx, psp) for tx, psp in answers if tx in by_tx and psp not in (by_tx[tx] or set())
        ]
        if len({tx for tx, _ in unbooked}) != 1:
            log.warning(
                "saleor.empty_retry_ambiguous",
                webhook=event.value,
                api_url=api_url,
                candidates=len(unbooked),
            )
            return None
        return unbooked[0][1]

    async def _request_references(
        self, api_url: str, token: str, transaction_id: str, event: WebhookEvent
    ) -> set[str] | None:
        """The references Saleor filed this transaction's requests of ``event``'s kind under
        (None when Saleor cannot be asked now)."""
        try:
            response = await self.http.post(
                api_url,
                json={"query": TRANSACTION_EVENTS_QUERY, "variables": {"id": transaction_id}},
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.config.http_timeout,
            )
            document = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        data = document.get("data") if isinstance(document, dict) else None
        item = data.get("transaction") if isinstance(data, dict) else None
        events = item.get("events") if isinstance(item, dict) else None
        if not isinstance(events, list):
            return None
        kind = REQUEST_EVENT[event]
        return {
            str(e.get("pspReference") or "")
            for e in events
            if isinstance(e, dict) and e.get("type") == kind
        } - {""}

    async def _dispatch(
        self,
        event: WebhookEvent,
        api_url: str,
        body: bytes,
        payload: Any,
        version: SaleorVersion | None,
    ) -> dict[str, Any]:
        if event is WebhookEvent.PAYMENT_GATEWAY_INITIALIZE_SESSION:
            assert isinstance(payload, PaymentGatewayInitializeSession)
            return await self.handlers.gateway_initialize(api_url, payload)
        if event is WebhookEvent.TRANSACTION_INITIALIZE_SESSION:
            assert isinstance(payload, TransactionSession)
            return await self.handlers.transaction_initialize(api_url, payload, version)
        if event is WebhookEvent.TRANSACTION_PROCESS_SESSION:
            assert isinstance(payload, TransactionSession)
            return await self.handlers.transaction_process(api_url, payload, version)
        assert isinstance(payload, TransactionActionRequest)
        return await self.handlers.action_requested(api_url, event, payload, body)

    async def app_event(self, request: Request) -> Response:
        """APP_DELETED / APP_STATUS_CHANGED (async webhooks): forget or pause a Saleor."""
        event_name = request.headers.get("saleor-event", "").strip().lower()
        try:
            api_url, body = await self._verified(request, event_name)
        except _Reject as reject:
            return _error(reject.status, reject.message)
        if event_name not in ("app_deleted", "app_status_changed"):
            return _error(400, "unexpected Saleor-Event")
        try:
            document = loads(body)
        except ValueError:
            document = None
        app = document.get("app") if isinstance(document, dict) else None
        if event_name == "app_deleted":
            # Forget the token: nothing is reported or done for this Saleor any more.
            self.store.delete_installation(api_url)
            self.verifier.forget(api_url)
            log.warning("saleor.app_deleted", api_url=api_url)
        else:
            active = app.get("isActive") if isinstance(app, dict) else None
            if not isinstance(active, bool):
                return _error(400, "app.isActive is required")
            self.store.set_installation_active(api_url, active)
            log.warning("saleor.app_status_changed", api_url=api_url, active=active)
        return JSONResponse({"success": True})

    async def order_fully_paid(self, request: Request) -> Response:
        """ORDER_FULLY_PAID (async): record the sale, answer, then issue its cards.

        The sale is durable before the answer, so a crash after it leaves a ``received``
        sale that the maintenance pass issues; a redelivery (Saleor retries an async webhook
        that failed, and staff can redeliver one) finds the same cards (``selling.py``)."""
        assert self.selling is not None  # the route exists only when selling is on
        try:
            api_url, body = await self._verified(request, "order_fully_paid")
        except _Reject as reject:
            return _error(reject.status, reject.message)
        except _KeysDown:
            return _error(503, "cannot verify the signature now")  # Saleor retries it whole
        installation = self.store.get_installation(api_url)
        if installation is not None and not installation.active:
            self.store.set_installation_active(api_url, True)
        try:
            sale = self.selling.receive(api_url, loads(body))
        except ValueError as exc:  # PayloadError is a ValueError; so is unreadable JSON
            log.warning("saleor.sale_payload_refused", error=str(exc))
            return _error(400, str(exc))
        if sale is None:
            return JSONResponse({"success": True})
        selling = self.selling

        async def issue_then_flush() -> None:
            await selling.issue(sale)
            await self.flush_reports()

        return JSONResponse({"success": True}, background=BackgroundTask(issue_then_flush))

    async def fourws_callback(self, request: Request) -> Response:
        body = await request.body()
        gateways = self.gateways()
        for index, gateway in enumerate(gateways):
            try:
                result = await gateway.handle_callback(request.url.path, body)
                break
            except CallbackRejected as exc:
                # 404: another channel's ledger may know the operation.
                if exc.status_code != 404 or index == len(gateways) - 1:
                    return Response(status_code=exc.status_code)
        return Response(status_code=result.status_code, background=BackgroundTask(self.react))

    # -- lifecycle -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._flush_wanted = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        task = asyncio.create_task(self._flush_loop(self._flush_wanted))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # Work that outlived its (pending) answer gets a chance to finish its money step;
            # what does not is resumed by the runner after a restart.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.handlers.drain(), timeout=self.config.sync_budget)
            self._flush_wanted = None
            self._loop = None

    async def maintain(self) -> None:
        """One maintenance pass: sweep and reconcile payments, finish pending actions,
        re-hold the rest of partial charges, prune old rows, then flush reports."""
        for step in (
            *(gateway.maintain for gateway in self.gateways()),
            self.verify_held,
            self.handlers.run_pending,
            self.handlers.keep_remainders,
            *self._selling_steps(),
        ):
            try:
                await step()
            except Exception as exc:  # the next pass tries again
                log.error("saleor.maintenance_failed", step=step.__name__, error=repr(exc))
        self.store.prune(self.clock.now() - timedelta(seconds=self.config.retention))
        await self.flush_reports()

    async def _flush_loop(self, wanted: asyncio.Event) -> None:
        interval = self.config.maintenance_interval or None
        loop = asyncio.get_running_loop()
        next_maintenance = loop.time() + (interval or 0)
        while True:
            timeout = max(0.0, next_maintenance - loop.time()) if interval else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wanted.wait(), timeout=timeout)
            wanted.clear()
            if interval and loop.time() >= next_maintenance:
                next_maintenance = loop.time() + interval
                await self.maintain()
            else:
                await self.react()


class _KeysDown(Exception):
    def __init__(self, api_url: str, body: bytes) -> None:
        super().__init__(api_url)
        self.api_url = api_url
        self.body = body


class _EmptyRetry(Exception):
    def __init__(self, api_url: str) -> None:
        super().__init__(api_url)
        self.api_url = api_url


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _permission_denied(document: Any) -> bool:
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return False
    for error in errors:
        extensions = error.get("extensions") if isinstance(error, dict) else None
        exception = extensions.get("exception") if isinstance(extensions, dict) else None
        if isinstance(exception, dict) and exception.get("code") == "PermissionDenied":
            return True
    return False


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and bool(parts.netloc)


def create_app(
    config: AppConfig,
    gateway: Gateway,
    *,
    store: AppStore | None = None,
    http: httpx.AsyncClient | None = None,
    clock: Clock | None = None,
    channel_gateways: Mapping[str, Gateway] | None = None,
    deliver_giftcards: DeliverGiftcards | None = None,
) -> Starlette:
    """Build the App. ``app.state.saleor`` is the ``SaleorApp`` (tests flush reports with it).

    ``http`` is the client used to reach Saleor (JWKS, GraphQL); inject one with a
    ``MockTransport`` or ``ASGITransport`` to talk to a fake Saleor in-process.
    ``channel_gateways`` gives Saleor channels (by slug) their own 4WS tenant/entity;
    other channels use ``gateway``. ``deliver_giftcards(sale, cards, pdf_url)`` hands sold
    cards to the buyer when ``config.sell_giftcards`` is on (``selling.py``).
    """
    saleor = SaleorApp(
        config=config,
        store=store or AppStore(config.store_path),
        gateway=gateway,
        http=http or httpx.AsyncClient(timeout=config.http_timeout),
        clock=clock or SystemClock(),
        channel_gateways=dict(channel_gateways or {}),
        deliver_giftcards=deliver_giftcards,
    )
    routes: list[BaseRoute] = [
        Route("/", saleor.home, methods=["GET"]),
        Route(MANIFEST_PATH, saleor.manifest, methods=["GET"]),
        Route(REGISTER_PATH, saleor.register, methods=["POST"]),
        Route(
            config.callback_path + "/{operation_id}/{token}",
            saleor.fourws_callback,
            methods=["POST"],
        ),
    ]
    for event, path in WEBHOOK_PATHS.items():
        routes.append(Route(path, saleor.webhook(event), methods=["POST"]))
    routes.append(Route(APP_EVENTS_PATH, saleor.app_event, methods=["POST"]))
    if saleor.selling is not None:
        routes.append(Route(ORDER_FULLY_PAID_PATH, saleor.order_fully_paid, methods=["POST"]))
    if config.backoffice:
        payments = getattr(gateway, "payments", None)
        if payments is None:
            log.warning(
                "saleor.backoffice_unavailable",
                hint="the gateway exposes no payments ledger (gateway.payments): the back"
                " office is not served",
            )
        else:
            console = backoffice_app(config, saleor.store, saleor.http, saleor.clock, payments)
            routes.append(Mount(BACKOFFICE_PATH, app=console))
            saleor.backoffice_mounted = True
    app = Starlette(routes=routes, lifespan=saleor.lifespan)
    app.state.saleor = saleor
    return app
