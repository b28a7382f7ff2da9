"""Backlog gauges from one cheap query every few seconds, never from a scrape."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import asyncpg

from dispatcher import metrics
from dispatcher.db import queries as q
from dispatcher.db.pool import DB_ERRORS
from dispatcher.queue import QueueLimits

log = logging.getLogger(__name__)


async def refresh_gauges(
    pool: asyncpg.Pool, now: datetime | None = None, limits: QueueLimits | None = None
) -> None:
    moment = now or datetime.now(UTC)
    config = limits or QueueLimits()
    bounds = config.limiter()
    async with pool.acquire() as conn:
        backlog = await conn.fetchrow(q.BACKLOG_GAUGES)
        endpoints = await conn.fetch(q.ENDPOINT_STATE_COUNTS, moment)
        limited = await conn.fetchrow(
            q.ENDPOINT_FLOW_COUNTS,
            moment,
            bounds.ceiling,
            bounds.floor,
            bounds.initial,
            config.breaker_threshold,
        )
    for reason in ("concurrency", "rate"):
        metrics.ENDPOINTS_LIMITED.labels(reason=reason).set(limited[reason])
    metrics.DELIVERIES_PENDING.set(backlog["pending"])
    oldest = backlog["oldest"]
    metrics.OLDEST_PENDING_AGE.set(max((moment - oldest).total_seconds(), 0) if oldest else 0)
    counts = {r["state"]: r["n"] for r in endpoints}
    for state in ("enabled", "disabled", "circuit_open"):
        metrics.ENDPOINTS.labels(state=state).set(counts.get(state, 0))


async def refresh_gauges_forever(
    pool: asyncpg.Pool, limits: QueueLimits, interval: float = 5.0
) -> None:
    while True:
        with contextlib.suppress(*DB_ERRORS):
            await refresh_gauges(pool, limits=limits)
        await asyncio.sleep(interval)
