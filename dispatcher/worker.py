"""The delivery loop: claim due work, send it concurrently, hand it to the settler.

The worker only loops; its parts do the rest: a `Deliverer` sends one claimed delivery and
judges it (`dispatcher.delivering`), the `Settler` writes outcomes back in batches
(`dispatcher.settler`), the `Housekeeper` reaps dead workers' deliveries (every 2 s) and
dead-letters pending deliveries past their max age (every poll interval), whatever their
endpoint's state (`dispatcher.housekeeping`). Idle waits end on whichever comes first: a NOTIFY
(new events), a freed slot or settled batch, the next scheduled retry, or the fallback poll
timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import asyncpg

from dispatcher import flow
from dispatcher.clock import Clock, SystemClock
from dispatcher.db.pool import DB_ERRORS
from dispatcher.delivering import AttemptSettings, Deliverer
from dispatcher.flow import LimiterBook
from dispatcher.housekeeping import Housekeeper, HousekeepingSettings
from dispatcher.liveness import Liveness
from dispatcher.partitions import ensure_partitions
from dispatcher.policy import RetryPolicy
from dispatcher.queue import (
    ClaimedDelivery,
    QueueLimits,
    TenantAllowance,
    claim,
    next_due,
    reap,
    release,
    settle,
    walked_to,
)
from dispatcher.settings import Settings
from dispatcher.settler import Settler, SettleSettings

log = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    concurrency: int = 128
    batch_size: int = 64
    attempt_timeout_seconds: float = 5.0
    poll_interval_seconds: float = 5.0
    # how long finished attempts wait to be settled together (0: as soon as one is done)
    settle_interval_seconds: float = 0.002
    shutdown_grace_seconds: float = 10.0
    # how often the deliveries of dead workers are looked for (they are back within this)
    reap_interval_seconds: float = 2.0
    # a tenant's in-flight attempts on this worker: at most this share of its slots
    tenant_share: float = 0.5
    allow_private_targets: bool = False
    signature_header: str = "X-Bjet24-Signature"
    limits: QueueLimits = field(default_factory=QueueLimits)
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_settings(cls, s: Settings) -> WorkerConfig:
        return cls(
            concurrency=s.worker_concurrency,
            batch_size=s.claim_batch_size,
            attempt_timeout_seconds=s.attempt_timeout_seconds,
            poll_interval_seconds=s.poll_interval_seconds,
            shutdown_grace_seconds=s.shutdown_grace_seconds,
            settle_interval_seconds=s.settle_interval_seconds,
            tenant_share=s.tenant_share,
            allow_private_targets=s.allow_private_targets,
            signature_header=s.signature_header,
            limits=QueueLimits.from_settings(s),
            policy=RetryPolicy(
                base_seconds=s.retry_base_seconds,
                multiplier=s.retry_multiplier,
                max_delay_seconds=max(s.retry_max_delay_seconds, s.retry_base_seconds),
                max_age_seconds=s.retry_max_age_seconds,
                jitter=s.retry_jitter,
            ),
        )

    @property
    def tenant_slots(self) -> int:
        """A tenant's most attempts at once on one worker (at least one)."""
        return max(1, math.floor(self.concurrency * self.tenant_share))

    def attempts(self) -> AttemptSettings:
        return AttemptSettings(
            self.policy,
            self.attempt_timeout_seconds,
            self.allow_private_targets,
            self.signature_header,
        )

    def settling(self) -> SettleSettings:
        return SettleSettings(self.batch_size, self.settle_interval_seconds, self.limits)

    def housekeeping(self) -> HousekeepingSettings:
        tick = min(self.reap_interval_seconds, self.poll_interval_seconds)
        return HousekeepingSettings(tick, self.policy.max_age_seconds)


