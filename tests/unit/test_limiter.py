"""Adaptive concurrency: the AIMD arithmetic step by step, and whole runs on a fake clock."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.clock import FakeClock
from dispatcher.limiter import (
    Feedback,
    LimiterConfig,
    LimiterState,
    allowed,
    feedback,
    initial_state,
    next_limit,
)
from dispatcher.policy import Outcome

T0 = datetime(2026, 5, 11, 8, 0, tzinfo=UTC)
CONFIG = LimiterConfig()  # the product defaults: floor 1, ceiling 32, start at 8


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("outcome", "status", "expected"),
    [
        (Outcome.SUCCESS, 200, Feedback.SUCCESS),
        (Outcome.SUCCESS, 204, Feedback.SUCCESS),
        (Outcome.TIMEOUT, None, Feedback.OVERLOAD),
        (Outcome.CONNECTION_ERROR, None, Feedback.OVERLOAD),
        (Outcome.HTTP_5XX, 500, Feedback.OVERLOAD),
        (Outcome.HTTP_5XX, 503, Feedback.OVERLOAD),
        (Outcome.HTTP_4XX, 429, Feedback.OVERLOAD),
        (Outcome.HTTP_4XX, 400, Feedback.NEUTRAL),
        (Outcome.HTTP_4XX, 404, Feedback.NEUTRAL),
        (Outcome.REDIRECT, 302, Feedback.NEUTRAL),
        (Outcome.TLS_ERROR, None, Feedback.NEUTRAL),
        (Outcome.BLOCKED_ADDRESS, None, Feedback.NEUTRAL),
    ],
)
def test_feedback_classifies_every_outcome(
    outcome: Outcome, status: int | None, expected: Feedback
) -> None:
    assert feedback(outcome, status) == expected


def test_every_outcome_is_classified() -> None:
    assert {feedback(o, None) for o in Outcome} <= set(Feedback)


SLOW_START = LimiterState(limit=8.0)
AVOIDANCE = LimiterState(20.0, 20.0, baseline=0.010, baseline_at=_at(0), decreased_at=_at(-10))


@pytest.mark.parametrize(
    ("name", "state", "signal", "latency", "in_flight", "expected_limit"),
    [
        # slow start: +1 per success
        ("slow start grows by one", SLOW_START, Feedback.SUCCESS, 0.005, 8, 9.0),
        # congestion avoidance: +1/limit per success
        ("avoidance grows by 1/limit", AVOIDANCE, Feedback.SUCCESS, 0.010, 20, 20.05),
        # unused limit does not grow
        ("idle endpoint keeps its limit", AVOIDANCE, Feedback.SUCCESS, 0.010, 9, 20.0),
        ("half used grows", AVOIDANCE, Feedback.SUCCESS, 0.010, 10, 20.05),
        # overload halves
        ("timeout halves", AVOIDANCE, Feedback.OVERLOAD, 5.0, 20, 10.0),
        ("429 halves", AVOIDANCE, Feedback.OVERLOAD, 0.010, 20, 10.0),
        # rising latency: x0.9
        ("latency doubled and +50 ms cuts", AVOIDANCE, Feedback.SUCCESS, 0.061, 20, 18.0),
        ("latency doubled but tiny rise", AVOIDANCE, Feedback.SUCCESS, 0.021, 20, 20.05),
        # a 10 ms receiver seen at 55 ms by a busy worker (its own event loop): no cut
        ("latency x5.5 but +45 ms", AVOIDANCE, Feedback.SUCCESS, 0.055, 20, 20.05),
        (
            "a 1 ms receiver seen at 40 ms on average: the worker's lag, no cut",
            LimiterState(32.0, 28.8, baseline=0.001, baseline_at=_at(0), recent=0.040),
            Feedback.SUCCESS,
            0.042,
            32,
            32.0,
        ),
        (
            "... but at 90 ms on average it is cut",
            LimiterState(32.0, 28.8, baseline=0.001, baseline_at=_at(0), recent=0.090),
            Feedback.SUCCESS,
            0.090,
            32,
            28.8,
        ),
        (
            "latency up 50 ms but under 2x",
            LimiterState(20.0, 20.0, 0.1, _at(0)),
            Feedback.SUCCESS,
            0.150,
            20,
            20.05,
        ),
        # neutral outcomes leave it
        ("a 404 says nothing", AVOIDANCE, Feedback.NEUTRAL, 0.010, 20, 20.0),
        # bounds
        ("never above the ceiling", LimiterState(32.0), Feedback.SUCCESS, 0.005, 32, 32.0),
        ("never below the floor", LimiterState(1.0, 1.0), Feedback.OVERLOAD, 0.005, 1, 1.0),
    ],
)
def test_one_step(
    name: str,
    state: LimiterState,
    signal: Feedback,
    latency: float,
    in_flight: int,
    expected_limit: float,
) -> None:
    after = next_limit(state, signal, latency, _at(0), CONFIG, in_flight=in_flight)
    assert after.limit == pytest.approx(expected_limit), name


def test_overload_ends_slow_start_and_records_the_cut() -> None:
    after = next_limit(SLOW_START, Feedback.OVERLOAD, 1.0, _at(0), CONFIG)
    assert (after.limit, after.threshold, after.decreased_at) == (4.0, 4.0, _at(0))
    grown = next_limit(after, Feedback.SUCCESS, 0.001, _at(0.1), CONFIG)
    assert grown.limit == pytest.approx(4.25)  # additive now, not +1


def test_failures_of_one_window_cut_once() -> None:
    """Twenty timeouts of attempts started together halve the limit once, not twenty times."""
    state = LimiterState(limit=32.0, threshold=32.0, baseline=0.01)
    for i in range(20):
        state = next_limit(state, Feedback.OVERLOAD, 5.0, _at(5.0 + i * 0.001), CONFIG)
    assert state.limit == 16.0
    # an attempt started after the cut reports on the new window: it cuts again
    state = next_limit(state, Feedback.OVERLOAD, 5.0, _at(10.1), CONFIG)
    assert state.limit == 8.0


def test_baseline_is_the_minimum_and_drifts_up_with_time_not_with_samples() -> None:
    state = initial_state(CONFIG)
    assert state.baseline is None
    state = next_limit(state, Feedback.SUCCESS, 0.010, _at(0), CONFIG)
    state = next_limit(state, Feedback.SUCCESS, 0.004, _at(1), CONFIG)
    assert state.baseline == pytest.approx(0.004)
    state = next_limit(state, Feedback.SUCCESS, 0.014, _at(4), CONFIG)
    assert state.baseline == pytest.approx(0.004 + 0.010 * 3 / 30)  # 3 s of a 30 s drift
    # a thousand slow answers at one instant do not move it further
    for _ in range(1000):
        state = next_limit(state, Feedback.SUCCESS, 0.014, _at(4), CONFIG)
    assert state.baseline == pytest.approx(0.005)


def test_a_permanently_slower_endpoint_gets_a_new_baseline() -> None:
    """From 5 ms to 100 ms for good: the limit is cut at first, then grows again."""
    clock = FakeClock(T0)
    state = _run(clock, initial_state(CONFIG), rounds=5)
    state = _run(clock, state, rounds=600, answer=(Feedback.SUCCESS, 0.100))
    assert state.baseline is not None and state.baseline > 0.08  # two time constants: 86%
    assert state.decreased_at is not None and state.decreased_at < T0 + timedelta(seconds=30)
    assert allowed(state, CONFIG) == 32


def test_neutral_and_overload_keep_the_baseline() -> None:
    state = LimiterState(limit=10.0, baseline=0.003)
    assert next_limit(state, Feedback.NEUTRAL, 2.0, _at(0), CONFIG).baseline == 0.003
    assert next_limit(state, Feedback.OVERLOAD, 2.0, _at(0), CONFIG).baseline == 0.003


def test_allowed_is_the_whole_limit_within_bounds() -> None:
    assert allowed(LimiterState(limit=9.99), CONFIG) == 9
    assert allowed(LimiterState(limit=0.2), CONFIG) == 1
    assert allowed(LimiterState(limit=500.0), CONFIG) == 32
    narrow = LimiterConfig(floor=2, ceiling=4, initial=16)
    assert initial_state(narrow).limit == 4.0
    assert allowed(LimiterState(limit=1.0), narrow) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"floor": 0},
        {"floor": 8, "ceiling": 4},
        {"overload_factor": 1.0},
        {"latency_factor": 0.0},
        {"latency_tolerance": 1.0},
        {"baseline_drift_seconds": 0},
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid limiter config"):
        LimiterConfig(**kwargs)  # type: ignore[arg-type]


# ---- whole runs: a simulated endpoint answering on a fake clock ---------------------------


def _run(
    clock: FakeClock,
    state: LimiterState,
    rounds: int,
    answer: tuple[Feedback, float] | None = None,
    capacity: int | None = None,
) -> LimiterState:
    """Each round sends `allowed` requests at once; they all answer after their latency.

    With ``capacity``, an endpoint that serves that many at a time: beyond it, requests queue
    and latency grows with the excess (like a real server's accept queue).
    """
    for _ in range(rounds):
        n = allowed(state, CONFIG)
        signal, latency = answer or (Feedback.SUCCESS, 0.005)
        if capacity is not None and n > capacity:
            latency = 0.005 * math.ceil(n / capacity) + 0.05 * (n - capacity) / capacity
        clock.advance(latency)
        for _ in range(n):
            state = next_limit(state, signal, latency, clock.now(), CONFIG, in_flight=n)
    return state


def test_a_fast_healthy_endpoint_reaches_the_ceiling_quickly() -> None:
    clock = FakeClock(T0)
    state = _run(clock, initial_state(CONFIG), rounds=3)
    assert allowed(state, CONFIG) == 32  # 8 -> 16 -> 32: slow start doubles per round
    assert clock.now() - T0 < timedelta(seconds=0.1)


def test_a_dead_endpoint_falls_to_the_floor() -> None:
    clock = FakeClock(T0)
    state = _run(clock, LimiterState(limit=32.0), rounds=6, answer=(Feedback.OVERLOAD, 5.0))
    assert allowed(state, CONFIG) == 1  # one halving per 5 s window: 32 -> 1 in five windows


def test_an_endpoint_with_limited_capacity_settles_near_it() -> None:
    """A server that handles 12 at a time, each request beyond adding 4 ms: the limit hovers
    where its latency has risen by the 50 ms the latency signal tolerates (about twice the
    capacity here), neither running away to the ceiling nor collapsing."""
    clock = FakeClock(T0)
    state = _run(clock, initial_state(CONFIG), rounds=200, capacity=12)
    seen = []
    for _ in range(50):
        state = _run(clock, state, rounds=1, capacity=12)
        seen.append(allowed(state, CONFIG))
    assert max(seen) <= 28  # never runs away to the ceiling (32)
    assert min(seen) >= 6  # nor collapses: it keeps the server busy


def test_recovery_after_an_outage_is_additive() -> None:
    clock = FakeClock(T0)
    state = _run(clock, LimiterState(limit=32.0), rounds=2, answer=(Feedback.OVERLOAD, 1.0))
    low = allowed(state, CONFIG)
    assert low == 8
    state = _run(clock, state, rounds=4)
    assert low < allowed(state, CONFIG) <= low + 4  # about +1 per round trip, not doubling


def test_one_slow_answer_does_not_cut_but_a_sustained_rise_does() -> None:
    """The latency signal is the recent average: a hiccup passes, a slowdown does not."""
    state = LimiterState(20.0, 20.0, baseline=0.002, baseline_at=_at(0), recent=0.002)
    spiked = next_limit(state, Feedback.SUCCESS, 0.150, _at(0.1), CONFIG, in_flight=20)
    assert spiked.limit > state.limit  # 0.002 + 0.148 * 0.1 = 17 ms: under the 20 ms rise
    slowed = state
    for i in range(10):
        slowed = next_limit(slowed, Feedback.SUCCESS, 0.150, _at(0.2 + i / 100), CONFIG)
    assert slowed.limit < state.limit  # the average crossed 22 ms: cut
