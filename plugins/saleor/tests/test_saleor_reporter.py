"""transactionEventReport delivery: retried safely, never lost, never sent twice."""

from __future__ import annotations

from decimal import Decimal

from fake_saleor import APP_TOKEN, session_payload
from fourws_pay_saleor.payloads import WebhookEvent
from fourws_pay_saleor.reporter import REPORT_MUTATION
from saleor_world import CARD, World

INIT = WebhookEvent.TRANSACTION_INITIALIZE_SESSION


async def charge(world: World, tx: str, amount: str = "10.00") -> str:
    response = await world.saleor.send(
        world.client, INIT, session_payload(tx, Decimal(amount), "CHARGE", CARD, idempotency_key=tx)
    )
    assert response.status_code == 200
    psp: str = response.json()["pspReference"]
    return psp


async def test_transient_saleor_errors_are_retried_with_backoff(world: World) -> None:
    psp = await charge(world, "tx-rep1")
    world.saleor.graphql_failures = [503, 502]
    world.clock.slept.clear()
    await world.settle()
    assert [r.variables["pspReference"] for r in world.saleor.reports] == [psp]
    assert world.clock.slept == [0.5, 1.0]
    [row] = world.store.reports("sent")
    assert row.attempts == 3


async def test_a_report_survives_an_outage_and_goes_out_on_the_next_flush(world: World) -> None:
    await charge(world, "tx-rep2")
    attempts = world.state.config.report_max_attempts
    world.saleor.graphql_failures = [500] * attempts
    await world.settle()
    assert world.saleor.reports == []
    [pending] = world.store.reports("pending")
    assert pending.attempts == attempts
    assert pending.last_error == "HTTP 500"

    await world.flush()
    [report] = world.saleor.reports
    assert report.variables["type"] == "CHARGE_SUCCESS"
    assert world.store.reports("pending") == []

    await world.flush()  # nothing left: no duplicate
    assert len(world.saleor.reports) == 1


async def test_a_lost_acknowledgement_is_harmless(world: World) -> None:
    psp = await charge(world, "tx-rep3")
    await world.settle()
    [sent] = world.store.reports("sent")
    # Pretend the acknowledgement never arrived: the row goes back to pending and is resent.
    world.store.update_report(sent.id or 0, "pending", 1, "lost", world.clock.now())
    await world.flush()
    assert [r.variables["pspReference"] for r in world.saleor.reports] == [psp, psp]
    key = (psp, "CHARGE_SUCCESS", "10.00")
    assert key in world.saleor.events  # Saleor recorded it once; the second was deduplicated
    assert len(world.saleor.events) == 1


async def test_a_rejected_report_is_not_retried_forever(world: World) -> None:
    await charge(world, "tx-rep4")
    world.saleor.report_errors = [
        {"field": "id", "message": "Couldn't resolve to a node", "code": "NOT_FOUND"}
    ]
    await world.settle()
    [rejected] = world.store.reports("rejected")
    assert "NOT_FOUND" in (rejected.last_error or "")
    await world.flush()
    assert len(world.saleor.reports) == 1


async def test_a_revoked_token_keeps_reports_until_reinstall(world: World) -> None:
    await charge(world, "tx-rep5")
    world.saleor.valid_tokens = {"new-token"}
    await world.settle()
    assert world.store.reports("pending")
    response = await world.saleor.install(world.client, token="new-token")
    assert response.status_code == 200
    await world.flush()
    assert world.store.reports("pending") == []
    assert world.saleor.reports[-1].token == "new-token"
    assert all(r.token in {APP_TOKEN, "new-token"} for r in world.saleor.reports)


def test_the_mutation_names_every_argument_it_sends() -> None:
    for argument in ("id", "pspReference", "type", "amount", "time", "message"):
        assert f"${argument}" in REPORT_MUTATION
    assert "transactionEventReport(" in REPORT_MUTATION
    assert "alreadyProcessed" in REPORT_MUTATION
