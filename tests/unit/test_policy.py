"""Retry policy: a table of decisions, the schedule bounds, and a fake-clock simulation."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from dispatcher.policy import (
    Dead,
    Decision,
    Disable,
    Done,
    Outcome,
    Retry,
    RetryPolicy,
    classify_status,
    parse_retry_after,
    schedule_table,
)

T0 = datetime(2026, 5, 11, 8, 42, 13, tzinfo=UTC)
EPS = 1e-12


class FixedRandom(random.Random):
    """Every draw is the same, so jitter sits at one extreme."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


LOW = FixedRandom(0.0)  # shortest delays: factor 1 - jitter
HIGH = FixedRandom(1.0 - EPS)  # longest delays: factor ~1


def _decide(
    policy: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, so a shared default is safe
    *,
    outcome: Outcome = Outcome.HTTP_5XX,
    status_code: int | None = 500,
    attempt: int = 1,
    elapsed: float = 0.0,
    retry_after: str | None = None,
    rng: random.Random = HIGH,
) -> Decision:
    return policy.decide(
        outcome=outcome,
        status_code=status_code,
        backoff_step=attempt,
        window_start=T0,
        now=T0 + timedelta(seconds=elapsed),
        retry_after=retry_after,
        rng=rng,
    )


def _retry_in(decision: Decision, elapsed: float = 0.0) -> float:
    assert isinstance(decision, Retry), decision
    return (decision.at - T0).total_seconds() - elapsed


# -- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (200, Outcome.SUCCESS), (201, Outcome.SUCCESS), (204, Outcome.SUCCESS),
        (299, Outcome.SUCCESS),
        (300, Outcome.REDIRECT), (301, Outcome.REDIRECT), (302, Outcome.REDIRECT),
        (304, Outcome.REDIRECT), (307, Outcome.REDIRECT), (308, Outcome.REDIRECT),
        (399, Outcome.REDIRECT),
        (400, Outcome.HTTP_4XX), (404, Outcome.HTTP_4XX), (410, Outcome.HTTP_4XX),
        (429, Outcome.HTTP_4XX), (499, Outcome.HTTP_4XX),
        (500, Outcome.HTTP_5XX), (503, Outcome.HTTP_5XX), (599, Outcome.HTTP_5XX),
        (100, Outcome.HTTP_5XX), (199, Outcome.HTTP_5XX), (600, Outcome.HTTP_5XX),
    ],
)  # fmt: skip
def test_classify_status(code: int, outcome: Outcome) -> None:
    assert classify_status(code) is outcome


def test_outcome_labels_match_the_metric() -> None:
    assert {o.value for o in Outcome} >= {
        "success", "http_4xx", "http_5xx", "redirect", "timeout", "connection_error",
        "blocked_address",
    }  # fmt: skip


# -- decision table -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"outcome": Outcome.SUCCESS, "status_code": 200}, Done()),
        ({"outcome": Outcome.SUCCESS, "status_code": 204, "attempt": 8}, Done()),
        ({"outcome": Outcome.HTTP_4XX, "status_code": 410}, Disable("endpoint answered 410 Gone")),
        (
            {"outcome": Outcome.HTTP_4XX, "status_code": 410, "attempt": 8, "elapsed": 90000},
            Disable("endpoint answered 410 Gone"),
        ),
        ({"attempt": 8, "elapsed": 76950}, Dead("max age reached")),
        ({"attempt": 3, "elapsed": 86400}, Dead("max age reached")),
        ({"attempt": 1, "elapsed": 86399}, Dead("max age reached")),
        ({"attempt": 1, "elapsed": 90000}, Dead("max age reached")),
    ],
)
def test_terminal_decisions(kwargs: dict[str, object], expected: Decision) -> None:
    assert _decide(**kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("outcome", "status_code"),
    [
        (Outcome.HTTP_5XX, 500), (Outcome.HTTP_5XX, 503), (Outcome.HTTP_4XX, 400),
        (Outcome.HTTP_4XX, 404), (Outcome.HTTP_4XX, 429), (Outcome.REDIRECT, 301),
        (Outcome.REDIRECT, 308), (Outcome.TIMEOUT, None), (Outcome.CONNECTION_ERROR, None),
        (Outcome.TLS_ERROR, None), (Outcome.BLOCKED_ADDRESS, None),
    ],
)  # fmt: skip
def test_every_failure_is_retried(outcome: Outcome, status_code: int | None) -> None:
    assert _retry_in(_decide(outcome=outcome, status_code=status_code)) == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        (1, 24.0, 30.0),
        (2, 96.0, 120.0),
        (3, 384.0, 480.0),
        (4, 1536.0, 1920.0),
        (5, 6144.0, 7680.0),
        (6, 24576.0, 30720.0),
        (7, 28800.0, 36000.0),  # capped by max_delay
        (50, 28800.0, 36000.0),
        (10**6, 28800.0, 36000.0),  # no overflow
    ],
)
def test_delay_at_jitter_extremes(attempt: int, low: float, high: float) -> None:
    assert _retry_in(_decide(attempt=attempt, rng=LOW)) == pytest.approx(low)
    assert _retry_in(_decide(attempt=attempt, rng=HIGH)) == pytest.approx(high)


