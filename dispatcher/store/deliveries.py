"""Deliveries as tenants and operators see them: the log, its attempts, replay and retry.

Re-queueing (replay, retry, `dispatcher dead-letters replay`) keeps the event, so the
receiver gets the same ``event_id`` and byte-identical body, and keeps counting attempts, so
``X-Delivery-Attempt`` only grows. It makes the delivery due now and gives it a fresh retry
window: the re-queue time becomes its window start (columns ``age_origin`` and
``replayed_at``) and ``attempts_before_replay`` the base of its backoff step (the worker reads
both when it decides what follows an attempt).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from dispatcher.db import queries as q
from dispatcher.errors import Conflict, NotFound
from dispatcher.ids import DeliveryId, EndpointId, EventId, parse_delivery_id
from dispatcher.models import DeliveryStatus, Principal

# A delivery replayed many times keeps every attempt; a page shows the newest ones.
ATTEMPTS_SHOWN = 50
REPLAY_CHUNK = 1000


@dataclass(frozen=True)
class Attempt:
    """One recorded POST; ``outcome`` is its class (success, http_5xx, timeout, ...)."""

    attempt: int
    started_at: datetime
    duration_ms: float
    outcome: str
    status_code: int | None
    error: str | None
    response_body: str | None

    @classmethod
    def from_row(cls, row: Any) -> Attempt:
        return cls(
            row["attempt"],
            row["started_at"],
            row["duration_ms"],
            row["outcome"],
            row["status_code"],
            row["error"],
            row["response_body"],
        )


@dataclass(frozen=True)
class Delivery:
    id: DeliveryId
    event_id: EventId
    event_type: str
    endpoint_id: EndpointId
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    completed_at: datetime | None
    last_status_code: int | None
    last_outcome: str | None
    replayed_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Delivery:
        return cls(
            DeliveryId(row["id"]),
            EventId(row["event_id"]),
            row["event_type"],
            EndpointId(row["endpoint_id"]),
            DeliveryStatus(row["status"]),
            row["attempts"],
            row["next_attempt_at"],
            row["created_at"],
            row["completed_at"],
            row["last_status_code"],
            row["last_outcome"],
            row["replayed_at"],
        )


class ReplayScope(StrEnum):
    """What a replay takes: dead letters only, or every delivery that has not got through."""

    DEAD = "dead"
    FAILED = "failed"


# ---- the delivery log -------------------------------------------------------------------


async def list_for_endpoint(
    conn: asyncpg.Connection,
    endpoint_id: str,
    *,
    limit: int,
    status: DeliveryStatus | None = None,
    before: DeliveryId | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Delivery]:
    """Newest first; `before` is the id of the last delivery of the previous page."""
    rows = await conn.fetch(
        q.LIST_ENDPOINT_DELIVERIES,
        endpoint_id,
        status.value if status else None,
        before,
        limit,
        event_type,
        since,
        until,
    )
    return [Delivery.from_row(r) for r in rows]


async def cursor_of(
    conn: asyncpg.Connection, endpoint_id: str, public_id: str
) -> DeliveryId | None:
    """The page cursor for a `dlv_...` id, if it is a delivery of this endpoint."""
    delivery_id = parse_delivery_id(public_id)
    if delivery_id is None:
        return None
    found: int | None = await conn.fetchval(q.GET_DELIVERY_CURSOR, delivery_id, endpoint_id)
    return DeliveryId(found) if found is not None else None


async def attempts_of(
    conn: asyncpg.Connection, delivery_ids: list[DeliveryId], per_delivery: int = ATTEMPTS_SHOWN
) -> dict[DeliveryId, list[Attempt]]:
    """The attempts of a whole page in one round trip, oldest first per delivery."""
    found: dict[DeliveryId, list[Attempt]] = defaultdict(list)
    if not delivery_ids:
        return found
    for row in await conn.fetch(q.ATTEMPTS_OF_DELIVERIES, delivery_ids, per_delivery):
        found[DeliveryId(row["delivery_id"])].append(Attempt.from_row(row))
    return found


async def for_events(
    conn: asyncpg.Connection, event_ids: list[str]
) -> dict[EventId, list[Delivery]]:
    """The deliveries of a page of events in one round trip, by endpoint id."""
    found: dict[EventId, list[Delivery]] = defaultdict(list)
    if not event_ids:
        return found
    for row in await conn.fetch(q.DELIVERIES_OF_EVENTS, event_ids):
        found[EventId(row["event_id"])].append(Delivery.from_row(row))
    return found


# ---- re-queueing ------------------------------------------------------------------------


async def replay_endpoint(
    conn: asyncpg.Connection,
    endpoint_id: str,
    *,
    scope: ReplayScope,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
) -> int:
    """Re-queue one endpoint's failed deliveries created in [since, until), in one statement.

    The caller checks that the endpoint is the tenant's and enabled: the claim does not look
    at `enabled`, so re-queueing for a disabled endpoint would send to it.
    """
    query = q.REPLAY_DEAD_DELIVERIES if scope == ReplayScope.DEAD else q.REPLAY_FAILED_DELIVERIES
    async with conn.transaction():
        await conn.execute(q.LOCK_REQUEUE_SHARED)
        count: int = await conn.fetchval(query, endpoint_id, since, until, now)
        if count:
            await conn.execute(q.NOTIFY_DELIVERIES)
    return count


async def count_replayable(
    conn: asyncpg.Connection,
    endpoint_id: str,
    *,
    scope: ReplayScope,
    since: datetime | None,
    until: datetime | None,
) -> int:
    """What `replay_endpoint` with the same arguments would re-queue now (its dry run)."""
    found: int = await conn.fetchval(
        q.COUNT_REPLAYABLE_DELIVERIES, endpoint_id, since, until, scope.value
    )
    return found


async def retry_delivery(
    conn: asyncpg.Connection, owner: Principal, delivery_id: DeliveryId, now: datetime
) -> Delivery:
    """Re-queue one delivery now, whatever its state but in flight.

    A succeeded delivery is sent again too (a receiver that lost it asks for it): delivery
    is at-least-once, and the copy carries the same event id for deduplication.
    Raises NotFound (not this tenant's and environment's) or Conflict (in flight, or the
    endpoint is disabled or deleted).
    """
    async with conn.transaction():
        await conn.execute(q.LOCK_REQUEUE_SHARED)
        done = await conn.fetchval(
            q.RETRY_DELIVERY, delivery_id, owner.tenant_id, owner.environment.value, now
        )
        row = await conn.fetchrow(
            q.GET_DELIVERY, delivery_id, owner.tenant_id, owner.environment.value
        )
        if row is None:
            raise NotFound("no such delivery")
        if done is None:
            raise Conflict(_why_not_retried(row))
        await conn.execute(q.NOTIFY_DELIVERIES)
    return Delivery.from_row(row)


def _why_not_retried(row: Any) -> str:
    if row["endpoint_deleted"]:
        return "the delivery's endpoint was deleted; it cannot be retried"
    if not row["endpoint_enabled"]:
        return "the delivery's endpoint is disabled; enable it, then retry"
    return "the delivery is being attempted right now; retry after the attempt ends"


# ---- dead letters (operators: `dispatcher dead-letters`) --------------------------------


@dataclass(frozen=True)
class DeadLetterFilter:
    """Each None is no filter; `since`/`until` bound the delivery's creation, [since, until)."""

    tenant_id: str | None = None
    endpoint_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def params(self) -> tuple[str | None, str | None, datetime | None, datetime | None]:
        return (self.tenant_id, self.endpoint_id, self.since, self.until)


