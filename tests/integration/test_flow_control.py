"""Flow control in the queue, against the real database and receiver: ordering per mailing,
rate-limit slots exact across concurrent claimers, and the adaptive concurrency limit."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import orjson

from dispatcher.clock import FakeClock
from dispatcher.models import Ordering
from dispatcher.queue import QueueLimits, claim
from dispatcher.ratelimit import interval
from dispatcher.store import deliveries as delivery_store
from tests.integration.conftest import World

STATUSES = ["created", "paid", "queued", "printed", "handed_over"]


def _by_mailing(requests: list[Any]) -> dict[str, list[tuple[str, int]]]:
    """Per mailing, what the receiver got, in arrival order: (status, attempt number)."""
    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for r in requests:
        data = orjson.loads(r.body)["data"]
        seen[data["mailing_id"]].append((data["status"], int(r.headers["X-Delivery-Attempt"])))
    return seen


async def _deliver_all(world: World, rounds: int = 30, step: float = 60.0) -> None:
    for _ in range(rounds):
        await world.drain()
        world.clock.advance(step)


async def test_ordered_endpoint_gets_each_mailing_in_event_order_through_retries(
    world: World, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    world.receiver.script("/ordered", 200, fail_first_attempts=True)
    await world.endpoint(tenant, "/ordered", ordering=Ordering.MAILING)
    await world.endpoint(tenant, "/unordered")
    mailings = [f"ml_{i}" for i in range(6)]
    for status in STATUSES:  # interleaved: every mailing moves one step at a time
        for m in mailings:
            await world.emit(tenant, m, status)

    await world.drain()
    first_round = _by_mailing(world.receiver.at("/ordered"))
    # other mailings are never held up: every mailing's first event went out at once ...
    assert {m: seen for m, seen in first_round.items()} == {m: [("created", 1)] for m in mailings}
    # ... while an unordered endpoint got everything in the same drain
    assert len(world.receiver.at("/unordered")) == len(mailings) * len(STATUSES)

    await _deliver_all(world)
    for m, seen in _by_mailing(world.receiver.at("/ordered")).items():
        # each event: its failed first attempt, then its success, before the next one starts
        assert seen == [(s, n) for s in STATUSES for n in (1, 2)], m
    assert await world.statuses(await _endpoint(world, "/ordered")) == ["succeeded"] * 30


async def _endpoint(world: World, path: str) -> Any:
    async with world.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT id FROM endpoints WHERE url = $1", world.receiver.url(path)
        )
    return type("E", (), {"id": row["id"]})


async def test_a_dead_event_lets_the_next_go_and_a_replay_keeps_the_order(
    world: World, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    world.receiver.script("/ordered", 500)
    endpoint = await world.endpoint(tenant, "/ordered", ordering=Ordering.MAILING)
    await world.emit(tenant, "ml_1", "created")
    await world.emit(tenant, "ml_1", "paid")
    # a max age shorter than the first backoff: each event is dead after one attempt, and the
    # next one goes only then
    await world.drain(max_age_seconds=10)
    assert _by_mailing(world.receiver.requests)["ml_1"] == [("created", 1), ("paid", 1)]
    assert await world.statuses(endpoint) == ["dead", "dead"]

    world.receiver.requests.clear()
    world.receiver.script("/ordered", 200)
    await world.emit(tenant, "ml_1", "queued")  # pending, and later than both dead ones
    async with world.pool.acquire() as conn:
        requeued = await delivery_store.replay_endpoint(
            conn,
            endpoint.id,
            scope=delivery_store.ReplayScope.DEAD,
            since=None,
            until=None,
            now=world.clock.now(),
        )
    assert requeued == 2
    await _deliver_all(world, rounds=5)
    assert [s for s, _ in _by_mailing(world.receiver.requests)["ml_1"]] == [
        "created",
        "paid",
        "queued",
    ]


async def test_a_manual_retry_of_a_later_event_waits_for_the_earlier_one(
    world: World, make_tenant: Any, app_client: Any
) -> None:
    tenant = await make_tenant()
    world.receiver.script("/ordered", 500)
    endpoint = await world.endpoint(tenant, "/ordered", ordering=Ordering.MAILING)
    await world.emit(tenant, "ml_1", "created")
    await world.drain()  # created failed: pending, retry in ~30 s
    await world.emit(tenant, "ml_1", "paid")
    ids = await world.delivery_ids(endpoint)
    client = await app_client(allow_private_targets=True, require_https=False)
    response = await client.post(f"/v1/deliveries/dlv_{ids[1]}/retry", headers=tenant.headers())
    assert response.status < 300, await response.text()
    world.receiver.script("/ordered", 200)
    await world.drain()  # paid is due now, but created is still retrying: nothing goes
    assert [s for s, _ in _by_mailing(world.receiver.requests)["ml_1"]] == ["created"]
    await _deliver_all(world, rounds=3)
    assert [s for s, _ in _by_mailing(world.receiver.requests)["ml_1"]] == [
        "created",
        "created",
        "paid",
    ]


# ---- rate limit ---------------------------------------------------------------------------


async def test_rate_limit_slots_are_exact_across_concurrent_claimers(
    world: World, make_tenant: Any, clock: FakeClock
) -> None:
    """Three workers claim at the same moments, 30 ms apart, for 3 s: the slots they get
    together are evenly spaced, one interval apart, with no gap and no overlap."""
    tenant = await make_tenant()
    endpoint = await world.endpoint(tenant, "/limited", rate_limit_per_second=50)
    for i in range(200):
        await world.emit(tenant, f"ml_{i}", "created")
    limits = QueueLimits()
    slots: list[datetime] = []
    start = clock.now()

    async def one_claim(now: datetime, worker_id: int) -> list[Any]:
        async with world.pool.acquire() as conn:
            return await claim(conn, now, 64, limits, worker_id=worker_id)

    while clock.now() < start + timedelta(seconds=3):
        batches = await asyncio.gather(*(one_claim(clock.now(), w) for w in (1, 2, 3)))
        for claimed in batches:
            assert all(j.endpoint_id == endpoint.id and j.not_before for j in claimed)
            slots += [j.not_before for j in claimed if j.not_before]
            async with world.pool.acquire() as conn:  # finished at once: slots are the limit
                await conn.execute(
                    "DELETE FROM delivery_queue WHERE id = ANY($1::bigint[])",
                    [j.delivery_id for j in claimed],
                )
                await conn.execute("UPDATE endpoint_state SET in_flight = 0")
        clock.advance(0.030)

    step = interval(50)
    slots.sort()
    assert slots[0] == start
    assert all(b - a == step for a, b in itertools.pairwise(slots)), "evenly spaced"
    # every slot up to the horizon past the last claim was handed out: the rate is used fully
    assert slots[-1] >= clock.now() - timedelta(seconds=0.03) + timedelta(seconds=0.1) - step
    per_second = sum(1 for s in slots if s < start + timedelta(seconds=1))
    assert per_second == 50  # the whole limit within any one second ...
    over_three = sum(1 for s in slots if s < start + timedelta(seconds=3))
    assert over_three == 148  # ... and 2% less sustained: the jitter allowance (3 s / 20.4 ms)


async def test_a_rate_limited_backlog_waits_and_nothing_fails(
    world: World, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = await make_tenant()
    endpoint = await world.endpoint(tenant, "/limited", rate_limit_per_second=2)
    for i in range(6):
        await world.emit(tenant, f"ml_{i}", "created")
    await world.drain()
    # the first claim reserves what falls within the 100 ms horizon: one slot at 2 per second
    assert len(world.receiver.at("/limited")) == 1
    assert sorted(await world.statuses(endpoint)) == ["pending"] * 5 + ["succeeded"]
    for _ in range(10):
        clock.advance(0.51)
        await world.drain()
    assert await world.statuses(endpoint) == ["succeeded"] * 6


async def test_changing_the_rate_limit_starts_afresh(
    world: World, make_tenant: Any, clock: FakeClock, app_client: Any
) -> None:
    tenant = await make_tenant()
    endpoint = await world.endpoint(tenant, "/limited", rate_limit_per_second=1)
    for i in range(3):
        await world.emit(tenant, f"ml_{i}", "created")
    await world.drain()
    assert len(world.receiver.at("/limited")) == 1  # the next slot is a second away
    client = await app_client(allow_private_targets=True, require_https=False)
    response = await client.patch(
        f"/v1/webhooks/{endpoint.id}",
        json={"rate_limit_per_second": None},
        headers=tenant.headers(),
    )
    assert response.status == 200
    await world.drain()
    assert len(world.receiver.at("/limited")) == 3


# ---- adaptive concurrency -----------------------------------------------------------------


async def _limit(world: World, endpoint_id: str) -> float | None:
    async with world.pool.acquire() as conn:
        value: float | None = await conn.fetchval(
            "SELECT concurrency_limit FROM endpoint_state WHERE endpoint_id = $1", endpoint_id
        )
    return value


async def test_limit_grows_on_fast_successes_and_halves_on_overload(
    world: World, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    endpoint = await world.endpoint(tenant, "/hook")
    for i in range(40):
        await world.emit(tenant, f"ml_{i}", "created")
    async with world.pool.acquire() as conn:
        first = await claim(conn, world.clock.now(), 64, QueueLimits(), worker_id=0)
        await conn.execute(
            "UPDATE delivery_queue SET worker_id = NULL, lease_expires_at = NULL, attempts = 0"
        )
        await conn.execute("UPDATE endpoint_state SET in_flight = 0")
    assert len(first) == 8  # a new endpoint starts at 8 in flight
    await world.drain()  # slow start: +1 per success while the limit is used
    grown = await _limit(world, endpoint.id)
    assert grown is not None and grown > 8

    world.receiver.script("/hook", 503)
    for i in range(40, 50):
        await world.emit(tenant, f"ml_{i}", "created")
    await world.drain()
    cut = await _limit(world, endpoint.id)
    assert cut == max(1.0, grown / 2)  # one halving for one window of failures
