"""The worker's housekeeping vacuums the hot queue once claims and settles have left enough dead
row versions in it (autovacuum comes at most once a minute; claims slowed within seconds)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

from dispatcher.clock import FakeClock
from dispatcher.housekeeping import QUEUE_VACUUM_DEAD_ROWS, Housekeeper, HousekeepingSettings
from dispatcher.partitions import ensure_day


async def _queue_stats(pool: asyncpg.Pool) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT n_dead_tup, vacuum_count FROM pg_stat_user_tables"
        " WHERE relid = 'delivery_queue'::regclass"
    )
    return int(row["n_dead_tup"]), int(row["vacuum_count"])


async def _churn(pool: asyncpg.Pool, tenant_id: str, rows: int, clock: FakeClock) -> None:
    """`rows` deliveries queued and gone again, as settled ones go to the history."""
    now = clock.now()
    async with pool.acquire() as conn:
        await ensure_day(conn, now)
        await conn.execute(
            """INSERT INTO endpoints (id, tenant_id, environment, url, event_types, created_at,
                                      updated_at)
               VALUES ('ep_churn', $1, 'sandbox', 'https://receiver.example/', ARRAY['*'], $2, $2)
               ON CONFLICT DO NOTHING""",
            tenant_id,
            now,
        )
        await conn.execute(
            """INSERT INTO delivery_queue (event_id, endpoint_id, tenant_id, event_created_at,
                                          created_at, next_attempt_at, age_origin)
               SELECT 'evt_churn_' || g, 'ep_churn', $1, $2, $2, $2, $2
               FROM generate_series(1, $3) g""",
            tenant_id,
            now,
            rows,
        )
        await conn.execute("DELETE FROM delivery_queue WHERE endpoint_id = 'ep_churn'")
        await conn.execute("SELECT pg_stat_force_next_flush()")
    # the statistics are flushed at the end of the next transaction of that backend
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT 1")


async def test_a_churned_queue_is_vacuumed_and_a_quiet_one_is_left_alone(
    pool: asyncpg.Pool, clock: FakeClock, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    keeper = Housekeeper(
        pool,
        HousekeepingSettings(2.0, timedelta(days=1).total_seconds()),
        clock=clock,
        found_work=lambda: None,
    )
    await _churn(pool, tenant.tenant_id, QUEUE_VACUUM_DEAD_ROWS // 2, clock)
    dead, vacuums = await _queue_stats(pool)
    assert 0 < dead < QUEUE_VACUUM_DEAD_ROWS
    assert await keeper.vacuum_queue() is False  # a few dead rows: not worth a VACUUM
    assert await _queue_stats(pool) == (dead, vacuums)

    await _churn(pool, tenant.tenant_id, QUEUE_VACUUM_DEAD_ROWS, clock)
    assert (await _queue_stats(pool))[0] >= QUEUE_VACUUM_DEAD_ROWS
    assert await keeper.vacuum_queue() is True
    dead_after, vacuums_after = await _queue_stats(pool)
    assert vacuums_after == vacuums + 1
    assert dead_after == 0
