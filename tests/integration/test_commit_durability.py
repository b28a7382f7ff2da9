"""Which connections wait for the disk at commit.

What a user relies on: an accepted event (the API's 202) is on disk, and so is everything the
API writes; the delivery loop's claims and settles are not waited for (a PostgreSQL crash
makes those deliveries go out again: tests/faults/test_database_restart.py, immediate mode).
"""

from __future__ import annotations

import asyncpg

from dispatcher.db.pool import open_delivery_pool, open_pool
from dispatcher.settings import Settings


async def test_the_api_pool_waits_for_the_disk_and_the_delivery_pool_does_not(
    scratch_url: str, settings: Settings
) -> None:
    # the suite's server commits without waiting (speed); a production database waits
    admin = await asyncpg.connect(scratch_url)
    try:
        await admin.execute(
            f"ALTER DATABASE {await admin.fetchval('SELECT current_database()')}"
            " SET synchronous_commit = on"
        )
    finally:
        await admin.close()
    async with open_pool(scratch_url, settings) as durable:
        assert await durable.fetchval("SHOW synchronous_commit") == "on"
    async with (
        open_delivery_pool(scratch_url, settings) as delivery,
        delivery.acquire() as conn,
        delivery.acquire() as other,  # every connection, not only the first
    ):
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
        assert await other.fetchval("SHOW synchronous_commit") == "off"
