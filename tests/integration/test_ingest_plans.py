"""The ingest read stays a primary-key lookup per mailing, whatever plan PostgreSQL caches.

asyncpg prepares each statement once per connection, and PostgreSQL may then reuse one
generic plan for it. A plan made while `mailings` is empty (a fresh database, or an API
process that starts before the load) must not become a join over a sequential scan of the
whole table: every transition's read would then cost more as the table grows.
"""

from __future__ import annotations

import asyncpg

from dispatcher.db import queries


async def test_read_ingest_generic_plan_on_an_empty_table_uses_the_primary_key(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM mailings") == 0
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        try:
            await conn.execute(
                "PREPARE read_ingest (text[], text[], text[], text[]) AS " + queries.READ_INGEST
            )
            plan = await conn.fetch(
                "EXPLAIN EXECUTE read_ingest"
                " ('{t1}', '{t1,t1}', '{sandbox,sandbox}', '{ml_1,ml_2}')"
            )
            await conn.execute("DEALLOCATE read_ingest")
        finally:
            await conn.execute("RESET plan_cache_mode")
    text = "\n".join(r[0] for r in plan)
    assert "Index Scan using mailings_pkey on mailings" in text, text
    assert "Seq Scan on mailings" not in text, text
