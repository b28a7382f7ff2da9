"""Rate limit per endpoint, pure: GCRA without burst, i.e. evenly spaced send slots.

An endpoint with ``rate_limit_per_second = r`` gets one send slot every ``1/r`` seconds
(rounded UP to the microsecond, the resolution of a PostgreSQL timestamp, so rounding can
never squeeze in an extra slot). The only state is the theoretical arrival time ``tat``: the
earliest instant the next slot may start. Starts at least ``1/r`` apart mean at most ``r``
attempts start in any 1-second window, which is the promise.

A claim reserves slots for the deliveries it takes, under the endpoint's row lock, so the
arithmetic is exact across any number of workers: slots at ``max(tat, now)``, then every
interval after, as long as they fall within ``horizon`` of now; the delivery waits in the
worker until its slot. A slot that goes unused (a worker dies before sending) is lost, never
given twice. Deliveries beyond the horizon stay pending: they wait their turn, they do not
fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_RATE_PER_SECOND = 10_000


def interval(rate_per_second: int) -> timedelta:
    """Time between two slots, rounded up to whole microseconds."""
    if not 1 <= rate_per_second <= MAX_RATE_PER_SECOND:
        raise ValueError(f"rate must be 1..{MAX_RATE_PER_SECOND} per second")
    return timedelta(microseconds=math.ceil(1_000_000 / rate_per_second))


@dataclass(frozen=True)
class Reservation:
    """Start times granted to a claim, in order, and the endpoint's next ``tat``."""

    slots: list[datetime]
    tat: datetime | None


def reserve(
    tat: datetime | None,
    now: datetime,
    rate_per_second: int,
    wanted: int,
    horizon: timedelta,
) -> Reservation:
    """Up to ``wanted`` slots starting no later than ``now + horizon``; ``tat`` None: never used."""
    step = interval(rate_per_second)
    start = now if tat is None or tat < now else tat
    slots: list[datetime] = []
    slot = start
    while len(slots) < wanted and slot <= now + horizon:
        slots.append(slot)
        slot += step
    return Reservation(slots, slot if slots else tat)


def next_slot(tat: datetime | None, now: datetime) -> datetime:
    """When the endpoint can start its next attempt (for the worker's wake-up)."""
    return now if tat is None or tat < now else tat
