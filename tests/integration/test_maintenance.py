"""Worker housekeeping: retention at start and then periodically, by the injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest

from dispatcher import retention
from dispatcher.clock import FakeClock
from dispatcher.maintenance import maintain, maintain_forever
from tests.integration.history_tables import Scratch


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(10):
        while not await check():  # noqa: ASYNC110 - waiting on the background task's writes
            await asyncio.sleep(0.01)


async def test_only_idempotency_keys_older_than_a_day_go(
    pool: asyncpg.Pool, clock: FakeClock
) -> None:
    now = clock.now()
    async with pool.acquire() as conn:
        for key, age in (("old", timedelta(hours=25)), ("fresh", timedelta(hours=23))):
            await conn.execute(
                "INSERT INTO idempotency_keys VALUES ('platform', $1, '\\x00', 200, '{}', $2)",
                key,
                now - age,
            )
    report = await maintain(pool, now, 30)
    # (empty history partitions that other tests' fake clocks left behind may go too)
    assert [(r.table, r.rows) for r in report.removed if r.rows] == [("idempotency_keys", 1)]
    async with pool.acquire() as conn:
        left = [r["key"] for r in await conn.fetch("SELECT key FROM idempotency_keys")]
    assert left == ["fresh"]


async def test_retention_runs_at_start_and_then_every_interval(
    pool: asyncpg.Pool, clock: FakeClock, scratch: Scratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "HISTORY", scratch.history)
    sql = scratch.partitions_sql()

    async def oldest() -> str:
        async with pool.acquire() as conn:
            name: str = await conn.fetchval(sql + " LIMIT 1")
        return name

    task = asyncio.create_task(maintain_forever(pool, 30, clock, interval=0.05))
    try:
        await until(lambda: _is(oldest, "events_p20260411"))
        clock.advance(86400)  # one more day expires; the next round removes it
        await until(lambda: _is(oldest, "events_p20260412"))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _is(get: Callable[[], Awaitable[str]], expected: str) -> bool:
    return await get() == expected
