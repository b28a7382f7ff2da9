"""The durable delivery queue: claim, settle in batches, hand back, reap, expire.

The queue table holds only live deliveries (pending or held by a worker); settle moves a
final one into the history. Every statement takes `now` as a parameter (never SQL's now()),
so tests drive the queue with a fake clock against the real database. Locks follow one
order (docs/architecture.md): endpoint_state rows by endpoint id, then queue rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from dispatcher.attempt import AttemptRecord, AttemptRequest
from dispatcher.db import queries as q
from dispatcher.ids import DeliveryId, EndpointId, EventId
from dispatcher.limiter import LimiterConfig
from dispatcher.models import DeliveryStatus
from dispatcher.partitions import ensure_day
from dispatcher.policy import Verdict
from dispatcher.ratelimit import JITTER_ALLOWANCE_MICROSECONDS
from dispatcher.settings import Settings
from dispatcher.store.secrets import open_secret, stored_url


@dataclass(frozen=True)
class QueueLimits:
    batch_size: int = 64
    endpoint_concurrency: int = 32  # the ceiling of the adaptive limit
    endpoint_concurrency_floor: int = 1
    breaker_threshold: int = 5
    breaker_open_seconds: float = 30.0
    breaker_max_open_seconds: float = 1800.0
    lease_seconds: float = 60.0
    endpoints_visited: int = 128  # per claim; the walk resumes where the last one stopped
    rate_horizon_seconds: float = 0.1  # how far ahead a claim reserves rate-limit slots

    @classmethod
    def from_settings(cls, s: Settings) -> QueueLimits:
        return cls(
            batch_size=s.claim_batch_size,
            endpoint_concurrency=s.endpoint_concurrency,
            endpoint_concurrency_floor=s.endpoint_concurrency_floor,
            breaker_threshold=s.breaker_threshold,
            breaker_open_seconds=s.breaker_open_seconds,
            breaker_max_open_seconds=s.breaker_max_open_seconds,
            lease_seconds=s.lease_seconds,
        )

    def limiter(self) -> LimiterConfig:
        """The adaptive limit's bounds: these settings, the rest the limiter's defaults."""
        floor = min(self.endpoint_concurrency_floor, self.endpoint_concurrency)
        return LimiterConfig(
            floor=floor,
            ceiling=self.endpoint_concurrency,
            initial=min(max(LimiterConfig.initial, floor), self.endpoint_concurrency),
        )


@dataclass(frozen=True)
class TenantAllowance:
    """How many more attempts each tenant may start on this worker (its fair share)."""

    default: int = 1_000_000
    reduced: Mapping[str, int] | None = None


@dataclass(frozen=True)
class ClaimedDelivery:
    """A claimed delivery with everything needed to send it, and no further query."""

    delivery_id: DeliveryId
    event_id: EventId
    endpoint_id: EndpointId
    tenant_id: str
    attempt: int
    event_type: str
    event_created_at: datetime
    body: bytes
    url: str
    standard_webhooks: bool
    secrets: list[str]
    # the event's acceptance or its last replay: the max age counts from it (column age_origin)
    window_start: datetime
    backoff_step: int  # attempts since the window start: they pick the next delay
    worker_id: int  # the claim's fence: only this worker may settle it, at this attempt
    signing: str = "hmac"  # what `secrets` are: HMAC secrets, or ed25519 private keys
    environment: str = "sandbox"  # with tenant_id: usage is counted per both
    not_before: datetime | None = None  # its rate-limit slot: it must not start earlier

    def request(self) -> AttemptRequest:
        return AttemptRequest(
            self.event_id,
            self.event_type,
            self.attempt,
            self.body,
            self.url,
            self.secrets,
            self.standard_webhooks,
            self.signing,
        )


@dataclass(frozen=True)
class Settlement:
    """The attempt made (None when none was: expired before it) and the policy's verdict."""

    delivery: ClaimedDelivery
    record: AttemptRecord | None
    verdict: Verdict

    @property
    def attempted(self) -> bool:
        return self.record is not None


