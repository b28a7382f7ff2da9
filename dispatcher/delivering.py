"""One claimed delivery sent and judged: its rate-limit slot, its window, the attempt, the verdict.

The attempt pipeline (`dispatcher.attempt.run_attempt`) makes the attempt and the retry policy
(`RetryPolicy.verdict`) decides what follows it; this module only joins them, counts and logs
what happened, and turns whatever goes wrong into a recorded outcome (never an exception).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp

from dispatcher import metrics, ratelimit
from dispatcher.attempt import AttemptRecord, run_attempt
from dispatcher.clock import Clock
from dispatcher.flow import LimiterBook
from dispatcher.ids import format_delivery_id
from dispatcher.models import DeliveryStatus
from dispatcher.policy import Outcome, RetryPolicy, Verdict
from dispatcher.queue import ClaimedDelivery, Settlement

log = logging.getLogger("dispatcher.worker")  # one log for the worker, whichever part writes


@dataclass(frozen=True)
class AttemptSettings:
    """What an attempt needs from the worker's configuration."""

    policy: RetryPolicy
    timeout_seconds: float
    allow_private_targets: bool
    signature_header: str


class Deliverer:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: AttemptSettings,
        limiter: LimiterBook,
        *,
        clock: Clock,
        rng: random.Random,
        wake: Callable[[], None],
    ) -> None:
        self._session = session
        self._settings = settings
        self._limiter = limiter
        self._clock = clock
        self._rng = rng
        self._wake = wake  # an endpoint's rate-limit slot came: its next ones are claimable

    async def attempt(self, delivery: ClaimedDelivery) -> Settlement | None:
        """Never raises (but cancellation): whatever fails becomes a recorded failed attempt.
        None when the delivery's rate-limit slot went by before it could start (not sent)."""
        if delivery.not_before is not None:  # a rate-limit slot: not a moment earlier
            wait = (delivery.not_before - self._clock.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            self._wake()
            if ratelimit.missed(delivery.not_before, self._clock.now()):
                return None
        started = self._clock.now()
        policy = self._settings.policy
        try:
            early = policy.before_attempt(window_start=delivery.window_start, now=started)
            if early is not None:
                self._observe_expired(delivery)
                return Settlement(delivery, None, early)
            record = await run_attempt(
                self._session,
                delivery.request(),
                started_at=started,
                timeout_seconds=self._settings.timeout_seconds,
                allow_private=self._settings.allow_private_targets,
                signature_header=self._settings.signature_header,
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
        policy = self._settings.policy
        try:
            verdict = policy.verdict(
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
            later = now + timedelta(seconds=policy.base_seconds)
            verdict = Verdict(DeliveryStatus.PENDING, later)
        self._observe(delivery, record, verdict, now)
        self._limiter.record(
            delivery.endpoint_id,
            record.outcome,
            record.status_code,
            record.duration_ms / 1000,
            now,
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
            latency = (now - delivery.event_created_at).total_seconds()
            metrics.EVENT_LATENCY.observe(max(latency, 0))
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
