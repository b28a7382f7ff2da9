"""The durable delivery queue: claim with a lease, settle in batches, hand back, reclaim.

Every statement takes `now` as a parameter (never SQL's now()), so tests drive the queue with
a fake clock against the real database.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from dispatcher.db import queries as q
from dispatcher.ids import DeliveryId, EndpointId, EventId
from dispatcher.models import DeliveryStatus
from dispatcher.store.secrets import open_secret, stored_url


@dataclass(frozen=True)
class QueueLimits:
    batch_size: int = 64
    endpoint_concurrency: int = 16
    breaker_threshold: int = 5
    breaker_open_seconds: float = 30.0
    breaker_max_open_seconds: float = 1800.0
    lease_seconds: float = 60.0
    endpoints_visited: int = 128  # per claim; the walk resumes where the last one stopped


@dataclass(frozen=True)
class Job:
    """A claimed delivery with everything needed to send it, and no further query."""

    delivery_id: DeliveryId
    event_id: EventId
    endpoint_id: EndpointId
    attempt: int
    event_type: str
    event_created_at: datetime
    body: bytes
    url: str
    standard_webhooks: bool
    secrets: list[str]
    age_origin: datetime  # the event's acceptance, or the last replay: the max age counts from it
    schedule_attempt: int  # attempts since that origin: the backoff step
    signing: str = "hmac"  # what `secrets` are: HMAC secrets, or ed25519 private keys
    tenant_id: str = ""  # the endpoint's tenant and environment: usage is counted per both
    environment: str = "sandbox"


@dataclass(frozen=True)
class Settlement:
    """The recorded attempt and what the policy decided comes next."""

    job: Job
    started_at: datetime
    duration_ms: float
    outcome: str
    status_code: int | None
    error: str | None
    response_body: str | None
    status: DeliveryStatus
    next_attempt_at: datetime
    succeeded: bool
    disable_endpoint: bool = False
    attempted: bool = True


async def claim(
    conn: asyncpg.Connection,
    now: datetime,
    limit: int,
    limits: QueueLimits,
    start_after: str = "",
) -> list[Job]:
    """Up to `limit` due deliveries; `start_after` rotates the walk over endpoints."""
    rows = await conn.fetch(
        q.CLAIM_DELIVERIES,
        now,
        limits.endpoints_visited,
        limit,
        limits.endpoint_concurrency,
        limits.breaker_threshold,
        now + timedelta(seconds=limits.lease_seconds),
        start_after,
    )
    return [
        Job(
            DeliveryId(r["id"]),
            EventId(r["event_id"]),
            EndpointId(r["endpoint_id"]),
            r["attempts"],
            r["event_type"],
            r["event_created_at"],
            bytes(r["body"]),
            stored_url(r["endpoint_id"], r["url"], r["url_credentials"]),
            r["standard_webhooks"],
            [open_secret(r["endpoint_id"], s) for s in r["secrets"]],
            r["age_origin"],
            r["schedule_attempt"],
            r["signing"],
            r["tenant_id"],
            r["environment"],
        )
        for r in rows
    ]


def _endpoint_tallies(settled: list[Settlement]) -> tuple[list[str], list[bool], list[int]]:
    """Per endpoint: the failure streak as of its last attempt in the batch."""
    reset: dict[str, bool] = {}
    fails: dict[str, int] = defaultdict(int)
    for s in sorted(settled, key=lambda s: s.started_at):
        ep = s.job.endpoint_id
        reset.setdefault(ep, False)
        if not s.attempted:
            continue
        if s.succeeded:
            reset[ep], fails[ep] = True, 0
        else:
            fails[ep] += 1
    endpoints = sorted(reset)
    return endpoints, [reset[e] for e in endpoints], [fails[e] for e in endpoints]


async def settle(
    conn: asyncpg.Connection, settled: list[Settlement], now: datetime, limits: QueueLimits
) -> int:
    """Record attempts and outcomes in one statement, whatever the batch size; returns how
    many deliveries it settled (one whose lease was reclaimed meanwhile is not)."""
    if not settled:
        return 0
    tried = [s for s in settled if s.attempted]
    endpoints, reset, fails = _endpoint_tallies(settled)
    count: int = await conn.fetchval(
        q.SETTLE,
        [s.job.delivery_id for s in tried],
        [s.job.attempt for s in tried],
        [s.started_at for s in tried],
        [s.duration_ms for s in tried],
        [s.outcome for s in tried],
        [s.status_code for s in tried],
        [s.error for s in tried],
        [s.response_body for s in tried],
        [s.job.delivery_id for s in settled],
        [s.job.attempt for s in settled],
        [s.status.value for s in settled],
        [s.next_attempt_at for s in settled],
        [now if s.status != DeliveryStatus.PENDING else None for s in settled],
        [s.status_code for s in settled],
        [s.outcome for s in settled],
        endpoints,
        reset,
        fails,
        now,
        limits.breaker_threshold,
        limits.breaker_open_seconds,
        limits.breaker_max_open_seconds,
        *_usage(settled),
    )
    gone = sorted({s.job.endpoint_id for s in settled if s.disable_endpoint})
    if gone:
        async with conn.transaction():
            for endpoint_id in gone:
                await conn.execute(
                    q.DISABLE_ENDPOINT, endpoint_id, "endpoint answered 410 Gone", now
                )
                await conn.execute(q.CANCEL_PENDING_DELIVERIES, endpoint_id, now)
    return count


def _usage(
    settled: list[Settlement],
) -> tuple[list[str], list[str], list[int], list[int], list[int]]:
    """The batch's usage counts per (tenant, environment), sorted: deliveries succeeded,
    failed attempts, dead letters (bumped by the settle statement itself)."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in settled:
        found = counts[(s.job.tenant_id, s.job.environment)]
        found[0] += s.status == DeliveryStatus.SUCCEEDED
        found[1] += s.attempted and not s.succeeded
        found[2] += s.status == DeliveryStatus.DEAD
    keys = sorted(counts)
    return (
        [t for t, _ in keys],
        [e for _, e in keys],
        [counts[k][0] for k in keys],
        [counts[k][1] for k in keys],
        [counts[k][2] for k in keys],
    )


