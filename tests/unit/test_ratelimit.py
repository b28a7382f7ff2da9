"""Rate limit arithmetic: slots, spacing, the horizon, and the 1-second-window promise."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.ratelimit import (
    JITTER_ALLOWANCE_MICROSECONDS,
    MAX_RATE_PER_SECOND,
    interval,
    missed,
    next_slot,
    reserve,
)

T0 = datetime(2026, 5, 11, 8, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def _ms(n: float) -> datetime:
    return T0 + n * MS


@pytest.mark.parametrize(
    ("rate", "micros"),
    [(1, 1_020_000), (2, 510_000), (3, 340_000), (50, 20_400), (7, 145_715), (10_000, 102)],
)
def test_interval_leaves_room_for_jitter_and_rounds_up_to_the_microsecond(
    rate: int, micros: int
) -> None:
    assert interval(rate) == timedelta(microseconds=micros)


@pytest.mark.parametrize("rate", [0, -1, MAX_RATE_PER_SECOND + 1])
def test_interval_refuses_rates_out_of_range(rate: int) -> None:
    with pytest.raises(ValueError):
        interval(rate)


@pytest.mark.parametrize(
    ("name", "tat", "now_ms", "rate", "wanted", "horizon_ms", "slots_ms", "tat_ms"),
    [
        ("never used: starts now", None, 0, 50, 3, 100, [0, 20.4, 40.8], 61.2),
        ("horizon bounds the batch", None, 0, 50, 10, 100, [0, 20.4, 40.8, 61.2, 81.6], 102),
        ("idle past tat: starts now", _ms(-500), 0, 50, 2, 100, [0, 20.4], 40.8),
        ("waits for tat", _ms(30), 0, 50, 2, 100, [30, 50.4], 70.8),
        ("tat beyond horizon: nothing", _ms(150), 0, 50, 5, 100, [], 150),
        ("nothing wanted", _ms(10), 0, 50, 0, 100, [], 10),
        ("zero horizon: only a due slot", None, 0, 10, 5, 0, [0], 102),
    ],
)
def test_reserve(
    name: str,
    tat: datetime | None,
    now_ms: float,
    rate: int,
    wanted: int,
    horizon_ms: float,
    slots_ms: list[float],
    tat_ms: float,
) -> None:
    got = reserve(tat, _ms(now_ms), rate, wanted, horizon_ms * MS)
    assert got.slots == [_ms(s) for s in slots_ms], name
    assert got.tat == _ms(tat_ms), name


def test_nothing_used_keeps_an_unused_tat() -> None:
    assert reserve(None, T0, 5, 0, 100 * MS).tat is None


def test_next_slot() -> None:
    assert next_slot(None, T0) == T0
    assert next_slot(_ms(-5), T0) == T0
    assert next_slot(_ms(5), T0) == _ms(5)


@pytest.mark.parametrize("rate", [1, 3, 7, 50, 333, 1000])
def test_no_one_second_window_ever_holds_more_than_the_rate(rate: int) -> None:
    """Three workers claiming at random moments, each under the row lock in turn: the
    slots they get, merged, each delayed by up to the jitter allowance (scheduling, network),
    never put more than `rate` arrivals in any [t, t + 1 s)."""
    rng = random.Random(rate)
    tat: datetime | None = None
    now = T0
    starts: list[datetime] = []
    while now < T0 + timedelta(seconds=5):
        now += timedelta(microseconds=rng.randrange(0, 40_000))
        got = reserve(tat, now, rate, rng.randrange(0, 64), timedelta(milliseconds=250))
        tat = got.tat
        assert all(s >= now for s in got.slots)  # never a slot in the past
        starts += got.slots
    assert len(starts) >= rate * 4  # and the rate is actually used
    allowance = JITTER_ALLOWANCE_MICROSECONDS
    starts = sorted(s + timedelta(microseconds=rng.randrange(0, allowance)) for s in starts)
    second = timedelta(seconds=1)
    j = 0
    for i, start in enumerate(starts):
        while j < len(starts) and starts[j] < start + second:
            j += 1
        assert j - i <= rate, f"{j - i} starts within 1 s from {start}"


@pytest.mark.parametrize(
    ("late_ms", "missed_it"), [(0, False), (5, False), (10, False), (10.001, True), (80, True)]
)
def test_a_slot_is_missed_beyond_the_start_tolerance(late_ms: float, missed_it: bool) -> None:
    assert missed(T0, T0 + late_ms * MS) is missed_it