async def claim(
    conn: asyncpg.Connection,
    now: datetime,
    limit: int,
    limits: QueueLimits,
    start_after: str = "",
    *,
    worker_id: int,
    allowance: TenantAllowance | None = None,
    finished: Mapping[str, int] | None = None,
) -> list[ClaimedDelivery]:
    """Up to `limit` due deliveries for `worker_id`; `start_after` rotates the walk over
    endpoints; `allowance` caps each tenant's share; `finished`: per endpoint, this worker's
    attempts that are over but not yet settled (their slots are free to it)."""
    share = allowance or TenantAllowance()
    reduced = dict(share.reduced or {})
    done = dict(finished or {})
    limiter = limits.limiter()
    rows = await conn.fetch(
        q.CLAIM_DELIVERIES,
        now,
        limits.endpoints_visited,
        limit,
        limiter.ceiling,
        limits.breaker_threshold,
        now + timedelta(seconds=limits.lease_seconds),
        start_after,
        worker_id,
        list(reduced),
        list(reduced.values()),
        share.default,
        limiter.floor,
        limiter.initial,
        round(limits.rate_horizon_seconds * 1_000_000),
        JITTER_ALLOWANCE_MICROSECONDS,
        list(done),
        list(done.values()),
    )
    return [
        ClaimedDelivery(
            DeliveryId(r["id"]),
            EventId(r["event_id"]),
            EndpointId(r["endpoint_id"]),
            r["tenant_id"],
            r["attempts"],
            r["event_type"],
            r["event_created_at"],
            bytes(r["body"]),
            stored_url(r["endpoint_id"], r["url"], r["url_credentials"]),
            r["standard_webhooks"],
            [open_secret(r["endpoint_id"], s) for s in r["secrets"]],
            r["age_origin"],
            r["backoff_step"],
            worker_id,
            r["signing"],
            r["environment"],
            r["not_before"],
        )
        for r in rows
    ]


def walked_to(cursor: str, served: list[str]) -> str:
    """Where the next claim's walk over endpoints starts: after the last endpoint this claim
    served. A walk that wrapped went past `cursor` to the end, then on from the first id: it
    ended at the largest served id not after `cursor`."""
    wrapped = [e for e in served if e <= cursor]
    return max(wrapped or served)


def _endpoint_tallies(settled: list[Settlement]) -> tuple[list[str], list[bool], list[int]]:
    """Per endpoint: the failure streak as of its last attempt in the batch."""
    reset: dict[str, bool] = {}
    fails: dict[str, int] = defaultdict(int)
    for s in sorted(settled, key=lambda s: s.record.started_at if s.record else s.verdict.at):
        ep = s.delivery.endpoint_id
        reset.setdefault(ep, False)
        if s.record is None:
            continue
        if s.record.succeeded:
            reset[ep], fails[ep] = True, 0
        else:
            fails[ep] += 1
    endpoints = sorted(reset)
    return endpoints, [reset[e] for e in endpoints], [fails[e] for e in endpoints]


async def settle(
    conn: asyncpg.Connection, settled: list[Settlement], now: datetime, limits: QueueLimits
) -> int:
    """Record attempts and outcomes in one call, whatever the batch size; returns how many
    deliveries it settled (one taken back from this worker meanwhile is not).

    All settlements of one call share a worker id (one worker settles its own claims)."""
    if not settled:
        return 0
    by_worker: dict[int, list[Settlement]] = defaultdict(list)
    for s in settled:
        by_worker[s.delivery.worker_id].append(s)
    for s in settled:
        if s.record is not None:
            await ensure_day(conn, s.record.started_at)
    await ensure_day(conn, now)
    count = 0
    for worker_id, batch in sorted(by_worker.items()):
        count += await _settle_one(conn, worker_id, batch, now, limits)
    gone = sorted({s.delivery.endpoint_id for s in settled if s.verdict.disable_reason})
    for endpoint_id in gone:
        reason = next(
            s.verdict.disable_reason for s in settled if s.delivery.endpoint_id == endpoint_id
        )
        async with conn.transaction():
            await conn.execute(q.DISABLE_ENDPOINT, endpoint_id, reason, now)
            await cancel_pending(conn, endpoint_id, now)
    return count


async def _settle_one(
    conn: asyncpg.Connection,
    worker_id: int,
    settled: list[Settlement],
    now: datetime,
    limits: QueueLimits,
) -> int:
    settled = sorted(settled, key=lambda s: s.delivery.delivery_id)
    tried = [(s.delivery, s.record) for s in settled if s.record is not None]
    endpoints, reset, fails = _endpoint_tallies(settled)
    count: int = await conn.fetchval(
        q.SETTLE,
        worker_id,
        now,
        [j.delivery_id for j, _ in tried],
        [r.attempt for _, r in tried],
        [r.started_at for _, r in tried],
        [r.duration_ms for _, r in tried],
        [r.outcome.value for _, r in tried],
        [r.status_code for _, r in tried],
        [r.error for _, r in tried],
        [r.response_body for _, r in tried],
        [s.delivery.delivery_id for s in settled],
        [s.delivery.attempt for s in settled],
        [s.verdict.status.value for s in settled],
        [s.verdict.at for s in settled],
        [s.record.status_code if s.record else None for s in settled],
        [_last_outcome(s) for s in settled],
        endpoints,
        reset,
        fails,
        limits.breaker_threshold,
        limits.breaker_open_seconds,
        limits.breaker_max_open_seconds,
        *_usage(settled),
    )
    return count


