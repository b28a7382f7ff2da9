"""A worker process applies retention on its own as it starts, with the default settings:
expired history partitions and mailing state go."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.e2e.conftest import wait_until


async def test_a_starting_worker_removes_what_is_older_than_the_retention(
    pool: asyncpg.Pool, make_tenant: Any, start_process: Any
) -> None:
    tenant = await make_tenant()
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        for mailing, age in (("ml_old", 31), ("ml_recent", 29)):
            await conn.execute(
                """INSERT INTO mailings (tenant_id, environment, mailing_id, status,
                                         last_event_id, updated_at)
                   VALUES ($1, 'sandbox', $2, 'created', 'evt_x', $3)""",
                tenant.tenant_id,
                mailing,
                now - timedelta(days=age),
            )

        old_day = (now - timedelta(days=40)).date()
        await conn.fetchval("SELECT dispatcher_ensure_partition('events', $1)", old_day)
    old_partition = f"events_p{old_day:%Y%m%d}"

    async def trimmed() -> bool:
        async with pool.acquire() as conn:
            left = await conn.fetch("SELECT mailing_id FROM mailings")
            partition = await conn.fetchval("SELECT to_regclass($1)", old_partition)
        return [r["mailing_id"] for r in left] == ["ml_recent"] and partition is None

    worker = start_process("worker", retention_days=30)  # the default (the suite sets more)
    await wait_until(trimmed)
    worker.signal(signal.SIGTERM)
    assert await worker.wait() == 0
    said = worker.output()
    assert "retention removed expired rows of mailings (1 rows)" in said, said[-3000:]
    assert f"retention removed {old_partition} of events" in said, said[-3000:]
