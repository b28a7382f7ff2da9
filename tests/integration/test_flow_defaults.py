"""What the flow-control benchmark scenarios promise, at the product defaults, on a fake clock
against the real queue: a dead endpoint holds at most one request slot after 30 s, 1,000
endpoints with a backlog beside a flooded one each wait no longer than twice their fair
share."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from dispatcher import flow, metrics
from dispatcher.attempt import AttemptRecord
from dispatcher.clock import FakeClock
from dispatcher.flow import LimiterBook
from dispatcher.partitions import ensure_day
from dispatcher.policy import Outcome, RetryPolicy
from dispatcher.queue import (
    ClaimedDelivery,
    QueueLimits,
    Settlement,
    TenantAllowance,
    claim,
    settle,
    walked_to,
)
from dispatcher.worker import WorkerConfig
from tests.perf.flow import fair_wait
from tests.queue_state import insert_events, queue_deliveries

LIMITS = QueueLimits()  # the product defaults: adaptive limit 1..32, breaker after 5 failures
POLICY = RetryPolicy()
WORKER = WorkerConfig()  # 128 slots, a tenant at most 64 of them, attempts time out after 5 s
WORKER_ID = 1


async def _endpoints(pool: asyncpg.Pool, tenant_id: str, count: int, now: datetime) -> list[str]:
    ids = [f"ep_f{g}" for g in range(1, count + 1)]
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO endpoints (id, tenant_id, environment, url, event_types,
                                      created_at, updated_at)
               SELECT e, $1, 'sandbox', 'https://receiver.example/' || e, ARRAY['*'], $2, $2
               FROM unnest($3::text[]) e""",
            tenant_id,
            now,
            ids,
        )
    return ids


async def _backlog(
    pool: asyncpg.Pool, tenant_id: str, endpoints: list[str], per_endpoint: int, due: datetime
) -> None:
    """`per_endpoint` deliveries due at `due` for each endpoint (events of their own)."""
    prefix = f"evt_{endpoints[0]}_{len(endpoints)}_{per_endpoint}_"
    async with pool.acquire() as conn:
        await ensure_day(conn, due)
        await insert_events(conn, tenant_id, prefix, per_endpoint, due, b"{}")
        await queue_deliveries(conn, tenant_id, prefix, per_endpoint, endpoints, due, due)


def _settlement(
    delivery: ClaimedDelivery, outcome: Outcome, started: datetime, ended: datetime
) -> Settlement:
    status = 200 if outcome == Outcome.SUCCESS else None
    record = AttemptRecord(
        delivery.attempt,
        started,
        (ended - started).total_seconds() * 1000,
        outcome,
        status,
        None if status else "TimeoutError",
        None,
        None,
    )
    verdict = POLICY.verdict(
        outcome=outcome,
        status_code=status,
        backoff_step=delivery.backoff_step,
        window_start=delivery.window_start,
        now=ended,
        retry_after=None,
        rng=random.Random(3),
    )
    return Settlement(delivery, record, verdict)


async def _settle(
    pool: asyncpg.Pool, book: LimiterBook, done: list[Settlement], now: datetime
) -> None:
    """Settle as the worker does, and fold what the attempts said into the limits."""
    if not done:
        return
    for s in done:
        assert s.record is not None
        book.record(
            s.delivery.endpoint_id,
            s.record.outcome,
            s.record.status_code,
            s.record.duration_ms / 1000,
            s.record.started_at + timedelta(milliseconds=s.record.duration_ms),
        )
    async with pool.acquire() as conn:
        await settle(conn, done, now, LIMITS)
        await flow.apply(conn, book.take(now), book.config)


async def _held(pool: asyncpg.Pool, endpoint_id: str) -> int:
    value: int = await pool.fetchval(
        "SELECT in_flight FROM endpoint_state WHERE endpoint_id = $1", endpoint_id
    )
    return value


