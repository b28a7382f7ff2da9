"""Settling in batches: finished attempts wait a moment to be written back together.

A batch goes out when it is full (the claim batch size) or when the settle interval has
passed since it started filling. A write that fails is retried until the database takes it:
an attempt's record is never dropped. After each batch, what the attempts said is folded into
the endpoints' shared limits. Until its settle commits, a finished attempt still counts in its
endpoint's in_flight; `finished()` tells the claim how many of those only wait here, so their
slots are used again at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from dispatcher import flow
from dispatcher.clock import Clock
from dispatcher.db.pool import DB_ERRORS
from dispatcher.flow import LimiterBook
from dispatcher.queue import QueueLimits, Settlement, settle

log = logging.getLogger("dispatcher.worker")  # one log for the worker, whichever part writes


@dataclass(frozen=True)
class SettleSettings:
    batch_size: int
    interval_seconds: float  # how long a batch may wait to fill (0: as soon as one is done)
    limits: QueueLimits


class Settler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: SettleSettings,
        limiter: LimiterBook,
        *,
        clock: Clock,
        settled: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._limiter = limiter
        self._clock = clock
        self._settled = settled  # a batch is written: its endpoints' slots are free again
        self._buffer: list[Settlement] = []
        self._unsettled: Counter[str] = Counter()  # per endpoint: added, not yet committed
        self._ready = asyncio.Event()
        self._closing = False

    def add(self, settlement: Settlement) -> None:
        self._buffer.append(settlement)
        self._unsettled[settlement.delivery.endpoint_id] += 1
        self._ready.set()

    def finished(self) -> dict[str, int]:
        """Per endpoint, attempts that are over but whose settle has not committed yet."""
        return dict(self._unsettled)

    def close(self) -> None:
        """Write what is buffered at once, then let `run` return."""
        self._closing = True
        self._ready.set()

    async def run(self) -> None:
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            if len(self._buffer) < self._settings.batch_size and not self._closing:
                await asyncio.sleep(self._settings.interval_seconds)
            batch, self._buffer = self._buffer, []
            await self._settle(batch)
            self._unsettled.subtract(s.delivery.endpoint_id for s in batch)
            self._unsettled += Counter()  # drop the zeros
            await self._adapt(force=self._closing)
            self._settled()

    async def _settle(self, batch: list[Settlement]) -> None:
        """Retry until the database takes it: an attempt's record is never dropped."""
        delay = 0.1
        while batch:
            try:
                async with self._pool.acquire() as conn:
                    await settle(conn, batch, self._clock.now(), self._settings.limits)
                return
            except DB_ERRORS as exc:
                log.warning("settling failed; retrying", extra={"error_class": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                log.exception("settling failed unexpectedly; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _adapt(self, *, force: bool = False) -> None:
        """Fold what the attempts said into the endpoints' shared limits (best effort: a lost
        batch of samples only slows the adaptation down)."""
        now = self._clock.now()
        if not (force or self._limiter.due(now)):
            return
        samples = self._limiter.take(now)
        if not samples:
            return
        try:
            async with self._pool.acquire() as conn:
                await flow.apply(conn, samples, self._limiter.config)
        except DB_ERRORS as exc:
            log.warning("limiter update failed", extra={"error_class": type(exc).__name__})
