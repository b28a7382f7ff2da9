"""Bytes kept per delivered delivery (event, delivery outcome, one attempt; 3 endpoints; after
VACUUM): the history is written once and the queue keeps nothing of a finished delivery."""

from __future__ import annotations

from typing import Any

from dispatcher.events import Transition, record_transitions
from dispatcher.partitions import partitioned_tables
from dispatcher.transitions import MailingStatus
from tests.conftest import TenantKeys

EVENTS = 3000
# The target is 500; this layout measures 494-499 (docs/architecture.md, "Storage",
# says where the bytes go). The bound leaves room for how B-tree pages happen to split.
BYTES_BOUND = 510

# every byte a delivered delivery leaves behind: the history partitions' rows (main fork and
# TOAST) and their indexes. Not counted: the queue (empty again once everything is delivered,
# its pages reused) and each partition's free-space and visibility maps (about 32 KB a table
# and day, whatever the day holds).
SIZE = """
SELECT sum(pg_relation_size(c.oid, 'main') + pg_indexes_size(c.oid)
           + COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0))::bigint
FROM pg_class c
WHERE c.relkind = 'r'
  AND c.oid IN (SELECT i.inhrelid FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                WHERE p.relname = ANY($1::text[]))
"""


async def test_bytes_kept_per_delivered_delivery(
    world: Any, make_tenant: Any, figures: Any
) -> None:
    tenant: TenantKeys = await make_tenant()
    for path in ("/a", "/b", "/c"):
        await world.endpoint(tenant, path)
    async with world.pool.acquire() as conn:
        await conn.execute("VACUUM FULL delivery_queue")
        empty = await conn.fetchval(SIZE, list(partitioned_tables()))
    for start in range(0, EVENTS, 500):
        items = [
            Transition(tenant.tenant_id, "sandbox", f"ml_{n}", MailingStatus.CREATED)
            for n in range(start, start + 500)
        ]
        async with world.pool.acquire() as conn, conn.transaction():
            await record_transitions(conn, items, world.clock.now())
        assert await world.drain() == 1500
    async with world.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM delivery_queue") == 0
        await conn.execute("VACUUM delivery_queue")
        for table in partitioned_tables():
            await conn.execute(f"VACUUM {table}")
        used = await conn.fetchval(SIZE, list(partitioned_tables())) - empty
    per_delivery = used / (EVENTS * 3)
    figures.add(bytes_per_delivered_delivery=round(per_delivery, 1))
    assert per_delivery <= BYTES_BOUND, f"{per_delivery:.0f} bytes per delivery"