class Worker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        session: aiohttp.ClientSession,
        config: WorkerConfig,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._config = config
        self._clock = clock or SystemClock()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: dict[asyncio.Task[None], ClaimedDelivery] = {}
        self._wake_on_finish = True
        self._cursor = ""
        self._liveness = Liveness(pool)
        self._limiter = LimiterBook(config.limits.limiter())
        self.deliverer = Deliverer(
            session,
            config.attempts(),
            self._limiter,
            clock=self._clock,
            rng=rng or random.Random(),
            wake=self._wake.set,
        )
        self._settler = Settler(
            pool, config.settling(), self._limiter, clock=self._clock, settled=self._wake.set
        )
        self._housekeeper = Housekeeper(
            pool, config.housekeeping(), clock=self._clock, found_work=self._wake.set
        )

    @property
    def worker_id(self) -> int | None:
        return self._liveness.worker_id

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    # ---- test mode ------------------------------------------------------------------------

    async def drain(self, max_rounds: int = 1000) -> int:
        """Send everything due now, settle it, repeat until nothing is due; for tests and tools."""
        total = 0
        worker_id = await self._liveness.register()
        try:
            for _ in range(max_rounds):
                now = self._clock.now()
                async with self._pool.acquire() as conn:
                    await reap(conn, now)
                    await self._housekeeper.expire_on(conn, now)
                    deliveries = await claim(
                        conn,
                        now,
                        self._config.concurrency,
                        self._config.limits,
                        worker_id=worker_id,
                    )
                if not deliveries:
                    break
                outcomes = await asyncio.gather(*(self.deliverer.attempt(d) for d in deliveries))
                settled = [s for s in outcomes if s is not None]
                missed = [d for d, s in zip(deliveries, outcomes, strict=True) if s is None]
                async with self._pool.acquire() as conn:
                    await release(conn, missed)
                    total += await settle(conn, settled, self._clock.now(), self._config.limits)
                    await flow.apply(
                        conn, self._limiter.take(self._clock.now()), self._limiter.config
                    )
        finally:
            await self._liveness.close()
        return total

    # ---- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Until stop(): claim and send; then finish or hand back in-flight work."""
        await self._start()
        helpers = [
            asyncio.create_task(self._liveness.keep_alive(), name="worker-liveness"),
            asyncio.create_task(self._housekeeper.run(), name="worker-housekeeping"),
        ]
        settler = asyncio.create_task(self._settler.run(), name="worker-settle")
        try:
            await self._claim_loop()
        finally:
            await self._shutdown()
            self._settler.close()
            await settler
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._liveness.close()

    async def _start(self) -> None:
        """Register (retrying while the database is away) and make the coming days'
        partitions."""
        delay = 0.1
        while not self._stopping.is_set():
            try:
                await self._liveness.register()
                async with self._pool.acquire() as conn:
                    await ensure_partitions(conn, self._clock.now())
                return
            except DB_ERRORS as exc:
                log.warning(
                    "worker start failed; retrying", extra={"error_class": type(exc).__name__}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _claim_loop(self) -> None:
        # claim in worthwhile batches: one query per freed slot would cost more than the POST
        min_claim = max(1, min(self._config.batch_size, self._config.concurrency) // 4)
        await self._housekeeper.reap()  # a restarted process takes back what it held before
        await self._housekeeper.expire()
        while not self._stopping.is_set():
            free = self._config.concurrency - len(self._tasks)
            want = min(free, self._config.batch_size)
            # A finished attempt frees a local slot, worth a claim right away, unless the last
            # claim came back short: then endpoint caps (or the queue) are the limit, and a
            # claim per finished attempt would cost more than it brings; each settled batch
            # and each NOTIFY wake the loop (and the claim counts this worker's finished but
            # unsettled attempts as free slots of their endpoints).
            self._wake_on_finish = True
            if want >= min_claim or not self._tasks:
                deliveries = await self._claim(want)
                for delivery in deliveries:
                    task = asyncio.create_task(self._run_delivery(delivery))
                    self._tasks[task] = delivery
                if len(deliveries) == want:
                    await asyncio.sleep(0)
                    continue
                self._wake_on_finish = False
            timeout = self._config.poll_interval_seconds
            if not self._tasks:
                timeout = await self._until_next_due(timeout)
            await self._idle(timeout)

    async def _idle(self, seconds: float) -> None:
        """Wait for a wake-up (NOTIFY, freed slot, settled batch) or the timer."""
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass
        finally:
            self._wake.clear()

    async def _until_next_due(self, longest: float) -> float:
        """Sleep no longer than until the next scheduled retry, so retries are on time."""
        try:
            async with self._pool.acquire() as conn:
                due = await next_due(conn)
        except DB_ERRORS:
            return longest
        if due is None:
            return longest
        wait = (due - self._clock.now()).total_seconds()
        # due already but not claimable (endpoint at its cap, elsewhere): a settle frees it
        return min(longest, wait) if wait > 0 else min(longest, 0.25)

    def _allowance(self) -> TenantAllowance:
        """Each tenant's room on this worker: its fair share minus what it has in flight."""
        cap = self._config.tenant_slots
        busy = Counter(delivery.tenant_id for delivery in self._tasks.values())
        return TenantAllowance(cap, {t: max(cap - n, 0) for t, n in busy.items()})

    async def _claim(self, want: int) -> list[ClaimedDelivery]:
        worker_id = self._liveness.worker_id
        if worker_id is None:  # re-registering after a lost session: claim nothing meanwhile
            await asyncio.sleep(0.5)
            return []
        try:
            async with self._pool.acquire() as conn:
                deliveries = await claim(
                    conn,
                    self._clock.now(),
                    want,
                    self._config.limits,
                    self._cursor,
                    worker_id=worker_id,
                    allowance=self._allowance(),
                    finished=self._settler.finished(),
                )
            if deliveries:  # the next claim's walk over endpoints starts after the last served
                self._cursor = walked_to(self._cursor, [d.endpoint_id for d in deliveries])
            return deliveries
        except DB_ERRORS as exc:
            log.warning("claim failed; will retry", extra={"error_class": type(exc).__name__})
            await asyncio.sleep(0.5)
            return []

    async def _run_delivery(self, delivery: ClaimedDelivery) -> None:
        try:
            settlement = await self.deliverer.attempt(delivery)
            if settlement is None:  # its slot went by: back to the queue, unsent
                await self._hand_back([delivery])
        finally:
            self._tasks.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            if self._wake_on_finish:
                self._wake.set()
        if settlement is not None:
            self._settler.add(settlement)

    async def _hand_back(self, deliveries: list[ClaimedDelivery]) -> None:
        """Unsent work back to the queue now; should that fail, the reaper brings it back."""
        with contextlib.suppress(*DB_ERRORS):
            async with self._pool.acquire() as conn:
                await release(conn, deliveries)

    async def _shutdown(self) -> None:
        """Let in-flight attempts finish within the grace period, hand back the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(
                set(self._tasks), timeout=self._config.shutdown_grace_seconds
            )
            unsent = [self._tasks[t] for t in pending if t in self._tasks]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if unsent:
                await self._hand_back(unsent)
