"""Retry policy, pure: what to do after one attempt, given its outcome, the clock and an rng.

No I/O and no clock reads, so a parametrized table and a fake clock can pin every decision.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

from dispatcher.models import DeliveryStatus


class Outcome(StrEnum):
    """How one attempt ended; also the ``outcome`` label of the attempts metric."""

    SUCCESS = "success"
    REDIRECT = "redirect"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    TLS_ERROR = "tls_error"
    BLOCKED_ADDRESS = "blocked_address"
    INVALID_TARGET = "invalid_target"  # the URL cannot be sent to (e.g. a host IDNA refuses)
    INTERNAL_ERROR = "internal_error"  # our side failed (signing, classifying): a bug, retried
    EXPIRED = "expired"  # past its max age before it could be attempted: not sent


def classify_status(code: int) -> Outcome:
    """Only a 2xx succeeds; a 3xx is never followed, so it is a failed attempt of its own.

    A final 1xx or a code of 600 and above breaks HTTP: it counts as the receiver's fault.
    """
    if 200 <= code <= 299:
        return Outcome.SUCCESS
    if 300 <= code <= 399:
        return Outcome.REDIRECT
    if 400 <= code <= 499:
        return Outcome.HTTP_4XX
    return Outcome.HTTP_5XX


@dataclass(frozen=True)
class Done:
    """Delivered: stop."""


@dataclass(frozen=True)
class Retry:
    """Try again at ``at`` (an aware UTC datetime)."""

    at: datetime


@dataclass(frozen=True)
class Dead:
    """Give up: dead-letter the delivery (kept, listed, replayable)."""

    reason: str


@dataclass(frozen=True)
class Disable:
    """The receiver said 410 Gone: disable the endpoint; this delivery stops too."""

    reason: str


Decision = Done | Retry | Dead | Disable


@dataclass(frozen=True)
class Verdict:
    """Everything that follows an attempt, decided in one place: the delivery's new status,
    when it is tried next (pending) or was finished, and why it died or disables its endpoint."""

    status: DeliveryStatus
    at: datetime
    dead_reason: str | None = None
    disable_reason: str | None = None

    @property
    def final(self) -> bool:
        return self.status != DeliveryStatus.PENDING


RETRY_AFTER_STATUSES = frozenset({429, 503})
GONE = 410


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Seconds to wait per a ``Retry-After`` header, or None when it is not one.

    Delta-seconds or an HTTP-date (relative to ``now``); a date in the past means 0.
    A date without a zone (``-0000``) is read as UTC, as RFC 9110 dates always are.
    """
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(text)  # absurdly long values become inf, which no deadline admits
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with downward jitter, bounded by the event's max age.

    Delay before attempt n+1 = min(max_delay, base * multiplier**(n-1)) * U(1-jitter, 1).
    Defaults: retries after ~30 s, 2 min, 8 min, 32 min, 2.1 h, 8.5 h, 10 h, i.e. exactly
    8 attempts within 24 h for every jitter draw (see ``schedule_table``).
    """

    base_seconds: float = 30.0
    multiplier: float = 4.0
    max_delay_seconds: float = 36000.0
    max_age_seconds: float = 86400.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        checks = {
            "base_seconds": self.base_seconds > 0,
            "multiplier": self.multiplier >= 1,
            "max_delay_seconds": self.max_delay_seconds >= self.base_seconds,
            "max_age_seconds": self.max_age_seconds > 0,
            "jitter": 0 <= self.jitter < 1,
        }
        bad = [name for name, ok in checks.items() if not (ok and _finite(getattr(self, name)))]
        if bad:
            raise ValueError(f"invalid retry policy: {', '.join(bad)}")

    def nominal_delay(self, backoff_step: int) -> float:
        """Backoff after the ``backoff_step``-th attempt (1-based), before jitter."""
        if backoff_step < 1:
            raise ValueError("backoff steps start at 1")
        try:
            raw = self.base_seconds * self.multiplier ** (backoff_step - 1)
        except OverflowError:
            return self.max_delay_seconds
        return min(self.max_delay_seconds, raw)

    def delay(self, backoff_step: int, rng: random.Random) -> float:
        """Jitter only shortens: the nominal delay is the bound docs and alerts can rely on."""
        return self.nominal_delay(backoff_step) * rng.uniform(1.0 - self.jitter, 1.0)

    def decide(
        self,
        *,
        outcome: Outcome,
        status_code: int | None,
        backoff_step: int,
        window_start: datetime,
        now: datetime,
        retry_after: str | None,
        rng: random.Random,
    ) -> Decision:
        """What follows an attempt that just ended at ``now``, the ``backoff_step``-th (1-based)
        since the delivery's ``window_start``.

        A valid ``Retry-After`` on 429/503 is a floor: we wait at least that long, and at
        least our own backoff (so ``Retry-After: 0`` cannot turn into a hot loop). Nothing
        is scheduled past ``window_start + max_age``: that is Dead instead.
        """
        if outcome == Outcome.SUCCESS:
            return Done()
        if status_code == GONE:
            return Disable("endpoint answered 410 Gone")
        if now.tzinfo is None or window_start.tzinfo is None:
            raise ValueError("policy datetimes must be timezone-aware")
        wait = self.delay(backoff_step, rng)
        reason = "max age reached"
        if retry_after is not None and status_code in RETRY_AFTER_STATUSES:
            asked = parse_retry_after(retry_after, now)
            if asked is not None and asked > wait:
                wait = asked
                reason = "Retry-After is beyond the max age"
        deadline = window_start + timedelta(seconds=self.max_age_seconds)
        remaining = (deadline - now).total_seconds()
        if wait > remaining:
            return Dead(reason)
        return Retry(now + timedelta(seconds=wait))

    def before_attempt(self, *, window_start: datetime, now: datetime) -> Verdict | None:
        """Dead without an attempt when the max age has passed (an open circuit or a full
        endpoint held the delivery back); None: go ahead."""
        if now >= window_start + timedelta(seconds=self.max_age_seconds):
            return Verdict(DeliveryStatus.DEAD, now, dead_reason="max age reached")
        return None

    def verdict(
        self,
        *,
        outcome: Outcome,
        status_code: int | None,
        backoff_step: int,
        window_start: datetime,
        now: datetime,
        retry_after: str | None,
        rng: random.Random,
    ) -> Verdict:
        """The whole verdict after the ``backoff_step``-th attempt since ``window_start``."""
        decision = self.decide(
            outcome=outcome,
            status_code=status_code,
            backoff_step=backoff_step,
            window_start=window_start,
            now=now,
            retry_after=retry_after,
            rng=rng,
        )
        if isinstance(decision, Done):
            return Verdict(DeliveryStatus.SUCCEEDED, now)
        if isinstance(decision, Retry):
            return Verdict(DeliveryStatus.PENDING, decision.at)
        if isinstance(decision, Disable):
            return Verdict(DeliveryStatus.CANCELLED, now, disable_reason=decision.reason)
        return Verdict(DeliveryStatus.DEAD, now, dead_reason=decision.reason)


def _finite(value: float) -> bool:
    return math.isfinite(value)


def schedule_table(policy: RetryPolicy) -> list[tuple[int, float, float]]:
    """(attempt, earliest, latest) seconds after the event, for every attempt that can happen.

    Assumes instant attempts and no Retry-After. An attempt is listed when its earliest time
    is within the max age; its latest is clipped to the max age, past which it cannot run.
    """
    rows: list[tuple[int, float, float]] = [(1, 0.0, 0.0)]
    low = high = 0.0
    attempt = 1
    while True:
        nominal = policy.nominal_delay(attempt)
        low += nominal * (1.0 - policy.jitter)
        high += nominal
        attempt += 1
        if low > policy.max_age_seconds:
            return rows
        rows.append((attempt, low, min(high, policy.max_age_seconds)))
