"""The first rows of a new UTC day, written by several processes at once: each one's partition
call succeeds (the losers answer "not created"), and a partition made inside a transaction that
rolls back is made again by the next write of its day.

Every wait on a lock is bounded (asyncio.timeout, and lock_timeout on the server), and every
transaction a test opens is ended in `finally`, so a failure never hangs the suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest

from dispatcher import partitions
from dispatcher.clock import FakeClock
from dispatcher.events import Transition, ingest, record_transition
from dispatcher.partitions import ensure_day, partition_name, partitioned_tables
from dispatcher.transitions import Accept, MailingStatus

ENSURE = "SELECT dispatcher_ensure_partition($1, $2)"
WAIT = 10.0  # seconds: far more than any lock here is held, far less than the test timeout


@pytest.fixture
async def days(pool: asyncpg.Pool) -> AsyncIterator[list[date]]:
    """Far-future days no other test writes to; their partitions are dropped afterwards."""
    used: list[date] = []
    yield used
    async with pool.acquire() as conn:
        for day in used:
            for table in partitioned_tables():
                await conn.execute(f'DROP TABLE IF EXISTS "{partition_name(table, day)}"')
    partitions.forget()


async def _connect(database_url: str) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    await conn.execute("SET lock_timeout = '10s'")  # the server's own bound on every lock wait
    return conn


async def _close(conns: Iterable[asyncpg.Connection]) -> None:
    for conn in conns:
        await conn.close(timeout=WAIT)  # ends (rolls back) whatever it left open


async def _made_one_before(conn: asyncpg.Connection, day: date, days: list[date]) -> None:
    """`conn` makes a partition of another day first, like the long-lived connections of a
    pool do: its session then keeps the function's plans, and no longer looks at fresh
    catalog entries on the way (a connection's first call happens to)."""
    day = day.replace(year=day.year - 1)
    days.append(day)
    async with asyncio.timeout(WAIT):
        assert await conn.fetchval(ENSURE, "events", day) is True


async def _attached(conn: asyncpg.Connection, table: str, day: date) -> int:
    """How many partitions of `table` carry `day`'s name (1 when made once, correctly)."""
    count: int = await conn.fetchval(
        """SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = $1::regclass AND c.relname = $2""",
        table,
        partition_name(table, day),
    )
    return count


async def _waiting_on_advisory_lock(conn: asyncpg.Connection, pid: int) -> None:
    """Return once backend `pid` waits for an advisory lock (polled, never slept on)."""
    async with asyncio.timeout(WAIT):
        while not await conn.fetchval(  # noqa: ASYNC110 - waiting on another session
            """SELECT wait_event_type = 'Lock' AND wait_event = 'advisory'
               FROM pg_stat_activity WHERE pid = $1""",
            pid,
        ):
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("isolation", ["read_committed", "repeatable_read"])
async def test_a_partition_committed_after_the_callers_snapshot_is_not_made_twice(
    pool: asyncpg.Pool, database_url: str, days: list[date], isolation: str
) -> None:
    """A caller in a transaction that began (and looked for the partition) before another
    process made it: its call answers "not created" instead of failing on ATTACH."""
    day = date(2091, 3, 1) if isolation == "read_committed" else date(2091, 3, 2)
    days.append(day)
    a, b = await _connect(database_url), await _connect(database_url)
    try:
        await _made_one_before(a, day, days)
        ta = a.transaction(isolation=isolation)
        await ta.start()
        try:
            await a.fetchval("SELECT count(*) FROM events")  # the transaction's snapshot
            # the function's own first look, which leaves "missing" in this session's cache
            assert await a.fetchval("SELECT to_regclass($1)", partition_name("events", day)) is None
            async with asyncio.timeout(WAIT):
                assert await b.fetchval(ENSURE, "events", day) is True
                assert await a.fetchval(ENSURE, "events", day) is False
                assert await a.fetchval(ENSURE, "events", day) is False
            await ta.commit()
        finally:
            if a.is_in_transaction():
                await ta.rollback()
        assert await _attached(a, "events", day) == 1
        async with asyncio.timeout(WAIT):
            await a.execute(
                """INSERT INTO events (id, tenant_id, environment, event_type, mailing_id,
                                       occurred_at, created_at, body)
                   VALUES ('evt_race', 't', 'sandbox', 'mailing.created', 'ml', $1, $1, '')""",
                datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
            )
    finally:
        await _close((a, b))


@pytest.mark.parametrize("caller_in_transaction", [False, True])
async def test_the_creator_that_waited_for_the_lock_answers_not_created(
    pool: asyncpg.Pool, database_url: str, days: list[date], caller_in_transaction: bool
) -> None:
    """B creates the partition and holds the creators' lock in its open transaction; A's call
    waits for it, and answers "not created" once B commits."""
    day = date(2091, 4, 1) if caller_in_transaction else date(2091, 4, 2)
    days.append(day)
    a, b, watcher = [await _connect(database_url) for _ in range(3)]
    tb = b.transaction()
    ta = a.transaction()
    waiting: asyncio.Task[Any] | None = None
    try:
        await _made_one_before(a, day, days)
        await tb.start()
        async with asyncio.timeout(WAIT):
            assert await b.fetchval(ENSURE, "attempts", day) is True
        if caller_in_transaction:
            await ta.start()
            await a.fetchval("SELECT count(*) FROM attempts")
        waiting = asyncio.create_task(a.fetchval(ENSURE, "attempts", day))
        await _waiting_on_advisory_lock(watcher, a.get_server_pid())
        assert not waiting.done()
        await tb.commit()
        async with asyncio.timeout(WAIT):
            assert await waiting is False
        if caller_in_transaction:
            await ta.commit()
        assert await _attached(watcher, "attempts", day) == 1
    finally:
        if b.is_in_transaction():
            await tb.rollback()  # releases the lock A may be waiting for
        if waiting is not None and not waiting.done():
            waiting.cancel()
        await _close((a, b, watcher))


async def test_first_writes_of_a_new_day_from_many_connections_all_succeed(
    pool: asyncpg.Pool, make_tenant: Any, days: list[date]
) -> None:
    """Eight platform transactions record the first transitions of a new day at once (each
    creating that day's partitions on demand): every one is recorded."""
    day = date(2091, 5, 1)
    days.append(day)
    moment = datetime(day.year, day.month, day.day, 0, 0, 1, tzinfo=UTC)
    tenant = await make_tenant()

    async def write(n: int) -> Accept | object:
        async with pool.acquire() as conn, conn.transaction():
            transition = Transition(tenant.tenant_id, "sandbox", f"ml_{n}", MailingStatus.PRINTED)
            return (await record_transition(conn, transition, moment)).verdict

    async with asyncio.timeout(WAIT):
        verdicts = await asyncio.gather(*(write(n) for n in range(8)))
    assert all(isinstance(v, Accept) for v in verdicts)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events") == 8
        for table in partitioned_tables():
            assert await _attached(conn, table, day) == 1


async def test_a_day_made_in_a_rolled_back_transaction_is_made_again(
    pool: asyncpg.Pool, make_tenant: Any, days: list[date]
) -> None:
    """The platform records a transition of a new day in its own transaction, which rolls
    back (taking that day's new partitions with it): the next write of that day, on another
    connection of the same process, is still recorded."""
    day = date(2091, 6, 1)
    days.append(day)
    clock = FakeClock(datetime(day.year, day.month, day.day, 9, tzinfo=UTC))
    tenant = await make_tenant()
    first = Transition(tenant.tenant_id, "sandbox", "ml_1", MailingStatus.PRINTED)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            async with asyncio.timeout(WAIT):
                await record_transition(conn, first, clock.now())
        finally:
            await tx.rollback()  # the platform's own write failed
        assert await conn.fetchval("SELECT to_regclass($1)", partition_name("events", day)) is None
    clock.advance(60)
    async with pool.acquire() as other:
        async with asyncio.timeout(WAIT):
            (result,) = await ingest(other, [first], clock.now())
        assert isinstance(result.verdict, Accept)
        assert await other.fetchval("SELECT count(*) FROM events") == 1


async def test_a_day_committed_by_another_is_remembered_inside_a_transaction(
    pool: asyncpg.Pool, days: list[date]
) -> None:
    """Writes inside transactions (the outbox, settling) do not query for a day whose
    partitions someone else committed, once they have seen them; a day their own transaction
    made is looked at again until it is known to be committed."""
    made_elsewhere, made_here = date(2091, 7, 1), date(2091, 7, 2)
    days.extend([made_elsewhere, made_here])
    queries: list[str] = []

    def log(record: Any) -> None:
        queries.append(record.query)

    async def queried(moment: datetime) -> int:
        """How many queries `ensure_day` sent for `moment`."""
        before = len(queries)
        async with asyncio.timeout(WAIT):
            await ensure_day(conn, moment)
        return len(queries) - before

    async with pool.acquire() as conn:
        await partitions.ensure_partitions(conn, _noon(made_elsewhere), days_ahead=0)
        partitions.forget()  # another process made them; this one has not seen them yet
        conn.add_query_logger(log)
        try:
            async with conn.transaction():
                assert await queried(_noon(made_elsewhere)) > 0
                assert await queried(_noon(made_elsewhere)) == 0, "remembered after one look"
                assert await queried(_noon(made_here)) > 0  # created, not committed yet
                assert await queried(_noon(made_here)) > 0, "its creation may still roll back"
            async with conn.transaction():
                assert await queried(_noon(made_here)) > 0  # committed now: remembered
                assert await queried(_noon(made_here)) == 0
        finally:
            conn.remove_query_logger(log)


def _noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


async def test_days_made_ahead_in_a_rolled_back_transaction_are_made_again(
    pool: asyncpg.Pool, days: list[date]
) -> None:
    """The same for the days made ahead (`ensure_partitions`): a rolled-back run leaves
    nothing remembered, so a write of one of those days still finds its partition."""
    day = date(2091, 8, 1)
    days.extend(day.replace(day=d) for d in range(1, 4))  # the day before to the day after
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            async with asyncio.timeout(WAIT):
                made = await partitions.ensure_partitions(conn, _noon(day.replace(day=2)), 1)
            assert partition_name("events", day) in made
        finally:
            await tx.rollback()
    async with pool.acquire() as other:
        async with asyncio.timeout(WAIT):
            await ensure_day(other, _noon(day))
            await other.execute(
                """INSERT INTO events (id, tenant_id, environment, event_type, mailing_id,
                                       occurred_at, created_at, body)
                   VALUES ('evt_ahead', 't', 'sandbox', 'mailing.created', 'ml', $1, $1, '')""",
                _noon(day),
            )
        assert await _attached(other, "events", day) == 1
