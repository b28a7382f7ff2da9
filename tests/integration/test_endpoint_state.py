"""GET /v1/webhooks/{id} shows the endpoint's live delivery state, as the workers share it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from dispatcher.clock import FakeClock
from dispatcher.queue import QueueLimits, claim
from tests.conftest import TenantKeys
from tests.integration.conftest import Client, World

INITIAL_LIMIT = 8  # where a new endpoint's adaptive limit starts (dispatcher/limiter.py)


async def _state(client: Client, keys: TenantKeys, endpoint_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/webhooks/{endpoint_id}", headers=keys.headers())
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    state: dict[str, Any] = body["delivery_state"]
    return state


@pytest.fixture
async def client(app_client: Any) -> Client:
    app: Client = await app_client(allow_private_targets=True, require_https=False)
    return app


async def test_live_state_through_a_failure_streak_and_recovery(
    client: Client, world: World, make_tenant: Any, clock: FakeClock
) -> None:
    acme = await make_tenant()
    world.receiver.script("/down", 500)
    endpoint = await world.endpoint(acme, "/down")
    for n in range(7):
        await world.emit(acme, f"ml_{n}", "created")

    assert await _state(client, acme, endpoint.id) == {
        "circuit": "closed",
        "circuit_open_until": None,
        "concurrency_limit": INITIAL_LIMIT,
        "in_flight": 0,
        "pending": 7,
    }

    async with world.pool.acquire() as conn:  # a worker takes two of them
        taken = await claim(conn, clock.now(), 2, QueueLimits(), worker_id=0)
    state = await _state(client, acme, endpoint.id)
    assert (len(taken), state["in_flight"], state["pending"]) == (2, 2, 5)
    async with world.pool.acquire() as conn:  # ... and dies: its leases expire
        await conn.execute(
            "UPDATE delivery_queue SET lease_expires_at = $1", clock.now() - timedelta(seconds=1)
        )

    await world.drain()  # seven 500s in a row: the circuit opens after the fifth
    state = await _state(client, acme, endpoint.id)
    assert state["circuit"] == "open"
    assert state["concurrency_limit"] == 1
    assert (state["in_flight"], state["pending"]) == (0, 7)
    until = datetime.fromisoformat(state["circuit_open_until"])
    assert until > clock.now()

    clock.set(until + timedelta(seconds=1))  # back-off over: one probe at a time
    state = await _state(client, acme, endpoint.id)
    assert (state["circuit"], state["circuit_open_until"], state["concurrency_limit"]) == (
        "half_open",
        None,
        1,
    )

    world.receiver.script("/down", 200)
    await world.drain()
    assert await _state(client, acme, endpoint.id) == {
        "circuit": "closed",
        "circuit_open_until": None,
        # the 500s halved it once (8 -> 4: they all started before the cut), and each of the
        # seven successes since added 1/limit (additive increase after an overload): 4 -> 5.5
        "concurrency_limit": 5,
        "in_flight": 0,
        "pending": 0,
    }


async def test_the_list_stays_light_and_another_tenants_endpoint_is_a_404(
    client: Client, world: World, make_tenant: Any
) -> None:
    acme = await make_tenant("ACME")
    other = await make_tenant("Other")
    endpoint = await world.endpoint(acme, "/hook")
    listed = await client.get("/v1/webhooks", headers=acme.headers())
    (item,) = (await listed.json())["data"]
    assert item["id"] == endpoint.id and "delivery_state" not in item
    foreign = await client.get(f"/v1/webhooks/{endpoint.id}", headers=other.headers())
    assert foreign.status == 404
