"""``fourws_pay.serving.ThreadServer``, the one thread-server helper, and the two
listeners built on it (the CLI's callback inbox and the test receiver)."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from fourws_pay.cli.receiver import CallbackListener
from fourws_pay.errors import ConfigurationError
from fourws_pay.serving import ThreadServer
from fourws_pay.testing.receiver import CallbackReceiver


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def test_url_is_known_before_serving_and_answers_once_started() -> None:
    server = ThreadServer(hello)
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.port > 0
    with server:
        assert httpx.get(server.url + "/ping", timeout=5).text == "/ping"
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/ping", timeout=5)


def test_listening_socket_is_tcp_so_answers_are_not_delayed() -> None:
    """asyncio turns Nagle off (TCP_NODELAY) on accepted connections only when the listening
    socket says IPPROTO_TCP; a pre-bound socket with proto 0 cost ~40 ms per answer."""
    with ThreadServer(hello) as server:
        (listening,) = server.server.servers[0].sockets
        assert listening.proto == socket.IPPROTO_TCP


def test_a_taken_port_is_a_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            ThreadServer(hello, port=port)


def test_on_started_runs_before_start_returns() -> None:
    seen: list[int] = []
    server = ThreadServer(hello)
    server.on_started = lambda: seen.append(server.port)
    with server:
        assert seen == [server.port]


def test_cli_listener_hands_out_urls_before_listening_and_checks_the_token() -> None:
    listener = CallbackListener()
    url = listener.url("generate")  # what a command gives 4WS before it listens
    assert url.startswith(listener.local_url + "/generate/")
    with listener:
        assert httpx.post(url + "x", content=b"{}", timeout=5).status_code == 404
        ok = httpx.post(url + "?q=1", content=b'{"success": true}', timeout=5)
        assert ok.status_code == 200
        assert ok.json() == {"success": True}
        assert listener.get_nowait("generate") == b'{"success": true}'
        too_big = httpx.post(url, content=b"x" * (10 * 1024 * 1024 + 1), timeout=10)
        assert too_big.status_code == 413
        assert listener.get_nowait("generate") is None


def test_cli_listener_routes_the_other_prefix() -> None:
    calls: list[tuple[str, bytes]] = []

    def other(path: str, body: bytes) -> int:
        calls.append((path, body))
        return 202

    with CallbackListener(other_prefix="/pay/", other=other) as listener:
        answer = httpx.post(listener.local_url + "/pay/op_1/tok", content=b"{}", timeout=5)
    assert answer.status_code == 202
    assert calls == [("/pay/op_1/tok", b"{}")]


def test_test_receiver_records_posts() -> None:
    with CallbackReceiver(status=201) as rx:
        assert httpx.post(rx.url + "/cb?x=1", content=b'{"a": 1}', timeout=5).status_code == 201
        (got,) = rx.wait_for(1, timeout=5)
    assert (got.path, got.query, got.json()) == ("/cb", "x=1", {"a": 1})
