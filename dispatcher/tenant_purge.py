"""Removing a deleted tenant's rows in bounded batches.

Deleting a tenant first marks it (`tenants.deleted_at`): from that commit its keys are
refused, its ingest refused and its deliveries never claimed. Its rows then go here, each
statement removing at most `batch` rows in its own transaction: queued deliveries and the
delivery history (each with its attempts), mailings with their events (found through the
mailing: the history is indexed by mailing, not by tenant), usage counters, stored idempotent
answers, and finally the tenant row itself, whose cascade takes the few rows left (keys,
endpoints, secrets).

A delivery a worker holds is left until its settle moves it to the history, so a purge may
need a second pass; whoever runs it (the API right after the DELETE, then the workers'
maintenance loop) simply calls `purge_tenant` again.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from dispatcher.db import queries as q

log = logging.getLogger(__name__)

BATCH = 1000


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def _drain(
    conn: asyncpg.Connection, query: str, arg: object, batch: int, budget: list[int]
) -> bool:
    """Run a bounded DELETE until it comes back short; False when the budget ran out."""
    while budget[0] > 0:
        budget[0] -= 1
        removed = _count(await conn.execute(query, arg, batch))
        if removed < batch:
            return True
        await asyncio.sleep(0)  # let the event loop breathe between batches
    return False


async def purge_tenant(
    conn: asyncpg.Connection, tenant_id: str, *, batch: int = BATCH, max_batches: int = 1_000_000
) -> bool:
    """Remove what is left of a deleted tenant; True when it is all gone.

    `max_batches` bounds the work of one call (the API's quick attempt before it answers).
    """
    budget = [max_batches]
    endpoints = [r["id"] for r in await conn.fetch(q.TENANT_ENDPOINT_IDS, tenant_id)]
    for deliveries in (q.PURGE_QUEUED_DELIVERIES, q.PURGE_DELIVERY_HISTORY):
        if endpoints and not await _drain(conn, deliveries, endpoints, batch, budget):
            return False
    if endpoints and await conn.fetchval(q.COUNT_IN_FLIGHT, endpoints):
        return False  # a worker still holds some: their settle comes first
    for query in (q.PURGE_MAILINGS, q.PURGE_USAGE):
        if not await _drain(conn, query, tenant_id, batch, budget):
            return False
    await conn.execute(q.PURGE_TENANT_IDEMPOTENCY, tenant_id)
    await conn.execute(q.PURGE_TENANT, tenant_id)
    log.info("deleted tenant removed", extra={"tenant_id": tenant_id})
    return True


async def purge_deleted_tenants(conn: asyncpg.Connection) -> int:
    """Carry on with every deleted tenant not removed yet; how many are now gone."""
    done = 0
    for row in await conn.fetch(q.DELETED_TENANTS):
        done += await purge_tenant(conn, row["id"])
    return done
