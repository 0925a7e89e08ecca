"""Opt-in end-to-end test against a real Saleor 3.24 (marker ``saleor_e2e``).

It is *opt-in*, not a service test: without a Saleor checkout it skips with the reason,
and ``FOURWS_PAY_REQUIRE_SERVICES=1`` does not turn that skip into a failure (a Saleor
checkout is not one of the services CI provides). Run it with::

    FOURWS_PAY_SALEOR_SRC=/path/to/saleor \
    FOURWS_PAY_SALEOR_PYTHON=/root/.pyenv/versions/3.12.1/bin/python \
    pytest plugins/saleor/tests/test_saleor_e2e.py -m saleor_e2e -v

``FOURWS_PAY_SALEOR_SRC`` is a Saleor source tree of the pinned release (3.24.x) whose
dependencies are installed for ``FOURWS_PAY_SALEOR_PYTHON`` (Python 3.12). PostgreSQL must
accept ``FOURWS_PAY_SALEOR_DATABASE_URL`` (default
``postgres://postgres:postgres@127.0.0.1:5432/fourws_saleor_e2e``; the database is
recreated by ``migrate``). No Celery broker is configured, so Saleor runs its tasks eagerly
in-process, including the retry of a sync webhook answered >= 500.

What runs: Saleor (uvicorn, ``saleor.asgi``) on a free loopback port with ``populatedb``
data; the App in this process (uvicorn in a thread) against the 4WS sandbox, behind a small
proxy that can lose one answer (a 502 after the App did its work, as a timing-out proxy
would) and records every body it forwards. Then, through Saleor's own GraphQL API:
install (``appInstall``), ``paymentGatewayInitialize``, ``transactionInitialize``
(AUTHORIZATION), ``checkoutComplete``, two partial charges (``transactionRequestAction``),
cancel of the rest, a refund whose answer is lost (Saleor retries it with an empty body),
and ``transactionInitialize`` (CHARGE). Each step checks the amounts Saleor itself shows.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

PINNED_RELEASE = "3.24"
DEFAULT_PYTHON = "/root/.pyenv/versions/3.12.1/bin/python"
DEFAULT_DATABASE = "postgres://postgres:postgres@127.0.0.1:5432/fourws_saleor_e2e"
CARD = "2000000099991"
STAFF = ("staff@example.com", "e2e-password-1")

pytestmark = pytest.mark.saleor_e2e


def unavailable_reason(environ: Mapping[str, str]) -> str | None:
    """Why the real-Saleor test cannot run here, or None when it can.

    Deliberately independent of ``FOURWS_PAY_REQUIRE_SERVICES``: this test is opt-in.
    """
    source = environ.get("FOURWS_PAY_SALEOR_SRC", "")
    if not source:
        return (
            "real Saleor not available: set FOURWS_PAY_SALEOR_SRC to a Saleor "
            f"{PINNED_RELEASE} source tree (opt-in, see plugins/saleor/README.md)"
        )
    root = Path(source)
    if not (root / "manage.py").is_file() or not (root / "saleor" / "__init__.py").is_file():
        return f"FOURWS_PAY_SALEOR_SRC={source} is not a Saleor source tree"
    version = _source_version(root)
    if not version.startswith(PINNED_RELEASE + "."):
        return f"Saleor at {source} is {version or 'unknown'}, the test pins {PINNED_RELEASE}.x"
    python = environ.get("FOURWS_PAY_SALEOR_PYTHON", DEFAULT_PYTHON)
    if not Path(python).is_file():
        return f"no Python 3.12 for Saleor at {python} (FOURWS_PAY_SALEOR_PYTHON)"
    return None


def _source_version(root: Path) -> str:
    for line in (root / "saleor" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return ""


def test_the_opt_in_skip_does_not_depend_on_required_services() -> None:
    """``FOURWS_PAY_REQUIRE_SERVICES=1`` must not make the missing Saleor a failure."""
    reason = unavailable_reason({"FOURWS_PAY_REQUIRE_SERVICES": "1"})
    assert reason is not None
    assert "FOURWS_PAY_SALEOR_SRC" in reason


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.5)  # waiting for a real server process to boot, not for app logic
    raise TimeoutError(f"{url} did not come up")


@dataclass
class Proxy:
    """Forwards to the App; can replace one answer by a 502 after the App handled it."""

    app: Any
    lose_next: set[str] = field(default_factory=set)  # Saleor-Event values
    seen: list[tuple[str, bytes, int]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.requests import Request
        from starlette.responses import Response

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        body = await request.body()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://app"
        ) as client:
            answer = await client.request(
                request.method,
                request.url.path,
                content=body,
                headers={k: v for k, v in request.headers.items() if k != "host"},
            )
        event = request.headers.get("saleor-event", "")
        status = answer.status_code
        if event in self.lose_next:
            self.lose_next.discard(event)
            status = 502
        self.seen.append((event, body, status))
        response = Response(
            answer.content if status != 502 else b"bad gateway",
            status_code=status,
            media_type=answer.headers.get("content-type"),
        )
        await response(scope, receive, send)


@dataclass
class RealSaleor:
    url: str
    token: str = ""

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = httpx.post(
            self.url, json={"query": query, "variables": variables}, headers=headers, timeout=60
        )
        document: dict[str, Any] = response.json()
        assert not document.get("errors"), document["errors"]
        data: dict[str, Any] = document["data"]
        return data


@pytest.fixture(scope="module")
def saleor() -> Iterator[RealSaleor]:
    reason = unavailable_reason(os.environ)
    if reason is not None:
        pytest.skip(reason)
    source = Path(os.environ["FOURWS_PAY_SALEOR_SRC"])
    python = os.environ.get("FOURWS_PAY_SALEOR_PYTHON", DEFAULT_PYTHON)
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": os.environ.get("FOURWS_PAY_SALEOR_DATABASE_URL", DEFAULT_DATABASE),
        "SECRET_KEY": "fourws-e2e",
        "DEBUG": "True",  # generates the RSA key that signs webhooks (JWKS)
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "ALLOWED_CLIENT_HOSTS": "127.0.0.1,localhost",
        "PUBLIC_URL": f"http://127.0.0.1:{port}/",
        "HTTP_IP_FILTER_ENABLED": "False",  # the App listens on loopback
        "HTTP_IP_FILTER_ALLOW_LOOPBACK_IPS": "True",
        "CELERY_BROKER_URL": "",
        "DJANGO_SUPERUSER_EMAIL": STAFF[0],
        "DJANGO_SUPERUSER_PASSWORD": STAFF[1],
    }
    manage = [python, "manage.py"]
    for command in (["migrate", "--noinput"], ["populatedb"]):
        subprocess.run(manage + command, cwd=source, env=env, check=True)
    subprocess.run([*manage, "createsuperuser", "--noinput"], cwd=source, env=env, check=False)
    server = subprocess.Popen(
        [python, "-m", "uvicorn", "saleor.asgi:application", "--port", str(port)],
        cwd=source,
        env=env,
    )
    try:
        real = RealSaleor(f"http://127.0.0.1:{port}/graphql/")
        _wait_for(real.url.replace("/graphql/", "/health/"))
        data = real.gql(
            "mutation($e: String!, $p: String!) { tokenCreate(email: $e, password: $p)"
            " { token errors { message } } }",
            e=STAFF[0],
            p=STAFF[1],
        )
        real.token = data["tokenCreate"]["token"]
        yield real
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def app_proxy(saleor: RealSaleor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    import uvicorn
    from fourws_pay_saleor import AppConfig, create_app
    from fourws_pay_saleor.cli import _SandboxGateway

    from fourws_pay.ledger import open_store
    from fourws_pay.payments import AsyncGiftCardPayments
    from fourws_pay.sandbox import Sandbox, sandbox_settings

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    folder = tmp_path_factory.mktemp("saleor-e2e")
    config = AppConfig(
        app_url=base,
        store_path=str(folder / "app.db"),
        allowed_saleor_api_urls=(saleor.url,),
        maintenance_interval=1.0,
    )
    settings = sandbox_settings(callback_base_url=config.url(config.callback_path))
    sandbox = Sandbox(settings=settings, seed="demo")
    sandbox.add_giftcard(CARD, Decimal("1000.00"), currency="USD")
    payments = AsyncGiftCardPayments(
        settings=settings,
        client=sandbox.async_client(),
        store=open_store(f"sqlite:///{folder / 'ledger.db'}"),
    )
    # The App's maintenance loop (every second) lets the sandbox settle and reports.
    app = create_app(config, _SandboxGateway(payments, sandbox))

    async def deliver(url: str, body: bytes) -> int:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=base
        ) as client:
            return (await client.post(url, content=body)).status_code

    sandbox.set_callback_handler(deliver)
    proxy = Proxy(app)
    server = uvicorn.Server(uvicorn.Config(proxy, host="127.0.0.1", port=port, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_for(base + "/api/manifest")
    try:
        yield proxy
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _amounts(saleor: RealSaleor, transaction_id: str) -> dict[str, Decimal]:
    data = saleor.gql(
        "query($id: ID!) { transaction(id: $id) { authorizedAmount { amount }"
        " chargedAmount { amount } canceledAmount { amount } refundedAmount { amount }"
        " chargePendingAmount { amount } refundPendingAmount { amount } } }",
        id=transaction_id,
    )["transaction"]
    return {key: Decimal(str(value["amount"])) for key, value in data.items()}


def _eventually(saleor: RealSaleor, tx: str, field_name: str, wanted: Decimal) -> None:
    """Poll Saleor until the App's loop (sandbox settlement, reports) got it there."""
    deadline = time.monotonic() + 60
    while _amounts(saleor, tx)[field_name] != wanted:
        assert time.monotonic() < deadline, (field_name, _amounts(saleor, tx))
        time.sleep(0.5)  # real processes at work; the outcome is polled, not assumed


