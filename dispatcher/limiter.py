"""Adaptive concurrency per endpoint, pure: AIMD with slow start and a latency signal.

The same idea as TCP congestion control (and Netflix's AIMD concurrency limiter): the number
of requests an endpoint may have in flight grows while it answers 2xx quickly and shrinks
multiplicatively on signs of overload. No I/O and no clock reads: the caller passes each
finished attempt and the time, and stores the returned state (one row per endpoint, shared
by every worker process).

Rules, with the defaults of ``LimiterConfig``:

* Slow start: a success adds 1 to the limit (the limit doubles per round trip) until the
  first overload; after it, a success adds ``1 / limit`` (about +1 per round trip).
* Growth only when the limit is being used: with fewer than half of it in flight, a success
  leaves it alone, so an idle endpoint does not accumulate a limit it never proved it takes.
* Overload (timeout, connection error, 5xx, 429): limit x 0.5, and slow start ends there.
* Rising latency: when the recent latency (an average over the last ~10 successes, so one
  slow answer or a scheduling hiccup does not count) exceeds 2 x the endpoint's baseline and
  lies at least 50 ms above it: limit x 0.9. The latency is what the worker measures, its own
  event loop included: a busy worker on a busy host adds tens of milliseconds to a fast
  receiver's answers (10-40 ms, peaks near 90, in the benchmark's 2,000 events/s run on 2
  shared cores), and cutting the limit for that only made the worker slower. A receiver that
  really queues requests slows down by more.
* One decrease per round trip: an attempt that started before the last decrease reports on
  a window already cut, so a burst of failures from one window halves the limit once.
* Other outcomes (a 4xx other than 429, a redirect, a refused address, TLS failure) say
  nothing about load: the limit stays.
* The limit is kept within [floor, ceiling]: ``DISPATCHER_ENDPOINT_CONCURRENCY_FLOOR`` and
  ``DISPATCHER_ENDPOINT_CONCURRENCY``. An endpoint that keeps failing is the circuit
  breaker's business (it backs the whole endpoint off), not the limiter's.

The baseline is the lowest latency seen, drifting up towards slower successes with a time
constant of ``baseline_drift_seconds`` (30 s): each update moves it by the fraction of the gap
that the time since the last update is of 30 s, however many attempts report in that time.
An endpoint that becomes slower for good gets a new baseline within a minute or so instead of
being held down forever, while a burst of slow answers cannot move it at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from dispatcher.policy import Outcome


class Feedback(StrEnum):
    """What one finished attempt says about the endpoint's load."""

    SUCCESS = "success"
    OVERLOAD = "overload"
    NEUTRAL = "neutral"


OVERLOAD_OUTCOMES = frozenset({Outcome.TIMEOUT, Outcome.CONNECTION_ERROR, Outcome.HTTP_5XX})
TOO_MANY_REQUESTS = 429


def feedback(outcome: Outcome, status_code: int | None) -> Feedback:
    """Classify an attempt for the limiter; a 429 is overload although it is a 4xx."""
    if outcome == Outcome.SUCCESS:
        return Feedback.SUCCESS
    if outcome in OVERLOAD_OUTCOMES or status_code == TOO_MANY_REQUESTS:
        return Feedback.OVERLOAD
    return Feedback.NEUTRAL


