"""A whole checkout (check -> reserve -> capture -> settled) vs the bare HTTP calls it needs.

Library side: ``check`` (cache off), ``reserve``, ``capture``, then the sandbox processes its
queue and its 4WS callback reaches ``payments.handle_callback``; done when the operation is
``succeeded``.

Baseline, with a bare ``httpx.Client`` replaying the client's own requests: GET giftcard
(check), GET giftcard (reserve's fresh read), GET giftcard (capture's fresh read), POST
updateGiftcard (same body shape, callback URL and payload; serialised with the client's
``wirejson`` because stdlib json cannot write a Decimal as a JSON number), then the same
queue processing and callback delivery; done when the callback said ``success``.

Both sides use one served sandbox on loopback whose background worker is idle: the bench
triggers queue processing right after the POST, on both sides, and both sides' callbacks
arrive the same way. Rounds alternate. Goal: ratio of medians <= 1.3. Two setups:

- *server thread* (the RESULT): ``start_in_thread`` in the bench process, callbacks
  delivered in-process (``set_callback_handler``), queue processed by ``process_queue()``;
- *server process*: the sandbox in its own interpreter (like 4WS, it does not share the
  bench's GIL), queue processed through its control API (``POST /_sandbox/process``), and
  callbacks POSTed over HTTP to a receiver served by uvicorn in the bench process
  (``payments.callback_app()`` for the library, a bare ASGI function for the baseline).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import _common
import httpx

from fourws_pay import Client, GiftCardPayments, SQLiteStore, make_plugin_manager
from fourws_pay.api import wirejson
from fourws_pay.api.models import GiftCardUpdate
from fourws_pay.payments.models import OperationState
from fourws_pay.sandbox.server import start_in_thread
from fourws_pay.serving import ThreadServer

NAME = "checkout"
GOAL = 1.3
ROUNDS = 12
PER_ROUND = 10  # 120 checkouts per side and setup
BARCODE = "7000000004004"
AMOUNT = Decimal("1.00")


class Setup:
    """Where callbacks go and how queue processing is triggered, for both sides alike."""

    callback_base_url: str | None = None

    def __init__(self) -> None:
        self.raw_settled: dict[str, bool] = {}
        self.payments: GiftCardPayments | None = None

    def raw_callback(self, path: str, body: bytes) -> int:
        self.raw_settled[path.rsplit("/", 1)[-1]] = json.loads(body)["success"] is True
        return 200

    def process_queue(self) -> None:
        raise NotImplementedError


class InThread(Setup):
    def __init__(self, served: Any) -> None:
        super().__init__()
        self.sandbox = served.sandbox
        self.sandbox.set_callback_handler(self.deliver)

    def deliver(self, url: str, body: bytes) -> int:
        path = httpx.URL(url).path
        if "/raw/" in path:
            return self.raw_callback(path, body)
        assert self.payments is not None
        return self.payments.handle_callback(path, body).status_code

    def process_queue(self) -> None:
        self.sandbox.process_queue()


class OwnProcess(Setup):
    def __init__(self, process: _common.SandboxProcess) -> None:
        super().__init__()
        self.control = httpx.Client(base_url=process.url, timeout=10)
        self.callback_app: Any = None
        self.server = ThreadServer(self.receiver, name="bench-callbacks").start()
        self.callback_base_url = f"{self.server.url}/fourws/callback"

    async def receiver(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if "/raw/" not in scope["path"]:
            assert self.payments is not None
            if self.callback_app is None:
                self.callback_app = self.payments.callback_app()
            await self.callback_app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status = self.raw_callback(scope["path"], body)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def process_queue(self) -> None:
        response = self.control.post("/_sandbox/process")
        assert response.json()["callbacks"], response.text

    def close(self) -> None:
        self.control.close()
        self.server.stop()


class TimedStore:
    """Diagnosis only: a store proxy that adds up the time spent in ledger calls."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.ns = 0
        self.transactions = 0
        self.reads = 0

    @contextlib.contextmanager
    def _timed(self, opener: Callable[[], Any]) -> Iterator[Any]:
        t0 = time.perf_counter_ns()
        try:
            with opener() as tx:
                yield tx
        finally:
            self.ns += time.perf_counter_ns() - t0
            self.transactions += 1

    def card_transaction(self, barcode: str) -> Any:
        return self._timed(lambda: self._store.card_transaction(barcode))

    def transaction(self) -> Any:
        return self._timed(self._store.transaction)

    def snapshot(self) -> Any:
        return self._timed(self._store.snapshot)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not name.startswith(("get_", "list_")):
            return attr

        def read(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return attr(*args, **kwargs)
            finally:
                self.ns += time.perf_counter_ns() - t0
                self.reads += 1

        return read


def measure(settings: Any, setup: Setup) -> tuple[list[int], list[int]]:
    """Interleaved checkout timings (ns): (payments, bare calls)."""
    update: dict[str, Any] = {"check_cache_ttl": 0}
    if setup.callback_base_url:
        update["callback_base_url"] = setup.callback_base_url
    settings = settings.model_copy(update=update)
    with tempfile.TemporaryDirectory() as tmp:
        client = Client(settings)
        store = TimedStore(SQLiteStore(Path(tmp) / "ledger.db"))
        payments = setup.payments = GiftCardPayments(
            client=client,
            store=store,
            plugin_manager=make_plugin_manager(load_entrypoints=False),
        )
        get = client.core.documents_request(
            "GET", settings.cmd_get_giftcard, {settings.param_giftcard_barcode: BARCODE}
        )
        get_url = str(get.url.copy_with(query=None))
        get_params = dict(get.url.params)
        headers = {k: v for k, v in get.headers.items() if k.lower() != "host"}
        post = client.core.documents_request("POST", settings.cmd_update_giftcard, body={})
        post_url = str(post.url)
        post_headers = {**headers, "Content-Type": settings.update_giftcard_content_type}
        template = GiftCardUpdate(
            entity_code=settings.entity_code, barcode=BARCODE, amount=-AMOUNT
        ).wire()
        raw = httpx.Client(timeout=10)
        base = settings.callback_base_url.rstrip("/")
        seq = [0]

        def lib() -> None:
            seq[0] += 1
            decision = payments.check(BARCODE, amount=AMOUNT, currency="EUR")
            assert decision.ok, decision
            reservation = payments.reserve(
                BARCODE, amount=AMOUNT, currency="EUR", order_ref=f"L{seq[0]}"
            )
            operation = payments.capture(reservation.id)
            setup.process_queue()
            assert payments.get_operation(operation.id).state is OperationState.SUCCEEDED

        def bare() -> None:
            for _ in range(3):  # check, reserve's fresh read, capture's fresh read
                response = raw.get(get_url, params=get_params, headers=headers)
                assert response.status_code == 200
                assert response.json()["success"] is True
            op_id = f"op_{uuid.uuid4().hex}"
            body = {
                **template,
                "callback": f"{base}/raw/{op_id}",
                "payload": {"operation_id": op_id},
            }
            content = wirejson.dumps(body).encode()
            response = raw.post(post_url, content=content, headers=post_headers)
            assert response.json()["success"] is True
            setup.process_queue()
            assert setup.raw_settled.pop(op_id) is True

        sides: list[tuple[Callable[[], None], list[int]]] = [(lib, []), (bare, [])]
        for _ in range(8):  # warm-up
            for fn, _out in sides:
                fn()
        tick = time.perf_counter_ns
        for n in range(ROUNDS):
            for fn, out in sides if n % 2 else sides[::-1]:
                for _ in range(PER_ROUND):
                    t0 = tick()
                    fn()
                    out.append(tick() - t0)
        lib_ns = sides[0][1]
        per = len(lib_ns) + 8
        print(
            f"  diagnosis: per checkout the ledger took {store.ns / per / 1e6:.2f} ms of "
            f"{sum(lib_ns) / len(lib_ns) / 1e6:.2f} ms (mean) in "
            f"{store.transactions / per:.0f} transactions + {store.reads / per:.0f} plain reads"
        )
        raw.close()
        payments.close()
    return lib_ns, sides[1][1]


def main() -> None:
    _common.header("checkout: check->reserve->capture->settled vs bare HTTP calls")
    with start_in_thread(worker_interval=3600) as served:
        served.sandbox.add_giftcard(BARCODE, amount=Decimal("1000000.00"))
        print("server thread:")
        in_thread = measure(served.settings, InThread(served))
    with _common.SandboxProcess() as process:
        process.add_giftcard(BARCODE, "1000000.00")
        setup = OwnProcess(process)
        print("server process:")
        try:
            own_process = measure(process.settings, setup)
        finally:
            setup.close()

    rows, ratios = [], {}
    for where, (lib_ns, raw_ns) in (("server thread", in_thread), ("server process", own_process)):
        lib_med, raw_med = _common.median(lib_ns) / 1e6, _common.median(raw_ns) / 1e6
        ratios[where] = (lib_med / raw_med, lib_med, raw_med)
        for side, ns in (("checkout (payments)", lib_ns), ("bare HTTP calls", raw_ns)):
            med, tail = _common.median(ns) / 1e6, _common.p95(ns) / 1e6
            rows.append([where, side, len(ns), f"{med:.2f}", f"{tail:.2f}"])
    _common.table(["sandbox", "side", "n", "median ms", "p95 ms"], rows)
    for where, (ratio, lib_med, raw_med) in ratios.items():
        print(f"{where}: ratio of medians {ratio:.3f} ({lib_med:.2f} / {raw_med:.2f} ms)")
    ratio, lib_med, raw_med = ratios["server thread"]
    ratio2, lib2, raw2 = ratios["server process"]
    _common.result(
        NAME,
        f"{ratio:.2f}",
        f"<={GOAL}",
        ratio <= GOAL,
        f"checkout / bare calls medians: {ratio:.2f} ({lib_med:.1f} vs {raw_med:.1f} ms) with "
        f"the sandbox on a thread of the bench process, {ratio2:.2f} ({lib2:.1f} vs "
        f"{raw2:.1f} ms) with it in its own process and callbacks over HTTP",
    )


if __name__ == "__main__":
    main()
