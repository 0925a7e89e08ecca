"""An in-process stand-in for Saleor: signs webhooks, serves a JWKS, records GraphQL calls,
and keeps each transaction's events and amounts the way Saleor 3.24 does.

Signing follows Saleor's ``JWTManager.jws_encode`` (PyJWT, RS256, detached payload,
``{"kid": ..., "b64": false, "crit": ["b64"]}`` headers): the App's verifier is our own
code, the signer here is PyJWT, so a mismatch between the two fails the tests.

What else follows real Saleor, file by file (saleor/saleor, 3.24):

- ``SaleorTransaction.amounts`` -- ``saleor/payment/transaction_item_calculations.py``:
  events grouped by ``pspReference``; a ``*_REQUEST`` counts as pending only until a
  success/failure with the same reference exists; ``CHARGE_SUCCESS`` moves its amount out of
  ``authorized_value``, ``REFUND_SUCCESS`` out of ``charged_value``, ``CANCEL_SUCCESS`` out
  of ``authorized_value`` (which, like ``authorize_pending_value``, never goes below 0);
  ``AUTHORIZATION_ADJUSTMENT`` overwrites the authorized total and
  hides older authorization events; ``CHARGE_BACK`` / ``REFUND_REVERSE`` turn amounts back.
- ``FakeSaleor.request_action`` -- ``handle_transaction_request_task`` in
  ``saleor/webhook/transport/synchronous/transport.py``: an answer >= 500 is retried (Celery
  ``retry_backoff=10``, 5 retries), and -- the bug the App must survive -- the retry goes out
  with an empty body, signed over that empty body. The last answer is then parsed by
  ``create_transaction_event_from_request_and_webhook_response``
  (``saleor/payment/utils.py``): no ``pspReference`` means a ``*_FAILURE`` event that is not
  counted; a bare ``pspReference`` makes the request pending under it; a ``result`` adds
  that event. The request event exists, under no reference, from before the first delivery
  (``transactionRequestAction`` creates it); the App may read a transaction's events
  (``transaction(id:) { events }``, HANDLE_PAYMENTS) to tell which request a retry repeats.
- ``FakeSaleor.initialize`` -- ``create_transaction_event_for_transaction_session``
  (same file): ``*_REQUEST`` answers turn the request event into a pending one.
- ``transactionEventReport`` -- ``deduplicate_event`` (same file): the same reference and
  type again is ``alreadyProcessed`` when the amount matches and an error when it does not;
  a second ``AUTHORIZATION_SUCCESS`` is refused.
- ``FakeCheckout`` -- ``saleor/checkout/payment_utils.py`` and ``saleor/order/utils.py``: a
  checkout is paid by any number of ``TransactionItem``s (each gift card the shopper adds is
  its own ``transactionInitialize``, so its own transaction; a staff ``transactionCreate``
  with ``amountCharged`` is another method, booked as one CHARGE_SUCCESS). Its authorize
  status sums authorized + authorize-pending + charged + charge-pending over them, its
  charge status charged + charge-pending; ``checkoutComplete`` needs the authorize status
  FULL, and an order's statuses leave the pending amounts out (so an order placed while a
  charge is pending is PARTIAL until the charge is reported). Without an
  amount, ``paymentGatewayInitialize`` sends what is still to pay (``amount_to_pay``).
- tokens of an App installed with ``activateAfterInstallation: false`` (and unknown tokens)
  are anonymous to Saleor until the App is activated: ``query { app { id } }`` gets HTTP 200,
  ``app: null`` and a ``PermissionDenied`` error (``saleor/graphql/core/...``: the API
  authenticates active Apps only), not a 401.
- ``me`` (``saleor/graphql/account/schema.py``, ``core/auth_backend.py``): a user's JWT
  answers the user, with ``isStaff`` and ``userPermissions`` as the token grants them (a
  Dashboard token for an App carries the user's and the App's common permissions, and its
  ``app`` claim names the App); an App's token has no user (``me: null``); an unknown,
  expired or foreign JWT is ``me: null`` with an error (PyJWTError is a handled error).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fourws_pay_saleor.jsonutil import dumps, loads
from fourws_pay_saleor.manifest import WEBHOOK_PATHS
from fourws_pay_saleor.payloads import WebhookEvent
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_URL = "http://saleor.test/graphql/"
# What ``saleor.__version__`` says in the release the App was tried against; subscription
# events carry it in their ``version`` field.
SALEOR_VERSION = "3.24.0-a.0"
DOMAIN = "saleor.test"
APP_TOKEN = "app-token-0123456789abcdef"
APP_ID = "QXBwOjQy"


PERMISSION_DENIED = {
    "message": "To access this path, you need one of the following permissions: AUTHENTICATED_APP",
    "extensions": {"exception": {"code": "PermissionDenied"}},
}


def _nulls(query: str) -> dict[str, None]:
    return {"transactionEventReport": None} if "transactionEventReport" in query else {"app": None}


_POOL: list[rsa.RSAPrivateKey] = []


def new_key(index: int = 0) -> rsa.RSAPrivateKey:
    """The ``index``-th key of a pool generated once per test session (RSA keygen is slow)."""
    while len(_POOL) <= index:
        _POOL.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _POOL[index]


@dataclass
class Report:
    token: str
    variables: dict[str, Any]


@dataclass
class Event:
    type: str
    psp: str
    amount: Decimal
    include: bool = True
    message: str = ""


REQUEST_FAILURE = {
    "AUTHORIZATION_REQUEST": "AUTHORIZATION_FAILURE",
    "CHARGE_REQUEST": "CHARGE_FAILURE",
    "REFUND_REQUEST": "REFUND_FAILURE",
    "CANCEL_REQUEST": "CANCEL_FAILURE",
}
ACTION_REQUEST = {
    WebhookEvent.TRANSACTION_CHARGE_REQUESTED: "CHARGE_REQUEST",
    WebhookEvent.TRANSACTION_REFUND_REQUESTED: "REFUND_REQUEST",
    WebhookEvent.TRANSACTION_CANCELATION_REQUESTED: "CANCEL_REQUEST",
}


@dataclass
class SaleorTransaction:
    """One ``TransactionItem``: its events, and the amounts Saleor derives from them."""

    id: str
    # ``available_actions``: replaced by each parsed answer or report that lists them.
    actions: list[str] | None = None
    events: list[Event] = field(default_factory=list)

    def amounts(self) -> dict[str, Decimal]:
        zero = Decimal(0)
        out = dict.fromkeys(
            (
                "authorized",
                "charged",
                "refunded",
                "canceled",
                "authorize_pending",
                "charge_pending",
                "refund_pending",
                "cancel_pending",
            ),
            zero,
        )
        counted = [e for e in self.events if e.include]
        auth = [e for e in counted if e.type.startswith("AUTHORIZATION_")]
        adjustments = [i for i, e in enumerate(auth) if e.type == "AUTHORIZATION_ADJUSTMENT"]
        if adjustments:
            auth = auth[adjustments[-1] :]
        groups: dict[tuple[str, str], dict[str, Event]] = {}
        order: list[tuple[str, str]] = []
        for event in auth + [e for e in counted if not e.type.startswith("AUTHORIZATION_")]:
            kind, _, what = event.type.partition("_")
            if kind == "AUTHORIZATION" and what == "ADJUSTMENT":
                what = "ADJUSTMENT"
            key = (kind, event.psp)
            if key not in groups:
                groups[key] = {}
                order.append(key)
            groups[key][what] = event  # the latest of a kind wins, as in Saleor
        for kind in ("AUTHORIZATION", "CHARGE", "REFUND", "CANCEL"):
            for key in order:
                if key[0] != kind:
                    continue
                group = groups[key]
                if "ADJUSTMENT" in group:
                    out["authorized"] = group["ADJUSTMENT"].amount
                if kind == "CHARGE" and "BACK" in group:
                    out["charged"] -= group["BACK"].amount
                if kind == "REFUND" and "REVERSE" in group:
                    out["charged"] += group["REVERSE"].amount
                    out["refunded"] -= group["REVERSE"].amount
                field_name = {
                    "AUTHORIZATION": "authorized",
                    "CHARGE": "charged",
                    "REFUND": "refunded",
                    "CANCEL": "canceled",
                }[kind]
                previous = {
                    "AUTHORIZATION": None,
                    "CHARGE": "authorized",
                    "REFUND": "charged",
                    "CANCEL": "authorized",
                }[kind]
                pending = {
                    "AUTHORIZATION": "authorize_pending",
                    "CHARGE": "charge_pending",
                    "REFUND": "refund_pending",
                    "CANCEL": "cancel_pending",
                }[kind]
                request, success = group.get("REQUEST"), group.get("SUCCESS")
                failure = group.get("FAILURE")
                if request is not None and success is None and failure is None:
                    out[pending] += request.amount
                    if previous:
                        out[previous] -= request.amount
                if success is not None and (
                    failure is None or self.events.index(success) > self.events.index(failure)
                ):
                    out[field_name] += success.amount
                    if previous:
                        out[previous] -= success.amount
        # recalculate_transaction_amounts: a charge without an authorization (CHARGE at
        # initialize, a staff transactionCreate) leaves no negative authorized amount.
        out["authorized"] = max(out["authorized"], zero)
        out["authorize_pending"] = max(out["authorize_pending"], zero)
        return out

    def add_response(self, request: Event, response: Any, *, session: bool) -> None:
        """Saleor's handling of a sync answer to the request event ``request``."""
        self.events.append(request)
        request.include = False
        psp = response.get("pspReference") if isinstance(response, dict) else None
        result = response.get("result") if isinstance(response, dict) else None
        if session and result and not psp and not str(result).endswith("_ACTION_REQUIRED"):
            self.events.append(
                Event(
                    REQUEST_FAILURE[request.type],
                    "",
                    request.amount,
                    include=False,
                    message=f"Providing `pspReference` is required for {result}",
                )
            )
            return
        if not psp and not (session and result):
            self.events.append(
                Event(
                    REQUEST_FAILURE[request.type],
                    "",
                    request.amount,
                    include=False,
                    message="Missing `pspReference` field in the response.",
                )
            )
            return
        if psp:
            request.psp = str(psp)
        if isinstance(response, dict) and response.get("actions") is not None:
            self.actions = sorted(set(response["actions"]))
        if result is None:
            request.include = True  # pending under the App's reference
            return
        amount = Decimal(str(response.get("amount", request.amount)))
        if result.endswith("_REQUEST"):
            request.type = result
            request.amount = amount
            request.include = True
            return
        self.events.append(
            Event(
                result,
                str(psp or ""),
                amount,
                include=not result.endswith("_FAILURE") or bool(psp),
                message=str(response.get("message", "")),
            )
        )


