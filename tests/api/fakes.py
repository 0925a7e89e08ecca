"""Test doubles for the 4WS API: fixtures, a scripted MockTransport handler, curl parsing.

The fixtures under ``tests/fixtures/4ws/`` are the JSON and JS-literal examples of the
reference copied byte for byte; the scripted handler answers with them (or with faults) so
that every client test runs in-process through ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
import random
import re
import shlex
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from fourws_pay.api import wirejson
from fourws_pay.api.client import AsyncClient, Client
from fourws_pay.clock import ManualClock
from fourws_pay.settings import RetryPolicy, Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "4ws"

# Secrets the client is given; none of them may ever show up in logs or error texts.
PASSWORD = "pw-S3cret-fixture"
TOKEN = "tok-S3cret-fixture"
CALLBACK_SECRET = "cbS3cretFixtureToken0123456789"
CALLBACK_URL = f"https://shop.example/fourws/callback/op-42/{CALLBACK_SECRET}"
SEED = 20260101


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def fixture_json(name: str) -> Any:
    """A JSON fixture as 4WS bodies are parsed: non-integers are Decimal."""
    return wirejson.loads(fixture_text(name))


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def parse_js_literal(text: str) -> Any:
    """Parse the relaxed JavaScript object literals of the reference.

    Handles what the published examples use: an ``Example:`` prefix, ``//`` comments,
    unquoted keys, trailing commas, and bare numbers with a leading zero (kept as strings,
    which is what the legacy example means by ``0987654321``).
    """
    text = text.strip()
    if text.startswith("Example:"):
        text = text[len("Example:") :]
    out: list[str] = []
    pos = 0
    for match in _STRING.finditer(text):
        out.append(_relax(text[pos : match.start()]))
        out.append(match.group(0))
        pos = match.end()
    out.append(_relax(text[pos:]))
    return json.loads("".join(out), parse_float=Decimal)


def _relax(chunk: str) -> str:
    chunk = re.sub(r"//[^\n]*", "", chunk)
    chunk = re.sub(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)\s*:", r'\1"\2":', chunk)
    chunk = re.sub(r",(\s*[}\]])", r"\1", chunk)
    return re.sub(r"(?<![\w.])(0\d+)(?![\w.])", r'"\1"', chunk)


def parse_curl(text: str) -> tuple[str, str, list[tuple[str, str]], str | None]:
    """(method, url, headers in order, --data-raw body) of a published curl example."""
    tokens = shlex.split(text.replace("\\\n", " "))
    method, url, data = "GET", "", None
    headers: list[tuple[str, str]] = []
    it = iter(tokens[1:])
    for token in it:
        if token == "--request":
            method = next(it)
        elif token == "--header":
            name, _, value = next(it).partition(":")
            headers.append((name.strip(), value.strip()))
        elif token == "--data-raw":
            data = next(it)
        elif token.startswith("-"):
            continue
        else:
            url = token
    return method, url, headers, data


def query_items(url: str | httpx.URL) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(str(url)).query, keep_blank_values=True)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "documents_base_url": "https://tenant.example",
        "application_id": "APP-ID-1",
        "namespace": "NS1",
        "language_id": "IT",
        "username": "api.user",
        "password": PASSWORD,
        "company_id": "XXXX",
        "site_id": "500",
        "entity_code": "440",
        "retry": RetryPolicy(max_attempts=3, backoff_base=0.5, backoff_max=8.0),
    }
    values.update(overrides)
    return Settings(**values)


def curl_placeholders(settings: Settings) -> dict[str, str]:
    return {
        "{{APPLICATION_ID}}": settings.application_id,
        "{{NAMESPACE}}": settings.namespace,
        "{{LANGUAGE}}": settings.language_id,
        "{{USERNAME}}": settings.username,
        "{{PASSWORD}}": settings.password.get_secret_value(),
        "{{COMPANY_ID}}": settings.company_id,
        "{{SITE_ID}}": settings.site_id,
        "<token>": TOKEN,
    }


def substitute(text: str, mapping: dict[str, str]) -> str:
    for key, value in mapping.items():
        text = text.replace(key, value)
    return text


# ----------------------------------------------------------------------------- replies

Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    content = body if isinstance(body, bytes) else wirejson.dumps(body).encode()
    return _fresh(status, content, headers)


def fixture_reply(name: str, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return _fresh(status, fixture_text(name).encode(), headers)


def raw_reply(content: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return _fresh(status, content, headers)


def _fresh(status: int, content: bytes, headers: dict[str, str] | None) -> Reply:
    """A reply factory: each use builds a new Response (a Response can be read once)."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}

    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=all_headers, request=request)

    return reply