@pytest.mark.parametrize("seed", range(50))
def test_seeded_delays_stay_within_bounds(seed: int) -> None:
    rng = random.Random(seed)
    for attempt in range(1, 8):
        nominal = RetryPolicy().nominal_delay(attempt)
        delay = _retry_in(_decide(attempt=attempt, rng=rng))
        assert 0.8 * nominal <= delay <= nominal


def test_same_seed_same_schedule() -> None:
    a = [_decide(attempt=n, rng=random.Random(7)) for n in range(1, 8)]
    b = [_decide(attempt=n, rng=random.Random(7)) for n in range(1, 8)]
    assert a == b


# -- Retry-After ----------------------------------------------------------------------------


def _http_date(seconds_from_t0: float) -> str:
    return format_datetime(T0 + timedelta(seconds=seconds_from_t0), usegmt=True)


@pytest.mark.parametrize(
    ("status_code", "retry_after", "expected_wait"),
    [
        (429, "120", 120.0),  # longer than our 30 s: honoured exactly
        (503, "120", 120.0),
        (429, " 3600 ", 3600.0),
        (503, _http_date(600), 600.0),
        (429, _http_date(600), 600.0),
        (429, "0", 30.0),  # shorter than our backoff: our backoff is the floor
        (429, "10", 30.0),
        (503, _http_date(-600), 30.0),  # a past date
        (503, "soon", 30.0),  # garbage is ignored
        (503, "-5", 30.0),
        (503, "1.5", 30.0),
        (503, "", 30.0),
        (500, "120", 30.0),  # only 429 and 503 carry a meaningful Retry-After
        (404, "120", 30.0),
    ],
)
def test_retry_after(status_code: int, retry_after: str, expected_wait: float) -> None:
    outcome = classify_status(status_code)
    decision = _decide(outcome=outcome, status_code=status_code, retry_after=retry_after)
    assert _retry_in(decision) == pytest.approx(expected_wait)


@pytest.mark.parametrize("retry_after", ["86401", "999999999999999999999999", _http_date(90000)])
def test_retry_after_beyond_max_age_is_dead(retry_after: str) -> None:
    decision = _decide(status_code=429, outcome=Outcome.HTTP_4XX, retry_after=retry_after)
    assert decision == Dead("Retry-After is beyond the max age")


def test_retry_after_within_remaining_age_only() -> None:
    assert _retry_in(_decide(status_code=503, retry_after="600", elapsed=80000), 80000) == 600
    assert isinstance(_decide(status_code=503, retry_after="600", elapsed=86000), Dead)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("007", 7.0),
        (" 5 ", 5.0),
        (_http_date(90), 90.0),
        (_http_date(-90), 0.0),
        ("Mon, 11 May 2026 08:43:13 -0000", 60.0),  # no zone: UTC
        ("Mon, 11 May 2026 10:42:13 +0200", 0.0),  # same instant as T0
        ("", None),
        ("   ", None),
        ("soon", None),
        ("-1", None),
        ("1e3", None),
        ("12 s", None),
        ("\u0661\u0662\u0660", None),  # non-ASCII digits
        ("Mon, 99 Foo 2026 99:99:99 GMT", None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, T0) == expected


def test_parse_retry_after_absurd_number_is_infinite() -> None:
    assert parse_retry_after("9" * 5000, T0) == math.inf


