"""The delivery log's page query stays a page's work when the queue is large elsewhere.

A tenant opening an endpoint's log while other endpoints have a large backlog must not pay for
that backlog: the queued arm reads the endpoint's own rows newest first by index, and the
re-queued check probes the queue per row instead of joining the endpoint's history to it.
Checked on the plans PostgreSQL makes (custom and generic) with 50,000 queued deliveries of
another endpoint, after ANALYZE.
"""

from __future__ import annotations

import asyncpg
import pytest

from dispatcher.db import queries

QUIET, BUSY = "ep_quiet", "ep_busy"


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
async def test_a_quiet_endpoints_page_does_not_walk_another_endpoints_backlog(
    pool: asyncpg.Pool, mode: str
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO delivery_queue (id, event_id, endpoint_id, tenant_id, event_created_at,
                                           created_at, next_attempt_at, age_origin)
               SELECT g, 'evt_' || g, CASE WHEN g <= 10 THEN $1 ELSE $2 END, 'ten_x',
                      now(), now(), now(), now()
               FROM generate_series(1, 50010) g""",
            QUIET,
            BUSY,
        )
        await conn.execute("ANALYZE delivery_queue")
        await conn.execute(f"SET plan_cache_mode = {mode}")
        try:
            await conn.execute("PREPARE page AS " + queries.LIST_ENDPOINT_DELIVERIES)
            plan = await conn.fetch(
                f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)"
                f" EXECUTE page('{QUIET}', NULL, NULL, 100, NULL, NULL, NULL)"
            )
            await conn.execute("DEALLOCATE page")
        finally:
            await conn.execute("RESET plan_cache_mode")
    text = "\n".join(r[0] for r in plan)
    assert "delivery_queue_endpoint_log on delivery_queue q" in text, text
    assert "Rows Removed by Filter: 50000" not in text, text  # not past the busy endpoint's rows
    assert "Anti Join" not in text, text
