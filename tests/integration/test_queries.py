"""Every named query PREPAREs against the migrated schema: a renamed column fails here."""

from __future__ import annotations

import asyncpg
import pytest

from dispatcher.db import queries

NAMED = {
    name: value
    for name, value in vars(queries).items()
    if name.isupper() and isinstance(value, str) and not name.endswith(("_COLUMNS", "_CTE"))
}  # *_COLUMNS and *_CTE are fragments of the statements, not statements


@pytest.mark.parametrize("name", sorted(NAMED))
async def test_query_prepares(pool: asyncpg.Pool, name: str) -> None:
    async with pool.acquire() as conn:
        await conn.prepare(NAMED[name])


async def test_claim_uses_the_partial_queue_index(pool: asyncpg.Pool) -> None:
    """On the pending-only per-endpoint index, claim cost does not grow with settled history."""
    async with pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")
        plan = await conn.fetch(
            "EXPLAIN "
            + queries.CLAIM_DELIVERIES.replace("$1", "now()")
            .replace("$2", "256")
            .replace("$3", "64")
            .replace("$4", "16")
            .replace("$5", "5")
            .replace("$6", "now() + interval '1 minute'")
            .replace("$7", "''")
        )
        await conn.execute("RESET enable_seqscan")
    text = "\n".join(r[0] for r in plan)
    # the per-endpoint queue index serves the loose scan, the heads and the picks
    assert "deliveries_endpoint_due" in text, text
    assert "Seq Scan on deliveries" not in text, text