# -- schedule over 24 h --------------------------------------------------------------------------


DEFAULT_TABLE = [
    (1, 0.0, 0.0),
    (2, 24.0, 30.0),
    (3, 120.0, 150.0),
    (4, 504.0, 630.0),
    (5, 2040.0, 2550.0),
    (6, 8184.0, 10230.0),
    (7, 32760.0, 40950.0),
    (8, 61560.0, 76950.0),
]


def test_default_schedule_table() -> None:
    table = schedule_table(RetryPolicy())
    assert [row[0] for row in table] == [row[0] for row in DEFAULT_TABLE]
    for got, want in zip(table, DEFAULT_TABLE, strict=True):
        assert got == pytest.approx(want)
    assert table[1][2] <= 60, "first retry within a minute"
    assert table[-1][2] <= 86400


def _simulate(policy: RetryPolicy, rng: random.Random, attempt_seconds: float = 0.0) -> list[float]:
    """Fail every attempt with a fake clock; return each attempt's start, in seconds."""
    starts = [0.0]
    clock = 0.0
    while True:
        clock += attempt_seconds
        decision = policy.decide(
            outcome=Outcome.TIMEOUT,
            status_code=None,
            backoff_step=len(starts),
            window_start=T0,
            now=T0 + timedelta(seconds=clock),
            retry_after=None,
            rng=rng,
        )
        if not isinstance(decision, Retry):
            assert decision == Dead("max age reached")
            return starts
        clock = (decision.at - T0).total_seconds()
        starts.append(clock)


@pytest.mark.parametrize("rng", [LOW, HIGH], ids=["low", "high"])
def test_jitter_extremes_follow_the_table(rng: random.Random) -> None:
    starts = _simulate(RetryPolicy(), rng)
    column = 1 if rng is LOW else 2
    assert starts == pytest.approx([row[column] for row in DEFAULT_TABLE])


@pytest.mark.parametrize("attempt_seconds", [0.0, 5.0])
def test_200_seeds_give_7_or_8_attempts_within_max_age(attempt_seconds: float) -> None:
    counts = set()
    for seed in range(200):
        starts = _simulate(RetryPolicy(), random.Random(seed), attempt_seconds)
        counts.add(len(starts))
        assert starts[1] <= 60, "first retry within a minute"
        assert starts[-1] + attempt_seconds <= 86400, "never past the max age"
        assert starts == sorted(starts)
    assert counts <= {7, 8}


@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(base_seconds=1, multiplier=2, max_delay_seconds=60, max_age_seconds=600),
        RetryPolicy(base_seconds=5, multiplier=3, max_age_seconds=3600, jitter=0.5),
        RetryPolicy(jitter=0.0),
    ],
)
def test_other_policies_respect_their_table(policy: RetryPolicy) -> None:
    table = schedule_table(policy)
    for seed in range(20):
        starts = _simulate(policy, random.Random(seed))
        assert table[0][0] <= len(starts) <= table[-1][0]
        for start, (_, low, high) in zip(starts, table, strict=False):
            assert low - 1e-6 <= start <= high + 1e-6
        assert starts[-1] <= policy.max_age_seconds


def test_schedule_clips_to_max_age() -> None:
    table = schedule_table(RetryPolicy(base_seconds=100, multiplier=1, max_age_seconds=450))
    # Attempt 5 is at 320..400 s, attempt 6 at 400..500 s: possible only on short draws.
    attempt, low, high = table[-1]
    assert (attempt, high) == (6, 450.0)
    assert low == pytest.approx(400.0)


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_seconds": 0}, "base_seconds"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"max_delay_seconds": 10}, "max_delay_seconds"),
        ({"max_age_seconds": -1}, "max_age_seconds"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"max_age_seconds": math.inf}, "max_age_seconds"),
        ({"base_seconds": math.nan}, "base_seconds"),
    ],
)
def test_invalid_policy(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**kwargs)


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError):
        _decide(attempt=0)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy().decide(
            outcome=Outcome.TIMEOUT, status_code=None, backoff_step=1,
            window_start=T0.replace(tzinfo=None), now=T0.replace(tzinfo=None),
            retry_after=None, rng=HIGH,
        )  # fmt: skip