def fail(exc_type: type[httpx.TransportError], message: str = "simulated") -> Reply:
    """A reply that raises an httpx transport error instead of answering."""

    def reply(request: httpx.Request) -> httpx.Response:
        raise exc_type(message, request=request)

    return reply


class _BrokenStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that starts, then the connection drops."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")

    async def __aiter__(self) -> Any:
        yield self.first
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def broken_body_reply(first: bytes = b'{"success": true, "que') -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_BrokenStream(first), request=request)

    return reply


def login_body(token: str = TOKEN, expires_in_ms: int | None = 285000) -> dict[str, Any]:
    body = dict(fixture_json("dm_login_response.json"))
    body["token"] = token
    if expires_in_ms is None:
        body.pop("expiresInMS")
    else:
        body["expiresInMS"] = expires_in_ms
    return body


class FakeFourWS:
    """A scripted 4WS: replies per route, in order, the last one repeating.

    Routes are the ``cmd`` of a Documents API call, or ``"METHOD /path"`` for Data
    management. Every request is recorded. Login answers with fresh tokens
    (``tok-S3cret-fixture-1``, ``-2``...) unless scripted otherwise.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.requests: list[httpx.Request] = []
        self.routes: dict[str, list[Reply]] = {}
        self.logins = 0

    @property
    def login_route(self) -> str:
        return f"POST {self.settings.path_login}"

    def on(self, route: str, *replies: Reply) -> FakeFourWS:
        self.routes.setdefault(route, []).extend(replies)
        return self

    @staticmethod
    def route_of(request: httpx.Request) -> str:
        cmd = request.url.params.get("cmd")
        if request.url.path.endswith("/api") and cmd:
            return cmd
        return f"{request.method} {request.url.path}"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        route = self.route_of(request)
        script = self.routes.get(route)
        if not script:
            if route == self.login_route:
                self.logins += 1
                return httpx.Response(
                    200, json=_jsonable(login_body(f"{TOKEN}-{self.logins}")), request=request
                )
            return httpx.Response(404, json={"message": f"no route {route}"}, request=request)
        if route == self.login_route:
            self.logins += 1
        reply = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(reply, httpx.Response):
            return reply
        return reply(request)

    def sent(self, route: str) -> list[httpx.Request]:
        return [r for r in self.requests if self.route_of(r) == route]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def _jsonable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in body.items()}


def make_client(fake: FakeFourWS, *, clock: ManualClock | None = None, seed: int = SEED) -> Client:
    return Client(
        fake.settings,
        transport=fake.transport(),
        clock=clock or ManualClock(),
        rng=random.Random(seed),
    )


def make_async_client(
    fake: FakeFourWS, *, clock: ManualClock | None = None, seed: int = SEED
) -> AsyncClient:
    return AsyncClient(
        fake.settings,
        transport=fake.transport(),
        clock=clock or ManualClock(),
        rng=random.Random(seed),
    )


def expected_backoffs(policy: RetryPolicy, count: int, seed: int = SEED) -> list[float]:
    """The waits full-jitter exponential backoff must produce with this seed."""
    rng = random.Random(seed)
    return [
        rng.uniform(0, min(policy.backoff_max, policy.backoff_base * 2**i)) for i in range(count)
    ]