def _status(covered: Decimal, total: Decimal, *, charge: bool = True) -> str:
    """Saleor's NONE/PARTIAL/FULL(/OVERCHARGED, charge status only) for ``covered`` of
    ``total`` (> 0)."""
    if covered <= 0:
        return "NONE"
    if covered < total:
        return "PARTIAL"
    return "OVERCHARGED" if charge and covered > total else "FULL"


@dataclass
class FakeCheckout:
    """A checkout (or, once completed, its order) and the transactions that pay it."""

    id: str
    total: Decimal
    transaction_ids: list[str] = field(default_factory=list)
    order: bool = False

    def statuses(self, transactions: dict[str, SaleorTransaction]) -> tuple[str, str]:
        """(authorize status, charge status) the way Saleor sums the transactions."""
        amounts = [transactions[t].amounts() for t in self.transaction_ids]
        charged = sum((a["charged"] for a in amounts), Decimal(0))
        if self.order:  # update_order_charge_data / _authorize_data: no pending amounts
            authorized = sum((a["authorized"] for a in amounts), Decimal(0))
        else:
            charged += sum((a["charge_pending"] for a in amounts), Decimal(0))
            authorized = sum(
                (a["authorized"] + a["authorize_pending"] for a in amounts), Decimal(0)
            )
        authorize = _status(authorized + charged, self.total, charge=False)
        return authorize, _status(charged, self.total)

    def amount_to_pay(self, transactions: dict[str, SaleorTransaction]) -> Decimal:
        """What Saleor sends as the amount when the storefront gives none
        (``BaseMutation.get_amount``, saleor/graphql/payment/mutations/base.py): the total
        less, per transaction, the larger of authorized and charged, and what is pending."""
        amount = self.total
        for tx in self.transaction_ids:
            values = transactions[tx].amounts()
            amount -= max(values["authorized"], values["charged"])
            amount -= values["authorize_pending"] + values["charge_pending"]
        return max(amount, Decimal(0))