def test_real_saleor_flows(saleor: RealSaleor, app_proxy: Proxy) -> None:
    installed = saleor.gql(
        'mutation($url: String!) { appInstall(input: {appName: "4WS gift cards",'
        " manifestUrl: $url, activateAfterInstallation: true, permissions: [HANDLE_PAYMENTS]})"
        " { appInstallation { id status } errors { field message code } } }",
        url=app_proxy.app.state.saleor.config.url("/api/manifest"),
    )["appInstall"]
    assert installed["errors"] == [], installed

    variant = saleor.gql(
        '{ products(first: 1, channel: "default-channel") { edges { node { variants { id } } } } }'
    )["products"]["edges"][0]["node"]["variants"][0]["id"]
    address = {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "streetAddress1": "1 Main St",
        "city": "New York",
        "postalCode": "10001",
        "country": "US",
        "countryArea": "NY",
    }
    checkout = saleor.gql(
        "mutation($v: ID!, $a: AddressInput!) { checkoutCreate(input: {channel:"
        ' "default-channel", email: "ada@example.com", lines: [{quantity: 1, variantId: $v}],'
        " shippingAddress: $a, billingAddress: $a}) { checkout { id shippingMethods { id } }"
        " errors { message } } }",
        v=variant,
        a=address,
    )["checkoutCreate"]["checkout"]
    saleor.gql(
        "mutation($id: ID!, $m: ID!) { checkoutDeliveryMethodUpdate(id: $id, deliveryMethodId: $m)"
        " { errors { message } } }",
        id=checkout["id"],
        m=checkout["shippingMethods"][0]["id"],
    )
    total = Decimal(
        str(
            saleor.gql(
                "query($id: ID!) { checkout(id: $id) { totalPrice { gross { amount } } } }",
                id=checkout["id"],
            )["checkout"]["totalPrice"]["gross"]["amount"]
        )
    )
    gateway = {"id": "fourws-pay.giftcard", "data": {"code": CARD}}
    offer = saleor.gql(
        "mutation($id: ID!, $g: [PaymentGatewayToInitialize!]) { paymentGatewayInitialize("
        "id: $id, paymentGateways: $g) { gatewayConfigs { id data errors { message } } } }",
        id=checkout["id"],
        g=[gateway],
    )["paymentGatewayInitialize"]["gatewayConfigs"][0]
    assert offer["data"]["ok"] is True, offer

    started = saleor.gql(
        "mutation($id: ID!, $g: PaymentGatewayToInitialize!, $amount: PositiveDecimal) {"
        " transactionInitialize(id: $id, action: AUTHORIZATION, amount: $amount,"
        " paymentGateway: $g) { transaction { id } transactionEvent { type message }"
        " errors { message } } }",
        id=checkout["id"],
        g=gateway,
        amount=str(total),
    )["transactionInitialize"]
    assert started["transactionEvent"]["type"] == "AUTHORIZATION_SUCCESS", started
    tx = started["transaction"]["id"]
    order = saleor.gql(
        "mutation($id: ID!) { checkoutComplete(id: $id) { order { id } errors { message } } }",
        id=checkout["id"],
    )["checkoutComplete"]
    assert order["errors"] == [], order

    # Two partial charges of one authorization, then the rest cancelled.
    part = (total / 4).quantize(Decimal("0.01"))
    for times in (1, 2):
        saleor.gql(
            "mutation($id: ID!, $a: PositiveDecimal) { transactionRequestAction(id: $id,"
            " actionType: CHARGE, amount: $a) { errors { message code } } }",
            id=tx,
            a=str(part),
        )
        _eventually(saleor, tx, "chargedAmount", times * part)
    amounts = _amounts(saleor, tx)
    assert amounts["chargedAmount"] == 2 * part
    assert amounts["authorizedAmount"] == total - 2 * part
    saleor.gql(
        "mutation($id: ID!) { transactionRequestAction(id: $id, actionType: CANCEL)"
        " { errors { message code } } }",
        id=tx,
    )
    _eventually(saleor, tx, "canceledAmount", total - 2 * part)
    amounts = _amounts(saleor, tx)
    assert (amounts["authorizedAmount"], amounts["canceledAmount"]) == (
        Decimal(0),
        total - 2 * part,
    )

    # A refund whose answer is lost: Saleor retries (empty body); the outcome still lands.
    app_proxy.lose_next.add("transaction_refund_requested")
    saleor.gql(
        "mutation($id: ID!, $a: PositiveDecimal) { transactionRequestAction(id: $id,"
        " actionType: REFUND, amount: $a) { errors { message code } } }",
        id=tx,
        a=str(part),
    )
    _eventually(saleor, tx, "refundedAmount", part)
    refunds = [(body, status) for event, body, status in app_proxy.seen if "refund" in event]
    print("refund deliveries (body length, status):", [(len(b), s) for b, s in refunds])
    assert refunds[0][1] == 502
    amounts = _amounts(saleor, tx)
    assert amounts["refundedAmount"] == part
    assert amounts["refundPendingAmount"] == 0


def test_a_checkout_of_another_release_is_refused_with_its_version(tmp_path: Path) -> None:
    (tmp_path / "saleor").mkdir()
    (tmp_path / "manage.py").write_text("")
    (tmp_path / "saleor" / "__init__.py").write_text('__version__ = "3.22.1"\n')
    reason = unavailable_reason({"FOURWS_PAY_SALEOR_SRC": str(tmp_path)})
    assert reason is not None
    assert "3.22.1" in reason
    (tmp_path / "saleor" / "__init__.py").write_text('__version__ = "3.24.0-a.0"\n')
    python = tmp_path / "python3.12"
    python.write_text("")
    assert (
        unavailable_reason(
            {"FOURWS_PAY_SALEOR_SRC": str(tmp_path), "FOURWS_PAY_SALEOR_PYTHON": str(python)}
        )
        is None
    )