@dataclass(frozen=True)
class DeadLetter:
    id: DeliveryId
    tenant_id: str
    environment: str
    endpoint_id: EndpointId
    event_id: EventId
    event_type: str
    attempts: int
    last_status_code: int | None
    last_outcome: str | None
    created_at: datetime
    died_at: datetime | None
    endpoint_live: bool

    @classmethod
    def from_row(cls, row: Any) -> DeadLetter:
        return cls(
            DeliveryId(row["id"]),
            row["tenant_id"],
            row["environment"],
            EndpointId(row["endpoint_id"]),
            EventId(row["event_id"]),
            row["event_type"],
            row["attempts"],
            row["last_status_code"],
            row["last_outcome"],
            row["created_at"],
            row["completed_at"],
            row["endpoint_live"],
        )


async def list_dead_letters(
    conn: asyncpg.Connection, where: DeadLetterFilter, limit: int
) -> list[DeadLetter]:
    """Newest first."""
    rows = await conn.fetch(q.LIST_DEAD_LETTERS, *where.params(), limit)
    return [DeadLetter.from_row(r) for r in rows]


async def count_dead_letters(conn: asyncpg.Connection, where: DeadLetterFilter) -> tuple[int, int]:
    """(replayable, skipped): dead letters of disabled or deleted endpoints are skipped."""
    row = await conn.fetchrow(q.COUNT_DEAD_LETTERS, *where.params())
    return row["replayable"], row["skipped"]


async def replay_dead_letters(
    conn: asyncpg.Connection,
    where: DeadLetterFilter,
    now: datetime,
    *,
    chunk_size: int = REPLAY_CHUNK,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Re-queue dead letters of live endpoints in id order, one short transaction per chunk.

    Chunks keep locks and WAL bursts small on a large backlog, and each chunk's NOTIFY lets
    workers start on it while the next is written. `progress` gets the running total.
    """
    total, after = 0, 0
    while True:
        async with conn.transaction():
            await conn.execute(q.LOCK_REQUEUE_SHARED)
            row = await conn.fetchrow(
                q.REPLAY_DEAD_LETTERS_CHUNK, *where.params(), after, chunk_size, now
            )
            if row["requeued"]:
                await conn.execute(q.NOTIFY_DELIVERIES)
        requeued: int = row["requeued"]
        scanned: int = row["scanned"]
        total += requeued
        if progress is not None:
            progress(total)
        if scanned < chunk_size:
            return total
        after = row["last_id"]
