"""Install edge cases, APP_DELETED / APP_STATUS_CHANGED and pruning (issue 13, item 6)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from fake_saleor import APP_TOKEN, action_payload, session_payload
from fourws_pay_saleor.payloads import WebhookEvent
from fourws_pay_saleor.reporter import PENDING, SENT
from saleor_world import CARD, World

INIT = WebhookEvent.TRANSACTION_INITIALIZE_SESSION
CHARGE = WebhookEvent.TRANSACTION_CHARGE_REQUESTED


async def test_an_app_installed_inactive_is_kept_and_waits_for_activation(
    world: World,
) -> None:
    world.store.delete_installation(world.saleor_api_url)
    world.saleor.inactive_tokens.add(APP_TOKEN)  # activateAfterInstallation: false
    installed = await world.saleor.install(world.client)
    assert installed.status_code == 200, installed.text
    installation = world.store.get_installation(world.saleor_api_url)
    assert installation is not None
    assert not installation.active

    world.saleor.inactive_tokens.clear()
    changed = await world.saleor.app_event(world.client, "APP_STATUS_CHANGED", is_active=True)
    assert changed.status_code == 200
    installation = world.store.get_installation(world.saleor_api_url)
    assert installation is not None
    assert installation.active


async def test_a_deactivated_app_reports_nothing_until_reactivated(world: World) -> None:
    await world.saleor.initialize(
        world.client, session_payload("tx-l1", Decimal("20.00"), "CHARGE", CARD)
    )
    assert (
        await world.saleor.app_event(world.client, "APP_STATUS_CHANGED", False)
    ).status_code == 200
    await world.settle()
    await world.flush()
    assert world.saleor.reports == []
    assert [r.type for r in world.store.reports(PENDING)] == ["CHARGE_SUCCESS"]
    await world.saleor.app_event(world.client, "APP_STATUS_CHANGED", True)
    await world.flush()
    assert [r["type"] for r in world.saleor.reports_of("tx-l1")] == ["CHARGE_SUCCESS"]


async def test_app_deleted_forgets_the_token_and_stops_acting(world: World) -> None:
    await world.saleor.initialize(
        world.client, session_payload("tx-l2", Decimal("20.00"), "AUTHORIZATION", CARD)
    )
    deleted = await world.saleor.app_event(world.client, "APP_DELETED")
    assert deleted.status_code == 200
    assert world.store.get_installation(world.saleor_api_url) is None
    refused = await world.saleor.send(
        world.client, CHARGE, action_payload("tx-l2", Decimal("20.00"), "CHARGE")
    )
    assert refused.status_code == 401
    await world.state.maintain()
    assert world.saleor.reports == []
    # A forged lifecycle event (bad signature) changes nothing.
    forged = await world.client.post(
        "/api/webhooks/app-events",
        content=b"{}",
        headers={"Saleor-Event": "app_deleted", "Saleor-Api-Url": world.saleor_api_url},
    )
    assert forged.status_code == 401


async def test_sent_reports_and_old_deliveries_are_pruned(world: World) -> None:
    await world.saleor.initialize(
        world.client, session_payload("tx-l3", Decimal("20.00"), "CHARGE", CARD)
    )
    await world.settle()
    await world.flush()
    assert [r.type for r in world.store.reports(SENT)] == ["CHARGE_SUCCESS"]
    world.clock.advance(timedelta(seconds=world.state.config.retention + 60).total_seconds())
    await world.state.maintain()
    assert world.store.reports() == []
