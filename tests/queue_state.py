"""Test set-up only: put deliveries in a given state, as the engine would have left them."""

from __future__ import annotations

from datetime import datetime

import asyncpg

# a final status: the delivery leaves the queue (if there) and gets a newer outcome
_FINAL = """
WITH targets AS (SELECT * FROM deliveries WHERE id = ANY($1::bigint[])),
gone AS (DELETE FROM delivery_queue q WHERE q.id = ANY($1::bigint[]))
INSERT INTO delivery_outcomes (id, generation, status, attempts, endpoint_id, event_id,
                               created_at, completed_at, replayed_at,
                               last_status_code, last_outcome)
SELECT t.id, t.generation + 1, $2, t.attempts, t.endpoint_id, t.event_id, t.created_at, $3,
       t.replayed_at, t.last_status_code, t.last_outcome
FROM targets t
"""

# held by a worker that is not registered (the reaper would take it back); a final delivery
# comes back into the queue for it, as a retry would have brought it
_IN_FLIGHT = """
WITH held AS (UPDATE delivery_queue SET worker_id = 0 WHERE id = ANY($1::bigint[]) RETURNING id)
INSERT INTO delivery_queue (id, endpoint_id, tenant_id, event_id, event_created_at, created_at,
                            next_attempt_at, age_origin, attempts, generation, worker_id)
SELECT d.id, d.endpoint_id, e.tenant_id, d.event_id, d.event_created_at, d.created_at,
       d.next_attempt_at, d.created_at, d.attempts, d.generation + 1, 0
FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
WHERE d.id = ANY($1::bigint[]) AND d.id NOT IN (SELECT id FROM held)
  AND d.status IN ('succeeded', 'dead', 'cancelled')
"""


async def force_status(
    conn: asyncpg.Connection, ids: list[int], status: str, now: datetime
) -> None:
    if status == "in_flight":
        await conn.execute(_IN_FLIGHT, ids)
        return
    assert status in ("succeeded", "dead", "cancelled"), status
    await conn.execute(_FINAL, ids, status, now)


async def endpoint_ids_of(conn: asyncpg.Connection, endpoint_id: str) -> list[int]:
    rows = await conn.fetch("SELECT id FROM deliveries WHERE endpoint_id = $1", endpoint_id)
    return [r["id"] for r in rows]


async def insert_events(
    conn: asyncpg.Connection, tenant_id: str, prefix: str, count: int, at: datetime, body: bytes
) -> None:
    """`count` sandbox `mailing.created` events `<prefix>1`..`<prefix><count>` (mailings
    `ml_<prefix>1`..), created and occurred at `at`."""
    await conn.execute(
        """INSERT INTO events (id, tenant_id, environment, event_type, mailing_id, occurred_at,
                               created_at, body)
           SELECT $2 || g, $1, 'sandbox', 'mailing.created', 'ml_' || $2 || g, $3, $3, $4
           FROM generate_series(1, $5) g""",
        tenant_id,
        prefix,
        at,
        body,
        count,
    )


async def queue_deliveries(
    conn: asyncpg.Connection,
    tenant_id: str,
    prefix: str,
    count: int,
    endpoints: list[str],
    created: datetime,
    due: datetime,
) -> None:
    """A queued delivery of each event `<prefix>1`..`<prefix><count>` (created at `created`)
    to each endpoint, due at `due`; ids follow the events, then the endpoints' order."""
    await conn.execute(
        """INSERT INTO delivery_queue (event_id, endpoint_id, tenant_id, event_created_at,
                                      created_at, next_attempt_at, age_origin)
           SELECT $2 || g, e, $1, $3, $4, $4, $4
           FROM generate_series(1, $5) g, unnest($6::text[]) e""",
        tenant_id,
        prefix,
        created,
        due,
        count,
        endpoints,
    )
