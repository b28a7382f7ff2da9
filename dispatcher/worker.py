"""The delivery loop: claim due work, send it concurrently, settle results in batches.

Idle waits end on whichever comes first: a NOTIFY (new events), a freed slot or settled
batch, the next scheduled retry, or the fallback poll timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp
import asyncpg

from dispatcher import metrics
from dispatcher.attempt import AttemptResult, delivery_headers, send, unix_seconds
from dispatcher.clock import Clock, SystemClock
from dispatcher.db.pool import DB_ERRORS
from dispatcher.ids import format_delivery_id
from dispatcher.models import DeliveryStatus
from dispatcher.policy import Dead, Disable, Done, Outcome, Retry, RetryPolicy
from dispatcher.queue import (
    Job,
    QueueLimits,
    Settlement,
    claim,
    next_due,
    reclaim_expired,
    release,
    settle,
)
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

_DB_ERRORS = DB_ERRORS


@dataclass
class WorkerConfig:
    concurrency: int = 64
    batch_size: int = 64
    attempt_timeout_seconds: float = 5.0
    poll_interval_seconds: float = 5.0
    # how long finished attempts wait to be settled together (0: as soon as one is done)
    flush_interval_seconds: float = 0.002
    shutdown_grace_seconds: float = 10.0
    reclaim_interval_seconds: float = 5.0
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
            flush_interval_seconds=s.settle_interval_seconds,
            reclaim_interval_seconds=min(5.0, s.lease_seconds / 4),
            allow_private_targets=s.allow_private_targets,
            signature_header=s.signature_header,
            limits=QueueLimits(
                batch_size=s.claim_batch_size,
                endpoint_concurrency=s.endpoint_concurrency,
                breaker_threshold=s.breaker_threshold,
                breaker_open_seconds=s.breaker_open_seconds,
                breaker_max_open_seconds=s.breaker_max_open_seconds,
                lease_seconds=s.lease_seconds,
            ),
            policy=RetryPolicy(
                base_seconds=s.retry_base_seconds,
                multiplier=s.retry_multiplier,
                max_delay_seconds=max(s.retry_max_delay_seconds, s.retry_base_seconds),
                max_age_seconds=s.retry_max_age_seconds,
                jitter=s.retry_jitter,
            ),
        )


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
        self._tasks: dict[asyncio.Task[None], Job] = {}
        self._buffer: list[Settlement] = []
        self._buffer_ready = asyncio.Event()
        self._closing = False
        self._wake_on_finish = True
        self._cursor = ""
        self._max_age = timedelta(seconds=config.policy.max_age_seconds)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    # ---- one attempt ----------------------------------------------------------------------

    async def _attempt(self, job: Job) -> Settlement:
        started = self._clock.now()
        if started >= job.age_origin + self._max_age:
            return self._expired(job, started)
        headers = delivery_headers(
            event_id=job.event_id,
            event_type=job.event_type,
            attempt=job.attempt,
            body=job.body,
            secrets=job.secrets,
            timestamp=unix_seconds(started),
            signature_header=self._config.signature_header,
            standard_webhooks=job.standard_webhooks,
            signing=job.signing,
        )
        result = await send(
            self._session,
            url=job.url,
            body=job.body,
            headers=headers,
            timeout_seconds=self._config.attempt_timeout_seconds,
            allow_private=self._config.allow_private_targets,
        )
        return self._decide(job, started, result)

    def _expired(self, job: Job, now: datetime) -> Settlement:
        """Claimed after its max age (an open circuit held it back): dead, and not sent."""
        metrics.DEAD_LETTERS.inc()
        log.info(
            "delivery expired before its attempt",
            extra={
                "event_id": job.event_id,
                "delivery_id": format_delivery_id(job.delivery_id),
                "endpoint_id": job.endpoint_id,
            },
        )
        return Settlement(
            job=job,
            started_at=now,
            duration_ms=0.0,
            outcome="expired",
            status_code=None,
            error=None,
            response_body=None,
            status=DeliveryStatus.DEAD,
            next_attempt_at=now,
            succeeded=False,
            attempted=False,
        )

    def _decide(self, job: Job, started: datetime, result: AttemptResult) -> Settlement:
        now = self._clock.now()
        decision = self._config.policy.decide(
            outcome=result.outcome,
            status_code=result.status_code,
            attempt=job.schedule_attempt,
            event_created_at=job.age_origin,
            now=now,
            retry_after=result.retry_after,
            rng=self._rng,
        )
        status, next_at, disable = DeliveryStatus.DEAD, now, False
        if isinstance(decision, Done):
            status = DeliveryStatus.SUCCEEDED
        elif isinstance(decision, Retry):
            status, next_at = DeliveryStatus.PENDING, decision.at
        elif isinstance(decision, Disable):
            status, disable = DeliveryStatus.CANCELLED, True
        self._observe(job, result, decision, now)
        return Settlement(
            job=job,
            started_at=started,
            duration_ms=result.duration_ms,
            outcome=result.outcome.value,
            status_code=result.status_code,
            error=result.error,
            response_body=result.response_body,
            status=status,
            next_attempt_at=next_at,
            succeeded=result.outcome == Outcome.SUCCESS,
            disable_endpoint=disable,
        )

    def _observe(self, job: Job, result: AttemptResult, decision: object, now: datetime) -> None:
        metrics.DELIVERY_ATTEMPTS.labels(outcome=result.outcome.value).inc()
        metrics.ATTEMPT_DURATION.observe(result.duration_ms / 1000)
        if isinstance(decision, Done) and job.age_origin == job.event_created_at:
            metrics.EVENT_LATENCY.observe(max((now - job.event_created_at).total_seconds(), 0))
        elif isinstance(decision, Dead):
            metrics.DEAD_LETTERS.inc()
        # every failure at INFO; successes at DEBUG (the attempts table keeps them all)
        level = logging.DEBUG if isinstance(decision, Done) else logging.INFO
        if not log.isEnabledFor(level):
            return  # the hot path: no record built for a line nobody will read
        log.log(
            level,
            "delivery attempt",
            extra={
                "event_id": job.event_id,
                "delivery_id": format_delivery_id(job.delivery_id),
                "endpoint_id": job.endpoint_id,
                "attempt": job.attempt,
                "outcome": result.outcome.value,
                "status_code": result.status_code,
                "duration_ms": round(result.duration_ms, 2),
                "error_class": result.error,
            },
        )

    # ---- test mode ------------------------------------------------------------------------

    async def drain(self, max_rounds: int = 1000) -> int:
        """Send everything due now, settle it, repeat until nothing is due; for tests and tools."""
        total = 0
        for _ in range(max_rounds):
            now = self._clock.now()
            async with self._pool.acquire() as conn:
                await reclaim_expired(conn, now)
                jobs = await claim(conn, now, self._config.concurrency, self._config.limits)
            if not jobs:
                break
            settled = await asyncio.gather(*(self._attempt(j) for j in jobs))
            async with self._pool.acquire() as conn:
                total += await settle(conn, list(settled), self._clock.now(), self._config.limits)
        return total

    # ---- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Until stop(): claim and send; then finish or hand back in-flight work."""
        flusher = asyncio.create_task(self._flush_loop(), name="worker-flush")
        try:
            await self._claim_loop()
        finally:
            await self._shutdown()
            self._closing = True
            self._buffer_ready.set()
            await flusher

    async def _claim_loop(self) -> None:
        last_reclaim = 0.0
        loop = asyncio.get_running_loop()
        # claim in worthwhile batches: one query per freed slot would cost more than the POST
        min_claim = max(1, min(self._config.batch_size, self._config.concurrency) // 4)
        while not self._stopping.is_set():
            if loop.time() - last_reclaim >= self._config.reclaim_interval_seconds:
                last_reclaim = loop.time()
                await self._reclaim()
            free = self._config.concurrency - len(self._tasks)
            want = min(free, self._config.batch_size)
            # A finished attempt frees a local slot, worth a claim right away, unless the last
            # claim came back short: then endpoint caps are the limit, and until it is settled
            # the finished attempt still counts against its endpoint, so claiming is futile.
            self._wake_on_finish = True
            if want >= min_claim or not self._tasks:
                jobs = await self._claim(want)
                for job in jobs:
                    task = asyncio.create_task(self._run_job(job))
                    self._tasks[task] = job
                if len(jobs) == want:
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

    async def _claim(self, want: int) -> list[Job]:
        try:
            async with self._pool.acquire() as conn:
                jobs = await claim(conn, self._clock.now(), want, self._config.limits, self._cursor)
            if jobs:  # the next claim's walk over endpoints starts after the last one served
                self._cursor = max(j.endpoint_id for j in jobs)
            return jobs
        except _DB_ERRORS as exc:
            log.warning("claim failed; will retry", extra={"error_class": type(exc).__name__})
            await asyncio.sleep(0.5)
            return []

    async def _reclaim(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                count = await reclaim_expired(conn, self._clock.now())
            if count:
                log.warning(f"reclaimed {count} deliveries from expired leases")
        except _DB_ERRORS as exc:
            log.warning("lease reclaim failed", extra={"error_class": type(exc).__name__})

    async def _run_job(self, job: Job) -> None:
        try:
            settlement = await self._attempt(job)
        finally:
            self._tasks.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            if self._wake_on_finish:
                self._wake.set()
        self._buffer.append(settlement)
        self._buffer_ready.set()

    async def _flush_loop(self) -> None:
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._buffer_ready.clear()
                await self._buffer_ready.wait()
                continue
            if len(self._buffer) < self._config.batch_size and not self._closing:
                await asyncio.sleep(self._config.flush_interval_seconds)
            batch, self._buffer = self._buffer, []
            await self._settle(batch)
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
