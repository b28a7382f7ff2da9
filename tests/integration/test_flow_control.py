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
from dispatcher.flow import LimiterBook
from dispatcher.models import Ordering
from dispatcher.queue import QueueLimits, claim
from dispatcher.ratelimit import interval
from dispatcher.settler import Settler, SettleSettings
from dispatcher.store import deliveries as delivery_store
from dispatcher.worker import Worker, WorkerConfig
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


async def test_an_attempt_that_is_over_frees_its_slot_before_it_is_settled(
    world: World, make_tenant: Any, clock: FakeClock
) -> None:
    """The limit counts requests actually open: the worker whose attempts are over (their
    outcome waiting to be written) may start as many again at once; no one else may, and the
    open requests never pass the limit."""
    tenant = await make_tenant()
    endpoint = await world.endpoint(tenant, "/fast")
    for i in range(10):
        await world.emit(tenant, f"ml_{i}", "created")
    limits = QueueLimits(endpoint_concurrency=4)

    async def take(worker_id: int, finished: dict[str, int] | None = None) -> int:
        async with world.pool.acquire() as conn:
            got = await claim(conn, clock.now(), 64, limits, worker_id=worker_id, finished=finished)
        return len(got)

    assert await take(1) == 4
    assert (await take(2), await take(1)) == (0, 0), "at the limit: four open"
    assert await take(1, {endpoint.id: 2}) == 2, "two of worker 1's are over: two more start"
    assert await take(1, {endpoint.id: 2}) == 0, "still four open (six counted until settled)"
    assert await take(2) == 0, "another worker's finished attempts are not its own"
    async with world.pool.acquire() as conn:  # failing: one probe at a time, settled first
        await conn.execute(
            "UPDATE endpoint_state SET consecutive_failures = 5, in_flight = 1"
            " WHERE endpoint_id = $1",
            endpoint.id,
        )
    assert await take(1, {endpoint.id: 1}) == 0, "a probe's outcome is known before the next"


async def test_the_settler_tells_the_claim_which_attempts_only_wait_to_be_written(
    world: World, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = await make_tenant()
    endpoint = await world.endpoint(tenant, "/fast")
    for i in range(3):
        await world.emit(tenant, f"ml_{i}", "created")
    limits = QueueLimits()
    async with world.pool.acquire() as conn:
        claimed = await claim(conn, clock.now(), 64, limits, worker_id=1)
    worker = Worker(
        world.pool, world.session, WorkerConfig(allow_private_targets=True), clock=clock
    )
    settlements = [await worker.deliverer.attempt(d) for d in claimed]
    settler = Settler(
        world.pool,
        SettleSettings(64, 0.0, limits),
        LimiterBook(limits.limiter()),
        clock=clock,
        settled=lambda: None,
    )
    for settlement in settlements:
        assert settlement is not None
        settler.add(settlement)
    assert settler.finished() == {endpoint.id: 3}
    running = asyncio.create_task(settler.run())
    settler.close()
    await running
    assert settler.finished() == {}
    async with world.pool.acquire() as conn:
        held = await conn.fetchval(
            "SELECT in_flight FROM endpoint_state WHERE endpoint_id = $1", endpoint.id
        )
    assert (held, len(world.receiver.at("/fast"))) == (0, 3)


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
