"""The delivery loop: claim due work, send it concurrently, settle results in batches.

The worker only loops: the attempt pipeline (`dispatcher.attempt.run_attempt`) makes the
attempt and the retry policy (`RetryPolicy.verdict`) decides what follows it. Idle waits end
on whichever comes first: a NOTIFY (new events), a freed slot or settled batch, the next
scheduled retry, or the fallback poll timer. Besides, every worker reaps the deliveries of
dead workers (every 2 s) and dead-letters pending deliveries past their max age (every poll
interval), whatever their endpoint's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp
import asyncpg

from dispatcher import flow, metrics, ratelimit
from dispatcher.attempt import AttemptRecord, run_attempt
from dispatcher.clock import Clock, SystemClock
from dispatcher.db.pool import DB_ERRORS
from dispatcher.flow import LimiterBook
from dispatcher.ids import format_delivery_id
from dispatcher.liveness import Liveness
from dispatcher.models import DeliveryStatus
from dispatcher.partitions import ensure_partitions
from dispatcher.policy import Outcome, RetryPolicy, Verdict
from dispatcher.queue import (
    ClaimedDelivery,
    QueueLimits,
    Settlement,
    TenantAllowance,
    claim,
    expire_pending,
    next_due,
    reap,
    release,
    settle,
)
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

_DB_ERRORS = DB_ERRORS


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
        self._session = session
        self._config = config
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: dict[asyncio.Task[None], ClaimedDelivery] = {}
        self._buffer: list[Settlement] = []
        self._buffer_ready = asyncio.Event()
        self._closing = False
        self._wake_on_finish = True
        self._cursor = ""
        self._liveness = Liveness(pool)
        self._limiter = LimiterBook(config.limits.limiter())

    @property
    def worker_id(self) -> int | None:
        return self._liveness.worker_id

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    # ---- one attempt ----------------------------------------------------------------------

    async def _attempt(self, delivery: ClaimedDelivery) -> Settlement | None:
        """Never raises (but cancellation): whatever fails becomes a recorded failed attempt.
        None when the delivery's rate-limit slot went by before it could start (it is not sent)."""
        if delivery.not_before is not None:  # a rate-limit slot: not a moment earlier
            wait = (delivery.not_before - self._clock.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            self._wake.set()  # the endpoint's next slots are claimable now
            if ratelimit.missed(delivery.not_before, self._clock.now()):
                return None
        started = self._clock.now()
        try:
            early = self._config.policy.before_attempt(
                window_start=delivery.window_start, now=started
            )
            if early is not None:
                self._observe_expired(delivery)
                return Settlement(delivery, None, early)
            record = await run_attempt(
                self._session,
                delivery.request(),
                started_at=started,
                timeout_seconds=self._config.attempt_timeout_seconds,
                allow_private=self._config.allow_private_targets,
                signature_header=self._config.signature_header,
            )
        except Exception as exc:  # a bug outside the pipeline's own guards: still recorded
            log.exception("delivery attempt failed internally")
            record = AttemptRecord(
                delivery.attempt,
                started,
                0.0,
                Outcome.INTERNAL_ERROR,
                None,
                f"Internal: {type(exc).__name__}",
                None,
                None,
            )
        return self._decide(delivery, record)

    def _decide(self, delivery: ClaimedDelivery, record: AttemptRecord) -> Settlement:
        now = self._clock.now()
        try:
            verdict = self._config.policy.verdict(
                outcome=record.outcome,
                status_code=record.status_code,
                backoff_step=delivery.backoff_step,
                window_start=delivery.window_start,
                now=now,
                retry_after=record.retry_after,
                rng=self._rng,
            )
        except Exception:
            log.exception("retry policy failed; retrying after the base delay")
            later = now + timedelta(seconds=self._config.policy.base_seconds)
            verdict = Verdict(DeliveryStatus.PENDING, later)
        self._observe(delivery, record, verdict, now)
        self._limiter.record(
            delivery.endpoint_id, record.outcome, record.status_code, record.duration_ms / 1000, now
        )
        return Settlement(delivery, record, verdict)

    def _observe_expired(self, delivery: ClaimedDelivery) -> None:
        metrics.DEAD_LETTERS.inc()
        log.info(
            "delivery expired before its attempt",
            extra={
                "event_id": delivery.event_id,
                "delivery_id": format_delivery_id(delivery.delivery_id),
                "endpoint_id": delivery.endpoint_id,
            },
        )

    def _observe(
        self, delivery: ClaimedDelivery, record: AttemptRecord, verdict: Verdict, now: datetime
    ) -> None:
        metrics.DELIVERY_ATTEMPTS.labels(outcome=record.outcome.value).inc()
        metrics.ATTEMPT_DURATION.observe(record.duration_ms / 1000)
        done = verdict.status == DeliveryStatus.SUCCEEDED
        if done and delivery.window_start == delivery.event_created_at:
            metrics.EVENT_LATENCY.observe(max((now - delivery.event_created_at).total_seconds(), 0))
        elif verdict.status == DeliveryStatus.DEAD:
            metrics.DEAD_LETTERS.inc()
        # every failure at INFO; successes at DEBUG (the attempts table keeps them all)
        level = logging.DEBUG if done else logging.INFO
        if not log.isEnabledFor(level):
            return  # the hot path: no record built for a line nobody will read
        log.log(
            level,
            "delivery attempt",
            extra={
                "event_id": delivery.event_id,
                "delivery_id": format_delivery_id(delivery.delivery_id),
                "endpoint_id": delivery.endpoint_id,
                "attempt": delivery.attempt,
                "outcome": record.outcome.value,
                "status_code": record.status_code,
                "duration_ms": round(record.duration_ms, 2),
                "error_class": record.error,
            },
        )

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
                    await self._expire(conn, now)
                    deliveries = await claim(
                        conn,
                        now,
                        self._config.concurrency,
                        self._config.limits,
                        worker_id=worker_id,
                    )
                if not deliveries:
                    break
                outcomes = await asyncio.gather(*(self._attempt(j) for j in deliveries))
                settled = [s for s in outcomes if s is not None]
                missed = [j for j, s in zip(deliveries, outcomes, strict=True) if s is None]
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
            asyncio.create_task(self._housekeeping(), name="worker-housekeeping"),
        ]
        settler = asyncio.create_task(self._settle_loop(), name="worker-settle")
        try:
            await self._claim_loop()
        finally:
            await self._shutdown()
            self._closing = True
            self._buffer_ready.set()
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
            except _DB_ERRORS as exc:
                log.warning(
                    "worker start failed; retrying", extra={"error_class": type(exc).__name__}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _housekeeping(self) -> None:
        """Every tick (2 s, or the poll interval if shorter): reap dead workers' deliveries and
        dead-letter the pending ones past their max age; hourly, make partitions ahead. Wakes
        the claim loop only when it gave it something to do."""
        loop = asyncio.get_running_loop()
        tick = min(self._config.reap_interval_seconds, self._config.poll_interval_seconds)
        last_partitions = loop.time()
        while True:
            await asyncio.sleep(tick)
            if await self._reap():
                self._wake.set()
            await self._expire_safely()
            if loop.time() - last_partitions >= 3600:
                last_partitions = loop.time()
                await self._ensure_partitions()

    async def _claim_loop(self) -> None:
        # claim in worthwhile batches: one query per freed slot would cost more than the POST
        min_claim = max(1, min(self._config.batch_size, self._config.concurrency) // 4)
        await self._reap()  # a restarted process takes back what its previous life held
        await self._expire_safely()
        while not self._stopping.is_set():
            free = self._config.concurrency - len(self._tasks)
            want = min(free, self._config.batch_size)
            # A finished attempt frees a local slot, worth a claim right away, unless the last
            # claim came back short: then endpoint caps are the limit, and until it is settled
            # the finished attempt still counts against its endpoint, so claiming is futile.
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
        except _DB_ERRORS:
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
                )
            if deliveries:  # the next claim's walk over endpoints starts after the last one served
                self._cursor = max(j.endpoint_id for j in deliveries)
            return deliveries
        except _DB_ERRORS as exc:
            log.warning("claim failed; will retry", extra={"error_class": type(exc).__name__})
            await asyncio.sleep(0.5)
            return []

    async def _reap(self) -> int:
        try:
            async with self._pool.acquire() as conn:
                count = await reap(conn, self._clock.now())
            if count:
                log.warning(f"took back {count} deliveries from dead workers or expired leases")
            return count
        except _DB_ERRORS as exc:
            log.warning("reaping failed", extra={"error_class": type(exc).__name__})
            return 0

    async def _expire(self, conn: asyncpg.Connection, now: datetime) -> int:
        count = await expire_pending(conn, now, self._config.policy.max_age_seconds)
        if count:
            metrics.DEAD_LETTERS.inc(count)
            log.info(f"dead-lettered {count} pending deliveries past their max age")
        return count

    async def _expire_safely(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await self._expire(conn, self._clock.now())
        except _DB_ERRORS as exc:
            log.warning("dead-lettering failed", extra={"error_class": type(exc).__name__})

    async def _ensure_partitions(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await ensure_partitions(conn, self._clock.now())
        except _DB_ERRORS as exc:
            log.warning("creating partitions failed", extra={"error_class": type(exc).__name__})

    async def _run_delivery(self, delivery: ClaimedDelivery) -> None:
        try:
            settlement = await self._attempt(delivery)
            if settlement is None:  # its slot went by: back to the queue, unsent
                await self._hand_back([delivery])
        finally:
            self._tasks.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            if self._wake_on_finish:
                self._wake.set()
        if settlement is not None:
            self._buffer.append(settlement)
            self._buffer_ready.set()

    async def _hand_back(self, deliveries: list[ClaimedDelivery]) -> None:
        """Unsent work back to the queue now; should that fail, the reaper brings it back."""
        with contextlib.suppress(*_DB_ERRORS):
            async with self._pool.acquire() as conn:
                await release(conn, deliveries)

    async def _settle_loop(self) -> None:
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._buffer_ready.clear()
                await self._buffer_ready.wait()
                continue
            if len(self._buffer) < self._config.batch_size and not self._closing:
                await asyncio.sleep(self._config.settle_interval_seconds)
            batch, self._buffer = self._buffer, []
            await self._settle(batch)
            await self._adapt(force=self._closing)
            self._wake.set()

    async def _settle(self, batch: list[Settlement]) -> None:
        """Retry until the database takes it: an attempt's record is never dropped."""
        delay = 0.1
        while batch:
            try:
                async with self._pool.acquire() as conn:
                    await settle(conn, batch, self._clock.now(), self._config.limits)
                return
            except _DB_ERRORS as exc:
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
        except _DB_ERRORS as exc:
            log.warning("limiter update failed", extra={"error_class": type(exc).__name__})

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
                with contextlib.suppress(*_DB_ERRORS):
                    async with self._pool.acquire() as conn:
                        await release(conn, unsent)
