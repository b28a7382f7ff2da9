"""Housekeeping every worker process runs on its own: retention, gauges of what is kept, the
folding of closed days' usage counters, and the removal of deleted tenants that the API did
not finish (dispatcher/tenant_purge.py).

Every replica runs it at start and then every few minutes; the retention lock lets one of
them work while the others skip, so adding replicas adds no load.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg

from dispatcher import metrics
from dispatcher.clock import Clock, SystemClock
from dispatcher.db.pool import DB_ERRORS
from dispatcher.retention import RetentionReport, apply_retention, refresh_retained_gauges
from dispatcher.store.tenants import fold_usage
from dispatcher.tenant_purge import purge_deleted_tenants

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_SECONDS = 600.0


async def maintain(pool: asyncpg.Pool, now: datetime, retention_days: int) -> RetentionReport:
    """One round: remove expired history, refresh the gauges of what is kept, fold usage."""
    async with pool.acquire() as conn:
        report = await apply_retention(conn, now, retention_days)
        # said before anything else can fail: what went is logged whatever happens next
        for removal in report.removed:
            what = removal.partition or "expired rows"
            log.info(f"retention removed {what} of {removal.table} ({removal.rows} rows)")
        for kept in report.kept:
            log.info(f"retention kept {kept.partition} of {kept.table}: {kept.reason}")
        if not report.busy:  # a busy round means another process is doing it right now
            metrics.RETENTION_LAST_RUN.set(now.timestamp())
        await refresh_retained_gauges(conn, now)
        await fold_usage(conn, now.astimezone(UTC).date())
        purged = await purge_deleted_tenants(conn)
    if purged:
        log.info(f"finished removing {purged} deleted tenants")
    return report


async def maintain_forever(
    pool: asyncpg.Pool,
    retention_days: int,
    clock: Clock | None = None,
    interval: float = MAINTENANCE_INTERVAL_SECONDS,
) -> None:
    source = clock or SystemClock()
    while True:
        try:
            await maintain(pool, source.now(), retention_days)
        except DB_ERRORS as exc:
            log.warning(f"maintenance failed ({type(exc).__name__}); retrying in {interval:g} s")
        await asyncio.sleep(interval)
