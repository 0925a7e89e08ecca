"""A whole checkout (check -> reserve -> capture -> settled) vs the bare HTTP calls it needs.

Library side: ``check`` (cache off), ``reserve``, ``capture``, then the sandbox processes its
queue and its 4WS callback reaches ``payments.handle_callback``; done when the operation is
``succeeded``.

Baseline, with a bare ``httpx.Client`` replaying the client's own requests: GET giftcard
(check), GET giftcard (reserve's fresh read), GET giftcard (capture's fresh read), POST
updateGiftcard (same body shape, callback URL and payload; serialised with the client's
``wirejson`` because stdlib json cannot write a Decimal as a JSON number), then the same
queue processing and callback delivery; done when the callback said ``success``.

Both sides use one served sandbox on loopback (its background worker idle: the bench calls
``process_queue()`` right after the POST on both sides), and both receive callbacks through
the same in-process handler, so the wait for the callback costs the same. Rounds
alternate. Goal: ratio of medians <= 1.3.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import _common
import httpx

from fourws_pay import Client, GiftCardPayments, SQLiteStore, make_plugin_manager
from fourws_pay.api import wirejson
from fourws_pay.api.models import GiftCardUpdate
from fourws_pay.payments.models import OperationState
from fourws_pay.sandbox.server import start_in_thread

NAME = "checkout"
GOAL = 1.3
ROUNDS = 16
PER_ROUND = 12  # 192 checkouts per side
BARCODE = "7000000004004"
AMOUNT = Decimal("1.00")


def main() -> None:
    _common.header("checkout: check->reserve->capture->settled vs bare HTTP calls")
    with start_in_thread(worker_interval=3600) as served, tempfile.TemporaryDirectory() as tmp:
        sandbox = served.sandbox
        sandbox.add_giftcard(BARCODE, amount=Decimal("1000000.00"))
        settings = served.settings.model_copy(update={"check_cache_ttl": 0})
        client = Client(settings)
        payments = GiftCardPayments(
            client=client,
            store=SQLiteStore(Path(tmp) / "ledger.db"),
            plugin_manager=make_plugin_manager(load_entrypoints=False),
        )
        raw_settled: dict[str, bool] = {}

        def deliver(url: str, body: bytes) -> int:
            """Every 4WS callback of the run, for both sides."""
            path = httpx.URL(url).path
            if "/raw/" in path:
                raw_settled[path.rsplit("/", 1)[-1]] = json.loads(body)["success"] is True
                return 200
            return payments.handle_callback(path, body).status_code

        sandbox.set_callback_handler(deliver)

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
            sandbox.process_queue()
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
            response = raw.post(
                post_url, content=wirejson.dumps(body).encode(), headers=post_headers
            )
            assert response.json()["success"] is True
            sandbox.process_queue()
            assert raw_settled.pop(op_id) is True

        for _ in range(10):  # warm-up
            lib()
            bare()
        lib_ns: list[int] = []
        raw_ns: list[int] = []
        tick = time.perf_counter_ns
        for n in range(ROUNDS):
            sides = ((lib, lib_ns), (bare, raw_ns))
            for fn, out in sides if n % 2 else sides[::-1]:
                for _ in range(PER_ROUND):
                    t0 = tick()
                    fn()
                    out.append(tick() - t0)
        raw.close()
        payments.close()

    lib_med, raw_med = _common.median(lib_ns) / 1e3, _common.median(raw_ns) / 1e3
    lib_p95, raw_p95 = _common.p95(lib_ns) / 1e3, _common.p95(raw_ns) / 1e3
    ratio = lib_med / raw_med
    _common.table(
        ["side", "n", "median ms", "p95 ms"],
        [
            ["checkout (payments)", len(lib_ns), f"{lib_med / 1e3:.2f}", f"{lib_p95 / 1e3:.2f}"],
            ["bare HTTP calls", len(raw_ns), f"{raw_med / 1e3:.2f}", f"{raw_p95 / 1e3:.2f}"],
        ],
    )
    print(f"ratio of medians: {ratio:.3f}  (goal <= {GOAL})")
    _common.result(
        NAME,
        f"{ratio:.2f}",
        f"<={GOAL}",
        ratio <= GOAL,
        f"checkout {lib_med / 1e3:.2f} ms vs bare calls {raw_med / 1e3:.2f} ms (medians)",
    )


if __name__ == "__main__":
    main()