async def test_a_dead_endpoint_holds_at_most_one_slot_after_30_s_at_the_defaults(
    pool: asyncpg.Pool, clock: FakeClock, make_tenant: Any
) -> None:
    """Why: its first attempts time out after 5 s (the attempt timeout); more than the
    breaker's 5 failures in a row open its circuit for 30 s, and the limiter has halved its
    limit; when the circuit half-opens, one probe at a time goes (cap 1 while the failures
    run on), and each failed probe opens it again for longer. Its healthy neighbour is served
    on every step throughout."""
    tenant = await make_tenant()
    dead, healthy = await _endpoints(pool, tenant.tenant_id, 2, clock.now())
    await _backlog(pool, tenant.tenant_id, [dead, healthy], 400, clock.now())
    book = LimiterBook(LIMITS.limiter())
    hanging: list[tuple[datetime, ClaimedDelivery]] = []
    held: list[tuple[float, int]] = []
    healthy_served: list[tuple[float, int]] = []
    cuts = metrics.LIMIT_CUTS.labels(signal="overload")
    cuts_before = cuts._value.get()
    step = timedelta(seconds=0.5)
    start = clock.now()
    for _ in range(int(600 / step.total_seconds())):
        now = clock.now()
        over = [d for started, d in hanging if now - started >= timedelta(seconds=5)]
        hanging = [(t, d) for t, d in hanging if now - t < timedelta(seconds=5)]
        await _settle(
            pool,
            book,
            [_settlement(d, Outcome.TIMEOUT, now - timedelta(seconds=5), now) for d in over],
            now,
        )
        busy = len(hanging)
        async with pool.acquire() as conn:
            taken = await claim(
                conn,
                now,
                WORKER.batch_size,
                LIMITS,
                worker_id=WORKER_ID,
                allowance=TenantAllowance(WORKER.tenant_slots, {tenant.tenant_id: 64 - busy}),
            )
        hanging += [(now, d) for d in taken if d.endpoint_id == dead]
        fast = [d for d in taken if d.endpoint_id == healthy]
        answered = now + timedelta(milliseconds=5)
        await _settle(
            pool, book, [_settlement(d, Outcome.SUCCESS, now, answered) for d in fast], answered
        )
        elapsed = (now - start).total_seconds()
        held.append((elapsed, await _held(pool, dead)))
        healthy_served.append((elapsed, len(fast)))
        clock.advance(step.total_seconds())

    assert max(n for t, n in held if t < 5) == 8  # a new endpoint starts at 8 in flight
    assert cuts._value.get() > cuts_before  # the limiter's trace counted its cuts
    after = [n for t, n in held if t >= 30]
    assert max(after) <= 1
    assert 1 in after  # the half-open probes do go out, one at a time
    # the neighbour's whole backlog went out before the 30 s, beside the hanging requests
    assert sum(n for t, n in healthy_served if t < 30) == 400


async def test_a_flooded_endpoint_leaves_every_other_one_its_fair_share(
    pool: asyncpg.Pool, clock: FakeClock, make_tenant: Any
) -> None:
    """1,000 endpoints of one tenant: 999 with 2 deliveries waiting, one flooded with 3,000
    older ones (first come, first served would send the whole flood first). A default
    worker's claims, each delivery answered within one claim round: no delivery waits longer
    than twice its fair share (processor sharing, in deliveries made: tests/perf/flow.py)."""
    tenant = await make_tenant()
    endpoints = await _endpoints(pool, tenant.tenant_id, 1000, clock.now())
    flooded, others = endpoints[0], endpoints[1:]
    await _backlog(pool, tenant.tenant_id, [flooded], 3000, clock.now() - timedelta(minutes=1))
    await _backlog(pool, tenant.tenant_id, others, 2, clock.now())
    book = LimiterBook(LIMITS.limiter())
    made: list[tuple[str, float]] = []
    small_left = 2 * len(others)
    cursor = ""
    in_progress: list[ClaimedDelivery] = []
    while small_left:
        now = clock.now()
        answered = now + timedelta(milliseconds=5)
        await _settle(
            pool,
            book,
            [_settlement(d, Outcome.SUCCESS, now, answered) for d in in_progress],
            answered,
        )
        async with pool.acquire() as conn:
            in_progress = await claim(
                conn,
                now,
                WORKER.batch_size,
                LIMITS,
                cursor,
                worker_id=WORKER_ID,
                allowance=TenantAllowance(WORKER.tenant_slots),
            )
        assert in_progress, "the backlogs were not drained"
        cursor = walked_to(cursor, [d.endpoint_id for d in in_progress])
        done_by = len(made) + len(in_progress)  # time, counted in deliveries made
        made += [(d.endpoint_id, float(done_by)) for d in in_progress]
        small_left -= sum(1 for d in in_progress if d.endpoint_id != flooded)
        clock.advance(0.01)

    backlogs = {e: 2 for e in others} | {flooded: 3000}
    result = fair_wait(made, backlogs, start=0.0)
    assert result["worst_ratio"] <= 2.0, result
    assert sum(1 for e, _ in made if e == flooded) >= 2  # the flood is not starved either
