"""An in-process stand-in for Saleor: signs webhooks, serves a JWKS, records GraphQL calls.

Signing follows Saleor's ``JWTManager.jws_encode`` (PyJWT, RS256, detached payload,
``{"kid": ..., "b64": false, "crit": ["b64"]}`` headers): the App's verifier is our own
code, the signer here is PyJWT, so a mismatch between the two fails the tests.
"""

from __future__ import annotations

import json
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
        if token not in self.valid_tokens:
            return JSONResponse(
                {"data": None, "errors": [{"message": "Invalid token"}]}, status_code=401
            )
        if "app {" in query or "app{" in query:
            return JSONResponse({"data": {"app": {"id": APP_ID}}})
        if "transactionEventReport" in query:
            variables = document["variables"]
            self.reports.append(Report(token=token, variables=variables))
            if self.report_errors:
                error = self.report_errors.pop(0)
                body = {"data": {"transactionEventReport": {"errors": [error]}}}
                return Response(dumps(body), media_type="application/json")
            key = (variables["pspReference"], variables["type"], str(variables.get("amount")))
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

    def reports_of(self, transaction_id: str) -> list[dict[str, Any]]:
        return [r.variables for r in self.reports if r.variables["id"] == transaction_id]


# -- payloads shaped like Saleor's subscription results --------------------------------------


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
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "version": SALEOR_VERSION,
        "issuedAt": issued_at,
        "data": {"code": code} if code is not None else None,
        "merchantReference": transaction_id,
        "customerIpAddress": "203.0.113.7",
        "transaction": {"id": transaction_id, "pspReference": ""},
        "action": {"amount": amount, "currency": currency, "actionType": action_type},
        "sourceObject": checkout(amount, currency),
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
