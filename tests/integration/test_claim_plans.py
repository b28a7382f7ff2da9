"""The claim stays an index walk when a backlog builds after its plan was made.

A worker's connections keep their prepared statements' generic plans. One planned while the
queue was nearly empty (a fresh deploy, a new worker) scanned the whole queue inside the
claim's per-endpoint loops, and a backlog that built afterwards (a receiver that is down or
slow: inserts only, nothing for VACUUM, so nothing made PostgreSQL plan again) made every
claim cost a scan of it. In the benchmark, the healthy neighbour of a slow endpoint waited up
to 100 ms in the queue for the first two seconds of every run. The delivery pool's sessions
rule sequential scans out (dispatcher/db/pool.py `DELIVERY_SESSION`).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from dispatcher.clock import FakeClock
from dispatcher.db.pool import open_delivery_pool
from dispatcher.partitions import ensure_partitions
from dispatcher.queue import QueueLimits, claim
from dispatcher.settings import Settings
from tests.integration.conftest import World
from tests.queue_state import insert_events, queue_deliveries

BACKLOG = 5000

# sequential scans of the queue made by this transaction so far
SEQ_SCANS = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'delivery_queue'"


async def _claim_and_count_scans(conn: asyncpg.Connection, clock: FakeClock) -> tuple[int, int]:
    """A claim as the worker makes it, rolled back: (deliveries claimed, queue scans)."""
    tr = conn.transaction()
    await tr.start()
    try:
        taken = await claim(conn, clock.now(), 64, QueueLimits(), worker_id=1)
        scans: int = await conn.fetchval(SEQ_SCANS)
    finally:
        await tr.rollback()
    return len(taken), scans


async def test_a_claim_planned_on_an_empty_queue_does_not_scan_a_backlog_built_later(
    world: World, database_url: str, settings: Settings, make_tenant: Any, clock: FakeClock
) -> None:
    pool = world.pool
    tenant = await make_tenant()
    slow = (await world.endpoint(tenant, "/slow")).id
    healthy = (await world.endpoint(tenant, "/healthy")).id
    async with pool.acquire() as conn:
        # the slow endpoint holds every slot it may have: its backlog only grows
        await conn.execute(
            "UPDATE endpoint_state SET in_flight = 8, concurrency_limit = 8 WHERE endpoint_id = $1",
            slow,
        )
        await conn.execute("VACUUM ANALYZE delivery_queue")  # empty, as after a deploy
        await ensure_partitions(conn, clock.now())
        await insert_events(conn, tenant.tenant_id, "a", 5, clock.now(), b"{}")
        await queue_deliveries(conn, tenant.tenant_id, "a", 5, [healthy], clock.now(), clock.now())

    async with open_delivery_pool(database_url, settings) as delivery, delivery.acquire() as conn:
        # what PostgreSQL settles on by itself after five executions on a small queue
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        assert await _claim_and_count_scans(conn, clock) == (5, 0)  # planned now
        async with pool.acquire() as writer:
            await queue_deliveries(
                writer, tenant.tenant_id, "b", BACKLOG, [slow], clock.now(), clock.now()
            )
        taken, scans = await _claim_and_count_scans(conn, clock)
    assert taken == 5, "the healthy endpoint's deliveries are claimed, the slow one's wait"
    assert scans == 0, f"the claim scanned the {BACKLOG} queued deliveries {scans} times"