@dataclass(frozen=True)
class LimiterConfig:
    floor: int = 1
    ceiling: int = 32
    initial: int = 8
    overload_factor: float = 0.5
    latency_factor: float = 0.9
    latency_tolerance: float = 2.0
    latency_min_rise_seconds: float = 0.050
    baseline_drift_seconds: float = 30.0
    recent_weight: float = 0.1  # of each success in the recent latency (an EWMA)

    def __post_init__(self) -> None:
        checks = {
            "floor": self.floor >= 1,
            "ceiling": self.ceiling >= self.floor,
            "overload_factor": 0 < self.overload_factor < 1,
            "latency_factor": 0 < self.latency_factor < 1,
            "latency_tolerance": self.latency_tolerance > 1,
            "latency_min_rise_seconds": self.latency_min_rise_seconds >= 0,
            "baseline_drift_seconds": self.baseline_drift_seconds > 0,
            "recent_weight": 0 < self.recent_weight <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid limiter config: {', '.join(bad)}")


@dataclass(frozen=True)
class LimiterState:
    """One endpoint's limiter, as stored on its row.

    ``limit`` is fractional so additive increase can add ``1 / limit`` per success;
    ``threshold`` ends slow start (infinite until the first overload); ``baseline`` is in
    seconds (None until the first success) and ``baseline_at`` when it last moved;
    ``recent`` is the recent latency (seconds, an exponentially weighted average);
    ``decreased_at`` is the last cut.
    """

    limit: float
    threshold: float = math.inf
    baseline: float | None = None
    baseline_at: datetime | None = None
    decreased_at: datetime | None = None
    recent: float | None = None


def initial_state(config: LimiterConfig) -> LimiterState:
    return LimiterState(limit=float(_clamp(config.initial, config)))


def allowed(state: LimiterState, config: LimiterConfig) -> int:
    """Requests the endpoint may have in flight now (the limit, whole, within bounds)."""
    return int(_clamp(math.floor(state.limit), config))


def _clamp(value: float, config: LimiterConfig) -> float:
    return min(float(config.ceiling), max(float(config.floor), value))


def next_limit(
    state: LimiterState,
    signal: Feedback,
    latency: float,
    now: datetime,
    config: LimiterConfig,
    in_flight: int | None = None,
) -> LimiterState:
    """The state after one attempt that took ``latency`` seconds and ended at ``now``.

    ``in_flight`` is the endpoint's attempts in flight when this one ended (None: unknown,
    taken as fully used).
    """
    if signal == Feedback.NEUTRAL:
        return state
    if signal == Feedback.OVERLOAD:
        return _decrease(state, config.overload_factor, latency, now, config, end_slow_start=True)
    baseline = _next_baseline(state, latency, now, config)
    recent = (
        latency
        if state.recent is None
        else (state.recent + (latency - state.recent) * config.recent_weight)
    )
    if _latency_rose(state.baseline, recent, config):
        cut = _decrease(state, config.latency_factor, latency, now, config, end_slow_start=True)
        return replace(cut, baseline=baseline, baseline_at=now, recent=recent)
    grown = state.limit
    used = in_flight is None or in_flight * 2 >= allowed(state, config)
    if used:
        grown += 1.0 if state.limit < state.threshold else 1.0 / max(state.limit, 1.0)
    return replace(
        state, limit=_clamp(grown, config), baseline=baseline, baseline_at=now, recent=recent
    )


def _decrease(
    state: LimiterState,
    factor: float,
    latency: float,
    now: datetime,
    config: LimiterConfig,
    *,
    end_slow_start: bool,
) -> LimiterState:
    started = now - timedelta(seconds=max(latency, 0.0))
    if state.decreased_at is not None and started < state.decreased_at:
        return state  # this attempt belongs to a window that was already cut
    limit = _clamp(state.limit * factor, config)
    threshold = limit if end_slow_start else state.threshold
    return replace(state, limit=limit, threshold=threshold, decreased_at=now)


def _latency_rose(baseline: float | None, latency: float, config: LimiterConfig) -> bool:
    if baseline is None:
        return False
    return (
        latency > baseline * config.latency_tolerance
        and latency - baseline >= config.latency_min_rise_seconds
    )


def _next_baseline(
    state: LimiterState, latency: float, now: datetime, config: LimiterConfig
) -> float:
    baseline, since = state.baseline, state.baseline_at
    if baseline is None or since is None or latency <= baseline:
        return max(latency, 0.0)
    elapsed = max((now - since).total_seconds(), 0.0)
    return baseline + (latency - baseline) * min(1.0, elapsed / config.baseline_drift_seconds)
