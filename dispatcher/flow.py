"""Adaptive concurrency, applied: a worker's finished attempts fold into each endpoint's shared
limiter state (dispatcher/limiter.py) under the endpoint row's lock.

A worker collects what its attempts said and applies it every ``interval`` (20 ms), or at
once when an endpoint showed overload, in one short transaction: a busy endpoint costs a few
statements a second, not one per attempt, and every worker's observations count.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from dispatcher import metrics
from dispatcher.db import queries as q
from dispatcher.limiter import Feedback, LimiterConfig, LimiterState, feedback, next_limit
from dispatcher.policy import Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One finished attempt, as the limiter sees it."""

    endpoint_id: str
    signal: Feedback
    latency: float  # seconds
    ended_at: datetime


def state_from_row(row: Any, config: LimiterConfig) -> LimiterState:
    limit = row["concurrency_limit"]
    threshold = row["limit_threshold"]
    return LimiterState(
        limit=float(config.initial) if limit is None else limit,
        threshold=math.inf if threshold is None else threshold,
        baseline=row["latency_baseline"],
        baseline_at=row["baseline_at"],
        decreased_at=row["limit_decreased_at"],
        recent=row["latency_recent"],
    )


def fold(
    state: LimiterState, samples: list[Sample], in_flight: int, config: LimiterConfig
) -> LimiterState:
    """Apply samples in the order they ended; those just finished count as in flight."""
    busy = in_flight + len(samples)
    for s in sorted(samples, key=lambda s: s.ended_at):
        before = state
        state = next_limit(state, s.signal, s.latency, s.ended_at, config, in_flight=busy)
        if state.decreased_at != before.decreased_at:
            _trace_cut(s, before, state)
    return state


def _trace_cut(sample: Sample, before: LimiterState, after: LimiterState) -> None:
    """The limiter's trace: every cut is counted by its signal, and logged at DEBUG with
    what it saw (the way to tell a struggling receiver from a busy worker)."""
    signal = "overload" if sample.signal == Feedback.OVERLOAD else "latency"
    metrics.LIMIT_CUTS.labels(signal=signal).inc()
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "concurrency limit cut",
            extra={
                "endpoint_id": sample.endpoint_id,
                "signal": signal,
                "limit_before": round(before.limit, 2),
                "limit_after": round(after.limit, 2),
                "latency_ms": round(sample.latency * 1000, 2),
                "recent_ms": None if after.recent is None else round(after.recent * 1000, 2),
                "baseline_ms": None if after.baseline is None else round(after.baseline * 1000, 2),
            },
        )


class LimiterBook:
    """What one worker's attempts said since the last time it was applied."""

    def __init__(self, config: LimiterConfig, interval: float = 0.02) -> None:
        self.config = config
        self._interval = timedelta(seconds=interval)
        self._samples: list[Sample] = []
        self._urgent = False
        self._applied_at: datetime | None = None

    def record(
        self,
        endpoint_id: str,
        outcome: Outcome,
        status_code: int | None,
        latency: float,
        ended_at: datetime,
    ) -> None:
        signal = feedback(outcome, status_code)
        if signal == Feedback.NEUTRAL:
            return
        self._samples.append(Sample(endpoint_id, signal, latency, ended_at))
        self._urgent = self._urgent or signal == Feedback.OVERLOAD

    def due(self, now: datetime) -> bool:
        if not self._samples:
            return False
        return self._urgent or self._applied_at is None or now - self._applied_at >= self._interval

    def take(self, now: datetime) -> list[Sample]:
        samples, self._samples, self._urgent = self._samples, [], False
        self._applied_at = now
        return samples


async def apply(conn: asyncpg.Connection, samples: list[Sample], config: LimiterConfig) -> None:
    """Fold the samples into each endpoint's stored state, under its row lock."""
    by_endpoint: dict[str, list[Sample]] = {}
    for s in samples:
        by_endpoint.setdefault(s.endpoint_id, []).append(s)
    if not by_endpoint:
        return
    async with conn.transaction():
        rows = await conn.fetch(q.LOCK_LIMITERS, sorted(by_endpoint))
        states = {
            r["id"]: fold(state_from_row(r, config), by_endpoint[r["id"]], r["in_flight"], config)
            for r in rows
        }
        ids = sorted(states)
        await conn.execute(
            q.SAVE_LIMITERS,
            ids,
            [states[i].limit for i in ids],
            [None if math.isinf(states[i].threshold) else states[i].threshold for i in ids],
            [states[i].baseline for i in ids],
            [states[i].baseline_at for i in ids],
            [states[i].decreased_at for i in ids],
            [states[i].recent for i in ids],
        )
