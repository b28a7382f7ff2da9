"""The API's in-process limits, on a fake clock: failures per address, concurrent slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.limits import ConcurrencyCap, FailureThrottle
from dispatcher.errors import TooManyRequests

T0 = datetime(2026, 5, 11, 8, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def test_failures_are_counted_per_key_within_a_sliding_window() -> None:
    throttle = FailureThrottle(3, MINUTE)
    for second in (0, 10, 20):
        throttle.check("a", T0 + timedelta(seconds=second))
        throttle.failed("a", T0 + timedelta(seconds=second))
    with pytest.raises(TooManyRequests) as refused:
        throttle.check("a", T0 + timedelta(seconds=30))
    assert refused.value.retry_after == 30, "until the oldest failure ages out"
    throttle.check("b", T0 + timedelta(seconds=30))  # another address is not concerned
    throttle.check("a", T0 + timedelta(seconds=60))  # the first failure has aged out


def test_a_flood_of_addresses_cannot_grow_memory_without_bound() -> None:
    throttle = FailureThrottle(1, MINUTE, max_keys=100)
    for i in range(10_000):
        throttle.failed(f"198.51.100.{i}", T0)
    assert len(throttle._failures) == 100
    with pytest.raises(TooManyRequests):
        throttle.check("198.51.100.9999", T0)  # the most recent are the ones kept


def test_a_cap_refuses_the_one_beyond_it_and_frees_its_slot() -> None:
    cap = ConcurrencyCap(2, retry_after=1)
    with cap.slot("t", "test sends"), cap.slot("t", "test sends"):
        with pytest.raises(TooManyRequests) as refused, cap.slot("t", "test sends"):
            pass
        assert refused.value.retry_after == 1  # answered 429 with Retry-After (api/errors.py)
        with cap.slot("other", "test sends"):
            assert cap.running("other") == 1
    assert (cap.running("t"), cap.running("other")) == (0, 0)
    with pytest.raises(RuntimeError), cap.slot("t", "test sends"):
        raise RuntimeError("a failing send")
    assert cap.running("t") == 0, "a failure frees its slot too"