async def release(conn: asyncpg.Connection, jobs: list[Job]) -> int:
    """Hand back claimed work that was never sent (shutdown), freeing the endpoint slots."""
    if not jobs:
        return 0
    async with conn.transaction():
        rows = await conn.fetch(
            q.RELEASE_DELIVERIES, [j.delivery_id for j in jobs], [j.attempt for j in jobs]
        )
        counts: dict[str, int] = defaultdict(int)
        for r in rows:
            counts[r["endpoint_id"]] += 1
        await _free_slots(conn, counts)
    if rows:
        await conn.execute(q.NOTIFY_DELIVERIES)
    return len(rows)


async def reclaim_expired(conn: asyncpg.Connection, now: datetime, limit: int = 1000) -> int:
    """Leases of workers that died go back to the queue; their endpoints' slots are freed."""
    async with conn.transaction():
        rows = await conn.fetch(q.RECLAIM_EXPIRED, now, limit)
        counts = {r["endpoint_id"]: r["n"] for r in rows}
        await _free_slots(conn, counts)
    return sum(counts.values())


async def _free_slots(conn: asyncpg.Connection, counts: dict[str, int]) -> None:
    if not counts:
        return
    endpoints = sorted(counts)
    await conn.execute(q.LOCK_ENDPOINTS, endpoints)
    await conn.execute(q.RELEASE_ENDPOINT_SLOTS, endpoints, [counts[e] for e in endpoints])


async def next_due(conn: asyncpg.Connection) -> datetime | None:
    value: datetime | None = await conn.fetchval(q.NEXT_DUE)
    return value
