"""Expired Idempotency-Key records are purged; fresh ones are kept."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from dispatcher.clock import FakeClock
from dispatcher.maintenance import purge_idempotency_keys


async def test_only_keys_older_than_a_day_are_purged(pool: asyncpg.Pool, clock: FakeClock) -> None:
    now = clock.now()
    async with pool.acquire() as conn:
        for key, age in (("old", timedelta(hours=25)), ("fresh", timedelta(hours=23))):
            await conn.execute(
                "INSERT INTO idempotency_keys VALUES ('platform', $1, '\\x00', 200, '{}', $2)",
                key,
                now - age,
            )
        assert await purge_idempotency_keys(conn, now) == 1
        left = [r["key"] for r in await conn.fetch("SELECT key FROM idempotency_keys")]
    assert left == ["fresh"]