@dataclass
class FakeSaleor:
    """Holds Saleor's signing key(s) and what the App told it."""

    key: rsa.RSAPrivateKey = field(default_factory=new_key)
    kid: str = "1"
    extra_keys: list[tuple[str, rsa.RSAPrivateKey]] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=lambda: {APP_TOKEN})
    reports: list[Report] = field(default_factory=list)
    events: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    jwks_requests: int = 0
    jwks_down: bool = False
    graphql_failures: list[int] = field(default_factory=list)  # statuses to answer next
    report_errors: list[dict[str, Any]] = field(default_factory=list)
    inactive_tokens: set[str] = field(default_factory=set)
    transactions: dict[str, SaleorTransaction] = field(default_factory=dict)
    deliveries: list[tuple[WebhookEvent, bytes, int]] = field(default_factory=list)
    private_metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # by object id
    metadata_failures: int = 0  # updatePrivateMetadata answers to refuse next
    checkouts: dict[str, FakeCheckout] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # JWT -> ``me``

    def user_token(
        self,
        email: str,
        *,
        is_staff: bool = True,
        permissions: tuple[str, ...] = ("HANDLE_PAYMENTS",),
        app: str | None = None,
    ) -> str:
        """A JWT this Saleor accepts for a user (``app``: minted for that App's page)."""
        claims: dict[str, Any] = {"email": email, "type": "thirdparty" if app else "access"}
        if app is not None:
            claims["app"] = app
            claims["permissions"] = list(permissions)
        header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').rstrip(b"=")
        body = base64.urlsafe_b64encode(dumps(claims).encode()).rstrip(b"=")
        token = f"{header.decode()}.{body.decode()}.sig{len(self.users)}"
        self.users[token] = {
            "email": email,
            "isStaff": is_staff,
            "userPermissions": [{"code": code} for code in permissions],
        }
        return token

    def transaction(self, transaction_id: str) -> SaleorTransaction:
        return self.transactions.setdefault(transaction_id, SaleorTransaction(transaction_id))

    def checkout(self, checkout_id: str, total: Decimal | None = None) -> FakeCheckout:
        """The checkout ``checkout_id`` (made with ``total`` the first time)."""
        if checkout_id not in self.checkouts:
            assert total is not None, f"unknown checkout {checkout_id}"
            self.checkouts[checkout_id] = FakeCheckout(checkout_id, total)
        return self.checkouts[checkout_id]

    def checkout_statuses(self, checkout_id: str) -> tuple[str, str]:
        return self.checkout(checkout_id).statuses(self.transactions)

    def transaction_create(self, checkout_id: str, charged: Decimal, psp: str = "") -> str:
        """Staff ``transactionCreate`` with ``amountCharged``: another payment method, booked
        as one CHARGE_SUCCESS (Saleor's manual adjustment) on a transaction of its own."""
        paying = self.checkout(checkout_id)
        tx = self.transaction(f"staff-{len(self.transactions)}")
        tx.events.append(Event("CHARGE_SUCCESS", psp, charged, message="Manual adjustment"))
        paying.transaction_ids.append(tx.id)
        return tx.id

    async def gateway_initialize(
        self,
        app: httpx.AsyncClient,
        checkout_id: str,
        code: str,
        amount: Decimal | None = None,
        currency: str = "EUR",
    ) -> httpx.Response:
        """``paymentGatewayInitialize`` on a checkout; without ``amount`` Saleor sends what
        is still to pay (``FakeCheckout.amount_to_pay``)."""
        paying = self.checkout(checkout_id)
        if amount is None:
            amount = paying.amount_to_pay(self.transactions)
        payload = gateway_payload(amount, code, currency)
        payload["sourceObject"] = checkout(paying.total, currency, checkout_id)
        return await self.send(app, WebhookEvent.PAYMENT_GATEWAY_INITIALIZE_SESSION, payload)

    def complete(self, checkout_id: str) -> FakeCheckout:
        """``checkoutComplete``: refused unless the transactions cover the total."""
        paying = self.checkout(checkout_id)
        authorize_status, _ = paying.statuses(self.transactions)
        assert authorize_status in ("FULL", "OVERCHARGED"), (
            f"checkoutComplete refused: authorize status {authorize_status}"
        )
        paying.order = True
        return paying

    # -- signing -------------------------------------------------------------------------

    def sign(
        self, body: bytes, key: rsa.RSAPrivateKey | None = None, kid: str | None = None
    ) -> str:
        return jwt.api_jws.encode(
            body,
            key=key or self.key,
            algorithm="RS256",
            headers={"kid": kid or self.kid, "b64": False, "crit": ["b64"]},
            is_payload_detached=True,
        )

    def rotate(self) -> None:
        """Replace the signing key (and kid), as an operator rotating RSA_PRIVATE_KEY."""
        self.kid = str(int(self.kid) + 1)
        self.key = new_key(int(self.kid))

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in [(self.kid, self.key), *self.extra_keys]:
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            jwk.update({"use": "sig", "kid": kid})
            keys.append(jwk)
        return {"keys": keys}

    # -- the ASGI side -------------------------------------------------------------------

    async def _jwks(self, request: Request) -> Response:
        self.jwks_requests += 1
        if self.jwks_down:
            return Response(status_code=503)
        return JSONResponse(self.jwks())

    async def _graphql(self, request: Request) -> Response:
        if self.graphql_failures:
            return Response(status_code=self.graphql_failures.pop(0))
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        document = loads(await request.body())
        query = document.get("query", "")
        if "me {" in query:
            if token in self.users:
                return JSONResponse({"data": {"me": self.users[token]}})
            if token in self.valid_tokens:  # an App is no user
                return JSONResponse({"data": {"me": None}})
            invalid = {
                "message": "Invalid token. Create new one by using tokenCreate mutation.",
                "extensions": {"exception": {"code": "InvalidTokenError"}},
            }
            return JSONResponse({"data": {"me": None}, "errors": [invalid]})
        if token not in self.valid_tokens or token in self.inactive_tokens:
            # Saleor 3.24 authenticates active Apps only; any other token is anonymous, and
            # an App query or mutation is then denied with HTTP 200 (seen on real Saleor).
            return JSONResponse({"data": _nulls(query), "errors": [PERMISSION_DENIED]})
        if "app {" in query or "app{" in query:
            return JSONResponse({"data": {"app": {"id": APP_ID}}})
        if "transaction(id:" in query:
            # A transaction's events, as the App (HANDLE_PAYMENTS) may read them.
            tx_id = document["variables"]["id"]
            known = self.transactions.get(tx_id)
            events = [
                {"type": e.type, "pspReference": e.psp}
                for e in (known.events if known is not None else [])
            ]
            data = {"transaction": {"id": tx_id, "events": events} if known else None}
            return JSONResponse({"data": data})
        if "updatePrivateMetadata" in query:
            # Saleor's updatePrivateMetadata: needs MANAGE_ORDERS on an order (the App has
            # it when it sells cards); items are merged key by key.
            variables = document["variables"]
            if self.metadata_failures:
                self.metadata_failures -= 1
                error = {"field": None, "message": "refused", "code": "GRAPHQL_ERROR"}
                return JSONResponse({"data": {"updatePrivateMetadata": {"errors": [error]}}})
            items = self.private_metadata.setdefault(variables["id"], {})
            for item in variables["input"]:
                items[item["key"]] = item["value"]
            return JSONResponse({"data": {"updatePrivateMetadata": {"errors": []}}})
        if "transactionEventReport" in query:
            variables = document["variables"]
            self.reports.append(Report(token=token, variables=variables))
            if self.report_errors:
                error = self.report_errors.pop(0)
                body = {"data": {"transactionEventReport": {"errors": [error]}}}
                return Response(dumps(body), media_type="application/json")
            key = (variables["pspReference"], variables["type"], str(variables.get("amount")))
            refused = self._book_report(variables)
            if refused:
                body = {"data": {"transactionEventReport": {"errors": [refused]}}}
                return Response(dumps(body), media_type="application/json")
            already = key in self.events
            self.events.setdefault(key, variables)
            body = {
                "data": {
                    "transactionEventReport": {
                        "alreadyProcessed": already,
                        "transactionEvent": {"id": "ev", "pspReference": key[0], "type": key[1]},
                        "errors": [],
                    }
                }
            }
            return Response(dumps(body), media_type="application/json")
        return JSONResponse({"errors": [{"message": "unknown query"}]}, status_code=400)

    def _book_report(self, variables: dict[str, Any]) -> dict[str, Any] | None:
        """``deduplicate_event``: same reference+type is a duplicate or, with another amount,
        an error; a second AUTHORIZATION_SUCCESS is refused."""
        tx = self.transaction(variables["id"])
        amount = Decimal(str(variables.get("amount", "0")))
        for event in tx.events:
            if event.psp == variables["pspReference"] and event.type == variables["type"]:
                if event.amount != amount:
                    return {"code": "INCORRECT_DETAILS", "message": "different amount"}
                return None
        if variables["type"] == "AUTHORIZATION_SUCCESS" and any(
            e.type == "AUTHORIZATION_SUCCESS" for e in tx.events
        ):
            return {"code": "ALREADY_EXISTS", "message": "use AUTHORIZATION_ADJUSTMENT"}
        tx.events.append(
            Event(
                variables["type"],
                variables["pspReference"],
                amount,
                message=variables.get("message", ""),
            )
        )
        if variables.get("availableActions") is not None:
            tx.actions = sorted(set(variables["availableActions"]))
        return None

    def asgi(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/jwks.json", self._jwks, methods=["GET"]),
                Route("/graphql/", self._graphql, methods=["POST"]),
            ]
        )

    def http_client(self) -> httpx.AsyncClient:
        """The client the App uses to reach this Saleor."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.asgi()))

    # -- sending webhooks ----------------------------------------------------------------

    async def install(self, app: httpx.AsyncClient, token: str = APP_TOKEN) -> httpx.Response:
        return await app.post(
            "/api/register",
            json={"auth_token": token},
            headers={"Saleor-Domain": DOMAIN, "Saleor-Api-Url": API_URL},
        )

    async def send(
        self,
        app: httpx.AsyncClient,
        event: WebhookEvent,
        payload: dict[str, Any],
        *,
        body: bytes | None = None,
        signature: str | None = None,
        sign_body: bytes | None = None,
        headers: dict[str, str] | None = None,
        api_url: str = API_URL,
    ) -> httpx.Response:
        """POST a webhook the way Saleor does; overrides let tests break one thing."""
        raw = body if body is not None else dumps(payload).encode()
        all_headers = {
            "Content-Type": "application/json",
            "Saleor-Event": event.value,
            "Saleor-Domain": DOMAIN,
            "Saleor-Api-Url": api_url,
            "Saleor-Signature": signature
            if signature is not None
            else self.sign(sign_body if sign_body is not None else raw),
        }
        all_headers.update(headers or {})
        all_headers = {k: v for k, v in all_headers.items() if v != ""}
        return await app.post(WEBHOOK_PATHS[event], content=raw, headers=all_headers)

    async def initialize(
        self,
        app: httpx.AsyncClient,
        payload: dict[str, Any],
        event: WebhookEvent = WebhookEvent.TRANSACTION_INITIALIZE_SESSION,
    ) -> httpx.Response:
        """transactionInitialize/Process: one try (no retry), the answer booked as Saleor does."""
        source = payload.get("sourceObject") or {}
        if source.get("__typename") == "Checkout":
            total = Decimal(str(source["totalPrice"]["gross"]["amount"]))
            paying = self.checkout(source["id"], total)
            if payload["transaction"]["id"] not in paying.transaction_ids:
                paying.transaction_ids.append(payload["transaction"]["id"])
        response = await self.send(app, event, payload)
        kind = "AUTHORIZATION" if payload["action"]["actionType"] == "AUTHORIZATION" else "CHARGE"
        request = Event(f"{kind}_REQUEST", "", Decimal(str(payload["action"]["amount"])))
        body = _json_or_none(response)
        self.transaction(payload["transaction"]["id"]).add_response(
            request, body if response.status_code < 500 else None, session=True
        )
        return response

    async def request_action(
        self,
        app: httpx.AsyncClient,
        event: WebhookEvent,
        payload: dict[str, Any],
        *,
        lose_answers: int = 0,
        max_retries: int = 5,
        before_retry: Callable[[], Awaitable[Any]] | None = None,
    ) -> list[httpx.Response]:
        """A ``*_REQUESTED`` webhook as Saleor's Celery task sends it, retries included.

        ``lose_answers`` answers are replaced by a 502 on the way back (a proxy timing out
        after the App did its work). Retries carry an empty body, as Saleor's do; the
        request event exists from the start, under no reference (transactionRequestAction
        creates it before the Celery task runs). ``before_retry`` runs in the gap Saleor's
        backoff leaves (some 10 s), e.g. another transaction's request.
        """
        request = Event(ACTION_REQUEST[event], "", Decimal(str(payload["action"]["amount"])))
        tx = self.transaction(payload["transaction"]["id"])
        tx.events.append(request)
        request.include = False
        responses: list[httpx.Response] = []
        body: bytes | None = None
        for _attempt in range(max_retries + 1):
            response = await self.send(app, event, payload, body=body)
            if lose_answers > 0:
                lose_answers -= 1
                response = httpx.Response(502, request=response.request)
            responses.append(response)
            self.deliveries.append(
                (event, body if body is not None else b"<payload>", response.status_code)
            )
            if response.status_code < 500:
                break
            body = b""  # the bug: Saleor re-sends the delivery without its payload
            if before_retry is not None:
                await before_retry()
        last = responses[-1]
        answer = _json_or_none(last) if last.status_code < 500 else None
        tx.events.remove(request)
        tx.add_response(request, answer, session=False)
        return responses

    async def app_event(
        self, app: httpx.AsyncClient, event: str, is_active: bool | None = None
    ) -> httpx.Response:
        """APP_DELETED / APP_STATUS_CHANGED, async webhooks signed like the sync ones."""
        body: dict[str, Any] = {"version": SALEOR_VERSION, "app": {"id": APP_ID}}
        if is_active is not None:
            body["app"]["isActive"] = is_active
        raw = dumps(body).encode()
        return await app.post(
            "/api/webhooks/app-events",
            content=raw,
            headers={
                "Content-Type": "application/json",
                "Saleor-Event": event.lower(),
                "Saleor-Domain": DOMAIN,
                "Saleor-Api-Url": API_URL,
                "Saleor-Signature": self.sign(raw),
            },
        )

    async def order_fully_paid(
        self, app: httpx.AsyncClient, order: dict[str, Any], *, signature: str | None = None
    ) -> httpx.Response:
        """ORDER_FULLY_PAID, an async webhook (one delivery; Saleor retries a failed one)."""
        raw = dumps({"version": SALEOR_VERSION, "order": order}).encode()
        return await app.post(
            "/api/webhooks/order-fully-paid",
            content=raw,
            headers={
                "Content-Type": "application/json",
                "Saleor-Event": "order_fully_paid",
                "Saleor-Domain": DOMAIN,
                "Saleor-Api-Url": API_URL,
                "Saleor-Signature": self.sign(raw) if signature is None else signature,
            },
        )

    def reports_of(self, transaction_id: str) -> list[dict[str, Any]]:
        return [r.variables for r in self.reports if r.variables["id"] == transaction_id]


# -- payloads shaped like Saleor's subscription results --------------------------------------


def order_line(
    line_id: str,
    amount: Decimal,
    quantity: int = 1,
    *,
    giftcard: bool = True,
    currency: str = "EUR",
    item_code: str | None = None,
) -> dict[str, Any]:
    """An order line as ORDER_FULLY_PAID's subscription selects it."""
    metadata = [{"key": "fourws.giftcard", "value": "true"}] if giftcard else []
    if item_code is not None:
        metadata.append({"key": "fourws.item_code", "value": item_code})
    return {
        "id": line_id,
        "quantity": quantity,
        "undiscountedUnitPrice": {"gross": {"amount": amount, "currency": currency}},
        "variant": {"product": {"productType": {"metadata": metadata}}},
    }


