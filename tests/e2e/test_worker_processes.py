"""Worker processes: woken by NOTIFY, graceful on SIGTERM, sharing work, surviving SIGKILL."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg

from dispatcher.events import Transition, record_transitions
from dispatcher.settings import Settings
from dispatcher.transitions import MailingStatus
from tests.e2e.conftest import add_endpoint, wait_until


async def _emit(pool: asyncpg.Pool, tenant_id: str, count: int, start: int = 0) -> list[str]:
    items = [
        Transition(tenant_id, "sandbox", f"ml_{i}", MailingStatus.CREATED)
        for i in range(start, start + count)
    ]
    async with pool.acquire() as conn, conn.transaction():
        results = await record_transitions(conn, items, datetime.now(UTC))
    return [str(r.event_id) for r in results]


async def _statuses(pool: asyncpg.Pool) -> Counter[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM deliveries GROUP BY 1")
    return Counter({r["status"]: r["n"] for r in rows})


async def test_worker_is_woken_by_notify_not_by_its_poll_timer(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, start_process: Any
) -> None:
    tenant = await make_tenant()
    await add_endpoint(pool, tenant.tenant_id, receiver.url("/hook"), datetime.now(UTC))
    worker = start_process("worker", poll_interval_seconds=600)
    await asyncio.sleep(0)  # the worker needs its LISTEN in place before the event commits
    await wait_until(lambda: _listening(pool))
    (event_id,) = await _emit(pool, tenant.tenant_id, 1)
    # the fallback poll is 10 minutes away: only the NOTIFY can deliver this in time
    await receiver.wait_for(1, timeout=10)
    assert receiver.requests[0].headers["X-Event-Id"] == event_id
    worker.signal(signal.SIGTERM)
    assert await worker.wait() == 0


async def _listening(pool: asyncpg.Pool) -> bool:
    async with pool.acquire() as conn:
        n = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
    return bool(n)


async def test_sigterm_finishes_the_delivery_in_flight_and_exits_cleanly(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, start_process: Any
) -> None:
    """At the default shutdown grace (10 s): an attempt answered within it is finished and
    settled, not handed back (tests/faults/test_sigterm_under_load.py shortens the grace to
    see the attempts that outlast it cancelled and handed back)."""
    delay = 1.5
    assert delay < Settings().shutdown_grace_seconds
    tenant = await make_tenant()
    receiver.script("/slow", 200, delay=delay)
    await add_endpoint(pool, tenant.tenant_id, receiver.url("/slow"), datetime.now(UTC))
    worker = start_process("worker")
    await wait_until(lambda: _listening(pool))
    await _emit(pool, tenant.tenant_id, 1)
    await receiver.wait_for(1)
    worker.signal(signal.SIGTERM)  # while the receiver is still answering
    assert await worker.wait() == 0, worker.output()
    assert await _statuses(pool) == Counter({"succeeded": 1})
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT sum(in_flight) FROM endpoint_state") == 0


async def test_two_workers_share_the_work_without_duplicates(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, start_process: Any
) -> None:
    tenant = await make_tenant()
    for path in ("/a", "/b"):
        await add_endpoint(pool, tenant.tenant_id, receiver.url(path), datetime.now(UTC))
    workers = [start_process("worker"), start_process("worker")]
    await wait_until(lambda: _listening(pool))
    emitted: list[str] = []
    for batch in range(5):
        emitted += await _emit(pool, tenant.tenant_id, 60, start=batch * 60)
    await receiver.wait_for(2 * len(emitted), timeout=30)
    await wait_until(lambda: _all_settled(pool, 2 * len(emitted)))
    for path in ("/a", "/b"):
        ids = [r.headers["X-Event-Id"] for r in receiver.at(path)]
        assert sorted(ids) == sorted(emitted), f"{path}: missing or duplicated deliveries"
    for w in workers:
        w.signal(signal.SIGTERM)
        assert await w.wait() == 0


async def _all_settled(pool: asyncpg.Pool, expected: int) -> bool:
    return (await _statuses(pool))["succeeded"] == expected


async def test_sigkilled_worker_loses_nothing(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, start_process: Any
) -> None:
    tenant = await make_tenant()
    receiver.script("/hook", 200, delay=0.2)
    await add_endpoint(pool, tenant.tenant_id, receiver.url("/hook"), datetime.now(UTC))
    doomed = start_process("worker", endpoint_concurrency=8)
    await wait_until(lambda: _listening(pool))
    emitted = await _emit(pool, tenant.tenant_id, 100)
    await receiver.wait_for(10)
    doomed.signal(signal.SIGKILL)  # mid-stream, with leased deliveries in flight
    await doomed.wait()
    survivor = start_process("worker", endpoint_concurrency=8)
    await wait_until(lambda: _all_settled(pool, len(emitted)), limit=60)
    received = receiver.at("/hook")
    assert {r.headers["X-Event-Id"] for r in received} == set(emitted)
    bodies: dict[str, bytes] = {}
    for r in received:  # duplicates are possible around a crash, but identical
        assert bodies.setdefault(r.headers["X-Event-Id"], r.body) == r.body
    survivor.signal(signal.SIGTERM)
    assert await survivor.wait() == 0
