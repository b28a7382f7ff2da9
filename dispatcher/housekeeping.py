"""The worker's housekeeping: take back dead workers' deliveries, dead-letter the pending ones
past their max age, vacuum the hot queue, make the coming days' partitions.

Every worker does it, whatever its endpoints' state: every tick (2 s, or the poll interval if
shorter) it reaps and expires, and vacuums `delivery_queue` once claims and settles have left
`QUEUE_VACUUM_DEAD_ROWS` dead row versions in it; hourly it makes partitions ahead. A database
error is logged and the next tick tries again.

Why the queue vacuum: every claim and settle leaves a dead row version behind, a thousand or
more a second on a busy worker, and autovacuum visits a database at most once a minute by
default (and waits for a fifth of the table to be dead). In between, claims walk the dead
index entries: in the benchmark, an endpoint with a growing backlog (a dead one) beside a
healthy one at 1,000 events/s made claims go from 2-7 ms to 20-70 ms within seconds, and the
healthy endpoint fell seconds behind; a VACUUM every 2 s kept its p99 at 13-54 ms. A VACUUM of
the queue skips pages that changed nothing, so on a quiet queue it costs next to nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from dispatcher import metrics
from dispatcher.clock import Clock
from dispatcher.db import queries as q
from dispatcher.db.pool import DB_ERRORS
from dispatcher.partitions import ensure_partitions
from dispatcher.queue import expire_pending, reap

log = logging.getLogger("dispatcher.worker")  # one log for the worker, whichever part writes

PARTITIONS_EVERY_SECONDS = 3600
QUEUE_VACUUM_DEAD_ROWS = 1000  # dead row versions in delivery_queue worth a VACUUM
# not a statement of dispatcher.db.queries (it cannot be prepared, nor run in a transaction);
# skipped, not waited for, while another worker's VACUUM holds the table; no parallel index
# workers: they would take cores from the deliveries this VACUUM is meant to speed up
VACUUM_QUEUE = "VACUUM (SKIP_LOCKED, PARALLEL 0) delivery_queue"


@dataclass(frozen=True)
class HousekeepingSettings:
    tick_seconds: float  # how often dead workers' deliveries are looked for (back within this)
    max_age_seconds: float  # a pending delivery older than this is a dead letter


class Housekeeper:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: HousekeepingSettings,
        *,
        clock: Clock,
        found_work: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock
        self._found_work = found_work  # it reaped deliveries: the claim loop has work

    async def run(self) -> None:
        """Reap and expire every tick, make partitions hourly; wakes the claim loop only when
        it gave it something to do."""
        loop = asyncio.get_running_loop()
        last_partitions = loop.time()
        while True:
            await asyncio.sleep(self._settings.tick_seconds)
            if await self.reap():
                self._found_work()
            await self.expire()
            await self.vacuum_queue()
            if loop.time() - last_partitions >= PARTITIONS_EVERY_SECONDS:
                last_partitions = loop.time()
                await self.ensure_partitions()

    async def reap(self) -> int:
        try:
            async with self._pool.acquire() as conn:
                count = await reap(conn, self._clock.now())
            if count:
                log.warning(f"took back {count} deliveries from dead workers or expired leases")
            return count
        except DB_ERRORS as exc:
            log.warning("reaping failed", extra={"error_class": type(exc).__name__})
            return 0

    async def expire_on(self, conn: asyncpg.Connection, now: datetime) -> int:
        count = await expire_pending(conn, now, self._settings.max_age_seconds)
        if count:
            metrics.DEAD_LETTERS.inc(count)
            log.info(f"dead-lettered {count} pending deliveries past their max age")
        return count

    async def expire(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await self.expire_on(conn, self._clock.now())
        except DB_ERRORS as exc:
            log.warning("dead-lettering failed", extra={"error_class": type(exc).__name__})

    async def vacuum_queue(self) -> bool:
        """VACUUM the hot queue when claims and settles have left enough dead rows in it;
        True when it ran (or another worker's was running)."""
        try:
            async with self._pool.acquire() as conn:
                dead: int = await conn.fetchval(q.QUEUE_DEAD_ROWS)
                if dead < QUEUE_VACUUM_DEAD_ROWS:
                    return False
                await conn.execute(VACUUM_QUEUE)
            return True
        except DB_ERRORS as exc:
            log.warning("vacuuming the queue failed", extra={"error_class": type(exc).__name__})
            return False

    async def ensure_partitions(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await ensure_partitions(conn, self._clock.now())
        except DB_ERRORS as exc:
            log.warning("creating partitions failed", extra={"error_class": type(exc).__name__})
