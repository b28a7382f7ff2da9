"""Throwaway partitioned tables shaped like the history (a day per partition, an events table a
queue points into), in their own schema, for the retention tests to build every case exactly."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import pytest

from dispatcher import metrics
from dispatcher.clock import FakeClock
from dispatcher.retention import HistoryTable

DAY = timedelta(days=1)


@dataclass
class Scratch:
    schema: str
    history: tuple[HistoryTable, ...]

    def partitions_sql(self) -> str:
        return (
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            f" WHERE i.inhparent = '{self.schema}.events'::regclass ORDER BY 1"
        )


async def add_partition(
    conn: asyncpg.Connection, schema: str, table: str, name: str, start: datetime, end: datetime
) -> None:
    await conn.execute(
        f"CREATE TABLE {schema}.{name} PARTITION OF {schema}.{table}"
        f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


def day_name(table: str, day: datetime) -> str:
    return f"{table}_p{day:%Y%m%d}"


@pytest.fixture
async def scratch(pool: asyncpg.Pool, clock: FakeClock) -> AsyncIterator[Scratch]:
    """events and attempts partitioned by day from 40 days ago to tomorrow, 10 rows a day, and
    a queue whose rows point at events by their creation time."""
    schema = f"rt_{uuid.uuid4().hex[:8]}"
    today = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    async with pool.acquire() as conn:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(
            f"CREATE TABLE {schema}.events (id text, created_at timestamptz NOT NULL, body bytea)"
            " PARTITION BY RANGE (created_at)"
        )
        await conn.execute(
            f"CREATE TABLE {schema}.attempts (delivery_id bigint, started_at timestamptz NOT NULL)"
            " PARTITION BY RANGE (started_at)"
        )
        await conn.execute(
            f"CREATE TABLE {schema}.queue (id bigint, event_id text, event_created_at timestamptz)"
        )
        for back in range(-1, 41):
            day = today - back * DAY
            for table in ("events", "attempts"):
                await add_partition(conn, schema, table, day_name(table, day), day, day + DAY)
        await conn.execute(
            f"""INSERT INTO {schema}.events
                SELECT 'evt_' || d || '_' || k, $1::timestamptz - d * interval '1 day', '\\x00'
                FROM generate_series(0, 40) d, generate_series(1, 10) k""",
            clock.now(),
        )
        await conn.execute(
            f"""INSERT INTO {schema}.attempts
                SELECT d * 100 + k, $1::timestamptz - d * interval '1 day'
                FROM generate_series(0, 40) d, generate_series(1, 10) k""",
            clock.now(),
        )
    needed = (
        f"SELECT EXISTS (SELECT 1 FROM {schema}.queue"
        " WHERE event_created_at >= $1 AND event_created_at < $2)"
    )
    yield Scratch(
        schema, (HistoryTable(f"{schema}.events", needed), HistoryTable(f"{schema}.attempts"))
    )
    async with pool.acquire() as conn:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    for table in ("events", "attempts"):  # the process's registry keeps only real tables
        for metric in (metrics.RETENTION_REMOVED, metrics.RETAINED_BYTES, metrics.RETAINED_DAYS):
            with contextlib.suppress(KeyError):
                metric.remove(f"{schema}.{table}")
