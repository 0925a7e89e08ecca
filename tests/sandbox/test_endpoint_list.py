"""``fourws_pay.api.endpoints.ENDPOINTS`` is the one list of 4WS operations (issue 22).

The client core, the sandbox's router and fault plan and the CLI's error hints all derive
from it; these tests fail as soon as one of them names an endpoint the list lacks or misses
one it has, e.g. when someone types a list of names again.
"""

from __future__ import annotations

import re

import httpx
import pytest

from fourws_pay.api.endpoints import ENDPOINTS, Endpoint
from fourws_pay.cli import main as cli_main
from fourws_pay.sandbox import Sandbox, app, faults
from fourws_pay.settings import Settings

NAMES = {e.name for e in ENDPOINTS}


def test_the_list_is_well_formed() -> None:
    assert len(NAMES) == len(ENDPOINTS)
    fields = Settings.model_fields
    for e in ENDPOINTS:
        assert e.family in ("documents", "data"), e
        assert e.method in ("GET", "POST", "DELETE"), e
        prefix = "cmd_" if e.family == "documents" else "path_"
        assert e.setting.startswith(prefix), e
        assert e.setting in fields, e
        assert fields[e.setting].annotation is str, e
    # the asynchronous services of the reference, the ones that answer on a callback
    assert {e.name for e in ENDPOINTS if e.callback} == {
        "update_giftcard",
        "generate_giftcards",
        "giftcard_pdf",
    }


def _send_anonymously(sb: Sandbox, endpoint: Endpoint) -> httpx.Response:
    """A request to the endpoint's address without credentials: refused, but logged."""
    address = endpoint.address(sb.settings)
    with httpx.Client(transport=sb.transport(), base_url=sb.settings.documents_base_url) as http:
        if endpoint.family == "documents":
            return http.request(endpoint.method, "/api", params={"cmd": address})
        path = re.sub(r"\{\w+\}", "x", address)
        return http.request(endpoint.method, sb.settings.data_url + path)


def test_the_sandbox_routes_exactly_the_listed_endpoints() -> None:
    sb = Sandbox()
    for endpoint in ENDPOINTS:
        response = _send_anonymously(sb, endpoint)
        assert response.status_code == 401, endpoint.name
    assert [r.endpoint for r in sb.requests] == [e.name for e in ENDPOINTS]

    routes = app.SandboxRoutes(sb, inprocess=True)
    documents = {name for name, _ in [*routes.get_cmds.values(), *routes.post_cmds.values()]}
    assert documents == {e.name for e in ENDPOINTS if e.family == "documents"}
    paths = {
        route.path
        for route in routes.routes()
        if getattr(route, "path", "/api") != "/api" and not route.path.startswith("/_sandbox/")
    }
    assert paths == {e.address(sb.settings) for e in ENDPOINTS if e.family == "data"}
    assert {e.name for e in ENDPOINTS if e.callback} == app.ASYNC_ENDPOINTS


def test_faults_are_accepted_for_exactly_the_listed_endpoints() -> None:
    assert NAMES | {"*"} == faults.ENDPOINT_NAMES
    plan = faults.FaultPlan()
    for name in NAMES:
        plan.add(name, faults.Fault.latency(0))
    with pytest.raises(ValueError, match="endpoint"):
        plan.add("get_gift_card", faults.Fault.latency(0))


def test_the_cli_classifies_every_listed_endpoint() -> None:
    data = {e.name for e in ENDPOINTS if e.family == "data"}
    assert data == cli_main.DATA_API_ENDPOINTS
    assert data == {"login", "insert_barcode", "sku_from_barcode", "delete_barcode"} | {
        "generate_missing_barcodes"
    }
