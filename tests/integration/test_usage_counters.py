"""Usage counters (GET /internal/v1/tenants/{id}/usage) on a real database.

What the platform would notice: a transaction it keeps open around `record_transition` (its
outbox) never holds up anyone else's ingest of the same tenant, and the per-day answers stay
exact when housekeeping folds a closed day's counter rows together.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import asyncpg

from dispatcher.clock import FakeClock
from dispatcher.events import Transition, ingest, record_transitions
from dispatcher.maintenance import maintain
from dispatcher.models import Environment
from dispatcher.partitions import ensure_day
from dispatcher.store.tenants import fold_usage, usage
from dispatcher.transitions import MailingStatus

ROWS = "SELECT count(*) FROM usage_daily WHERE tenant_id = $1 AND day = $2"


def created(tenant: str, mailing: str, env: str = "sandbox") -> Transition:
    return Transition(tenant, env, mailing, MailingStatus.CREATED)


async def test_open_outbox_transactions_hold_up_no_other_session(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    """Nine sessions each keep a transaction open after recording a transition of one tenant:
    each records at once (with counters shared by sessions, two of nine would share one and
    the second would wait for the first's commit)."""
    tenant = (await make_tenant()).tenant_id
    async with pool.acquire() as conn:
        await ensure_day(conn, clock.now())
    async with AsyncExitStack() as stack:
        transactions = []
        for i in range(9):
            conn = await stack.enter_async_context(pool.acquire())
            tx = conn.transaction()
            await tx.start()
            transactions.append(tx)
            async with asyncio.timeout(10):
                (recorded,) = await record_transitions(
                    conn, [created(tenant, f"ml_{i}")], clock.now()
                )
            assert recorded.verdict.word == "accepted"
        for tx in transactions:
            await tx.commit()
    async with pool.acquire() as conn:
        (today,) = await usage(conn, tenant, clock.now().date(), clock.now().date())
    assert today.events_accepted == 9


async def _counts(pool: asyncpg.Pool, tenant: str, clock: FakeClock) -> list[tuple[Any, ...]]:
    day = clock.now().date()
    async with pool.acquire() as conn:
        rows = await usage(conn, tenant, day - timedelta(days=2), day)
    return [(r.day, r.environment, r.events_accepted) for r in rows]


async def test_housekeeping_folds_closed_days_into_one_row_and_the_answers_stay(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = (await make_tenant()).tenant_id
    yesterday = clock.now() - timedelta(days=1)
    async with AsyncExitStack() as stack:  # three sessions count yesterday, two count today
        conns = [await stack.enter_async_context(pool.acquire()) for _ in range(3)]
        for i, conn in enumerate(conns):
            async with conn.transaction():
                await ingest(
                    conn,
                    [created(tenant, f"ml_y{i}"), created(tenant, f"ml_p{i}", "production")],
                    yesterday,
                )
        for i, conn in enumerate(conns[:2]):
            await ingest(conn, [created(tenant, f"ml_t{i}")], clock.now())
    before = await _counts(pool, tenant, clock)
    assert before == [
        (yesterday.date(), Environment.PRODUCTION, 3),
        (yesterday.date(), Environment.SANDBOX, 3),
        (clock.now().date(), Environment.SANDBOX, 2),
    ]
    async with pool.acquire() as conn:
        assert await conn.fetchval(ROWS, tenant, yesterday.date()) == 6
        assert await conn.fetchval(ROWS, tenant, clock.now().date()) == 2

    await maintain(pool, clock.now(), retention_days=30)

    assert await _counts(pool, tenant, clock) == before
    async with pool.acquire() as conn:
        assert await conn.fetchval(ROWS, tenant, yesterday.date()) == 2, "one per environment"
        assert await conn.fetchval(ROWS, tenant, clock.now().date()) == 2, "today is not folded"
        # a late count of yesterday (a transaction open across midnight) is added on the next fold
        await ingest(conn, [created(tenant, "ml_late")], yesterday)
        assert await fold_usage(conn, clock.now().date()) == 1
        assert await conn.fetchval(ROWS, tenant, yesterday.date()) == 2
    after = await _counts(pool, tenant, clock)
    assert after[1] == (yesterday.date(), Environment.SANDBOX, 4)
    assert after[0] == before[0] and after[2] == before[2]


async def test_folding_skips_a_row_a_session_still_holds(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    """An open transaction's counter row is left for the next round; housekeeping never waits."""
    tenant = (await make_tenant()).tenant_id
    yesterday = clock.now() - timedelta(days=1)
    async with pool.acquire() as holder, pool.acquire() as conn:  # two sessions
        await ingest(conn, [created(tenant, "ml_0")], yesterday)
        tx = holder.transaction()
        await tx.start()
        try:
            await record_transitions(holder, [created(tenant, "ml_1")], yesterday)
            async with asyncio.timeout(10):
                assert await fold_usage(conn, clock.now().date()) == 1  # ml_0's row only
        finally:
            await tx.commit()
    async with pool.acquire() as conn:
        assert await conn.fetchval(ROWS, tenant, yesterday.date()) == 2
        assert await fold_usage(conn, clock.now().date()) == 1
        assert await conn.fetchval(ROWS, tenant, yesterday.date()) == 1
    assert await _counts(pool, tenant, clock) == [(yesterday.date(), Environment.SANDBOX, 2)]