def _usage(
    settled: list[Settlement],
) -> tuple[list[str], list[str], list[int], list[int], list[int]]:
    """The batch's usage counts per (tenant, environment), sorted: deliveries succeeded,
    failed attempts, dead letters (bumped by the settle statement itself)."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in settled:
        found = counts[(s.delivery.tenant_id, s.delivery.environment)]
        found[0] += s.verdict.status == DeliveryStatus.SUCCEEDED
        found[1] += s.record is not None and not s.record.succeeded
        found[2] += s.verdict.status == DeliveryStatus.DEAD
    keys = sorted(counts)
    return (
        [t for t, _ in keys],
        [e for _, e in keys],
        [counts[k][0] for k in keys],
        [counts[k][1] for k in keys],
        [counts[k][2] for k in keys],
    )


def _last_outcome(s: Settlement) -> str:
    if s.record is not None:
        return s.record.outcome.value
    return "expired"


async def cancel_pending(conn: asyncpg.Connection, endpoint_id: str, now: datetime) -> None:
    """An endpoint disabled or deleted: its pending deliveries become cancelled (history).
    Inside the caller's transaction; its endpoint_state row first, as the lock order says."""
    await ensure_day(conn, now)
    await conn.execute(q.LOCK_ENDPOINT_STATE, [endpoint_id])
    await conn.execute(q.CANCEL_PENDING_DELIVERIES, endpoint_id, now)


async def release(conn: asyncpg.Connection, deliveries: list[ClaimedDelivery]) -> int:
    """Hand back claimed work that was never sent (shutdown), freeing the endpoint slots."""
    if not deliveries:
        return 0
    total = 0
    by_worker: dict[int, list[ClaimedDelivery]] = defaultdict(list)
    for j in deliveries:
        by_worker[j.worker_id].append(j)
    for worker_id, batch in by_worker.items():
        async with conn.transaction():
            await conn.execute(q.LOCK_ENDPOINT_STATE, sorted({j.endpoint_id for j in batch}))
            rows = await conn.fetch(
                q.RELEASE_DELIVERIES,
                [j.delivery_id for j in batch],
                [j.attempt for j in batch],
                worker_id,
            )
            counts: dict[str, int] = defaultdict(int)
            for r in rows:
                counts[r["endpoint_id"]] += 1
            if counts:
                endpoints = sorted(counts)
                await conn.execute(
                    q.RELEASE_ENDPOINT_SLOTS, endpoints, [counts[e] for e in endpoints]
                )
        total += len(rows)
    if total:
        await conn.execute(q.NOTIFY_DELIVERIES)
    return total


async def reap(conn: asyncpg.Connection, now: datetime, limit: int = 1000) -> int:
    """Deliveries held by dead workers (their liveness lock is free) and expired leases go
    back to the queue, due now; their endpoints' slots are freed."""
    async with conn.transaction():
        rows = await conn.fetch(q.REAP, now, limit)
    count = sum(int(r["n"]) for r in rows)
    if count:
        await conn.execute(q.NOTIFY_DELIVERIES)
    return count


# the name the previous engine used; the lease is now only the backstop of `reap`
reclaim_expired = reap


async def expire_pending(
    conn: asyncpg.Connection, now: datetime, max_age_seconds: float, limit: int = 10_000
) -> int:
    """Pending deliveries past their max age become dead letters now, whatever their
    endpoint's state; returns how many."""
    await ensure_day(conn, now)
    cutoff = now - timedelta(seconds=max_age_seconds)
    total = 0
    while True:
        count: int = await conn.fetchval(q.EXPIRE_PENDING, now, cutoff, limit)
        total += count
        if count < limit:
            return total


async def next_due(conn: asyncpg.Connection) -> datetime | None:
    value: datetime | None = await conn.fetchval(q.NEXT_DUE)
    return value


__all__ = [
    "ClaimedDelivery",
    "DeliveryStatus",
    "QueueLimits",
    "Settlement",
    "TenantAllowance",
    "cancel_pending",
    "claim",
    "expire_pending",
    "next_due",
    "reap",
    "release",
    "settle",
    "walked_to",
]