def paid_order(
    *lines: dict[str, Any],
    order_id: str = "T3JkZXI6MQ==",
    charge_status: str = "FULL",
    email: str = "buyer@example.com",
) -> dict[str, Any]:
    return {
        "id": order_id,
        "number": "1001",
        "userEmail": email,
        "chargeStatus": charge_status,
        "channel": {"slug": "default-channel"},
        "lines": list(lines),
    }


def checkout(total: Decimal, currency: str = "EUR", checkout_id: str = "Q2hlY2tvdXQ6MQ==") -> Any:
    return {
        "__typename": "Checkout",
        "id": checkout_id,
        "channel": {"slug": "default-channel"},
        "totalPrice": {"gross": {"amount": total, "currency": currency}},
    }


def session_payload(
    transaction_id: str,
    amount: Decimal,
    action_type: str,
    code: str | None,
    *,
    idempotency_key: str | None = "idem-1",
    currency: str = "EUR",
    issued_at: str = "2026-01-01T12:00:00+00:00",
    checkout_total: Decimal | None = None,
    checkout_id: str = "Q2hlY2tvdXQ6MQ==",
) -> dict[str, Any]:
    """``checkout_total``: the checkout's total when this transaction pays only part of it."""
    payload: dict[str, Any] = {
        "version": SALEOR_VERSION,
        "issuedAt": issued_at,
        "data": {"code": code} if code is not None else None,
        "merchantReference": transaction_id,
        "customerIpAddress": "203.0.113.7",
        "transaction": {"id": transaction_id, "pspReference": ""},
        "action": {"amount": amount, "currency": currency, "actionType": action_type},
        "sourceObject": checkout(
            amount if checkout_total is None else checkout_total, currency, checkout_id
        ),
    }
    if idempotency_key is not None:
        payload["idempotencyKey"] = idempotency_key
    return payload


def action_payload(
    transaction_id: str,
    amount: Decimal,
    action_type: str,
    *,
    psp_reference: str = "",
    currency: str = "EUR",
    issued_at: str = "2026-01-01T12:05:00+00:00",
) -> dict[str, Any]:
    return {
        "version": SALEOR_VERSION,
        "issuedAt": issued_at,
        "transaction": {"id": transaction_id, "pspReference": psp_reference},
        "action": {"amount": amount, "currency": currency, "actionType": action_type},
    }


def gateway_payload(amount: Decimal, code: str | None, currency: str = "EUR") -> dict[str, Any]:
    return {
        "version": SALEOR_VERSION,
        "issuedAt": "2026-01-01T11:59:00+00:00",
        "amount": amount,
        "data": {"code": code} if code is not None else None,
        "sourceObject": checkout(amount, currency),
    }


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return loads(response.content)
    except ValueError:
        return None
