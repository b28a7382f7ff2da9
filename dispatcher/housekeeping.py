"""The worker's housekeeping: take back dead workers' deliveries, dead-letter the pending ones
past their max age, make the coming days' partitions.

Every worker does it, whatever its endpoints' state: every tick (2 s, or the poll interval if
shorter) it reaps and expires; hourly it makes partitions ahead. A database error is logged
and the next tick tries again.
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
from dispatcher.db.pool import DB_ERRORS
from dispatcher.partitions import ensure_partitions
from dispatcher.queue import expire_pending, reap

log = logging.getLogger("dispatcher.worker")  # one log for the worker, whichever part writes

PARTITIONS_EVERY_SECONDS = 3600


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

    async def ensure_partitions(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await ensure_partitions(conn, self._clock.now())
        except DB_ERRORS as exc:
            log.warning("creating partitions failed", extra={"error_class": type(exc).__name__})
