"""Rate limit per endpoint, pure: GCRA without burst, i.e. evenly spaced send slots.

An endpoint with ``rate_limit_per_second = r`` gets one send slot every
``(1 s + JITTER_ALLOWANCE) / r`` (rounded UP to the microsecond, the resolution of a
PostgreSQL timestamp, so rounding can never squeeze in an extra slot). The only state is the
theoretical arrival time ``tat``: the earliest instant the next slot may start. Slots that far
apart put at most ``r`` starts in any 1-second window even when each request leaves its
worker, or reaches the receiver, up to ``JITTER_ALLOWANCE`` (20 ms) later than its slot; the
price is 2% of the sustained rate (49.0 a second for a limit of 50; any single second may
still see all 50). Half of it is for the worker: a request that could not start within
``START_TOLERANCE`` (10 ms) of its slot (a busy event loop, a slow claim) gives the slot up and
goes back to the queue unsent, so lateness never crowds the requests after it; the other
half is for the network and the receiver.

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
JITTER_ALLOWANCE_MICROSECONDS = 20_000
START_TOLERANCE = timedelta(milliseconds=10)


def interval_microseconds(rate_per_second: int) -> int:
    """Time between two slots, in whole microseconds (rounded up)."""
    if not 1 <= rate_per_second <= MAX_RATE_PER_SECOND:
        raise ValueError(f"rate must be 1..{MAX_RATE_PER_SECOND} per second")
    return math.ceil((1_000_000 + JITTER_ALLOWANCE_MICROSECONDS) / rate_per_second)


def interval(rate_per_second: int) -> timedelta:
    return timedelta(microseconds=interval_microseconds(rate_per_second))


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


def missed(slot: datetime, now: datetime) -> bool:
    """Too late to start in this slot: sending now could crowd the next ones."""
    return now - slot > START_TOLERANCE


def next_slot(tat: datetime | None, now: datetime) -> datetime:
    """When the endpoint can start its next attempt (for the worker's wake-up)."""
    return now if tat is None or tat < now else tat
