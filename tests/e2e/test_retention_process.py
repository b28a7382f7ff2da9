"""A worker process applies retention on its own as it starts, with the default settings."""

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

    async def trimmed() -> bool:
        async with pool.acquire() as conn:
            left = await conn.fetch("SELECT mailing_id FROM mailings")
        return [r["mailing_id"] for r in left] == ["ml_recent"]

    worker = start_process("worker")
    await wait_until(trimmed)
    worker.signal(signal.SIGTERM)
    assert await worker.wait() == 0
    assert "retention removed expired rows of mailings (1 rows)" in worker.output()
