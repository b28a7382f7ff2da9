"""Daily partitions of the history tables, created ahead of time and on demand.

Convention (the retention job relies on it): a partition of ``<parent>`` is named
``<parent>_pYYYYMMDD`` and covers [that day 00:00 UTC, the next day 00:00 UTC); there is no
DEFAULT partition, so a row whose day has no partition is refused, never misfiled. The SQL
function ``dispatcher_ensure_partition`` (migrations 004, 011) creates one, idempotently, without
blocking writers of the parent (created standalone, then attached); several processes may call
it for the same day at once.

A day is remembered (no query for it again in this process) only once its partitions are
known to be committed: a partition made inside a caller's transaction that rolls back must be
made again by the next write of its day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg

from dispatcher.db import queries as q

# parent table -> its partition key column: the one place that names them
_PARTITIONED = {
    "events": "created_at",
    "delivery_outcomes": "completed_at",
    "attempts": "started_at",
}

DAYS_AHEAD = 3

# days known to have every partition, per database (retention only drops old days)
_known: dict[tuple[str, str], set[date]] = {}


def partitioned_tables() -> tuple[str, ...]:
    """The partitioned history parents, oldest-first dependency order."""
    return tuple(_PARTITIONED)


def partition_key(table: str) -> str:
    """The timestamptz column ``table`` is partitioned on."""
    return _PARTITIONED[table]


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _database(conn: asyncpg.Connection) -> tuple[str, str]:
    params = getattr(conn, "_params", None)
    return (str(getattr(conn, "_addr", "")), str(getattr(params, "database", "")))


async def ensure_partitions(
    conn: asyncpg.Connection, now: datetime, days_ahead: int = DAYS_AHEAD
) -> list[str]:
    """Create the missing daily partitions of every history table from the day before `now`
    to `days_ahead` days after it; returns the names created. Idempotent."""
    today = _utc_day(now)
    days = [today + timedelta(days=offset) for offset in range(-1, days_ahead + 1)]
    created: list[str] = []
    for day in days:
        for table in _PARTITIONED:
            if await conn.fetchval(q.ENSURE_PARTITION, table, day):
                created.append(partition_name(table, day))
    if await _committed(conn):
        _known.setdefault(_database(conn), set()).update(days)
    return created


async def ensure_day(conn: asyncpg.Connection, moment: datetime) -> None:
    """Before writing history rows at `moment`: its day's partitions exist (a no-op without a
    query once they are known, so the hot path does not pay for it)."""
    day = _utc_day(moment)
    known = _known.setdefault(_database(conn), set())
    if day in known:
        return
    for table in _PARTITIONED:
        await conn.fetchval(q.ENSURE_PARTITION, table, day)
    if await _committed(conn):
        known.add(day)


async def _committed(conn: asyncpg.Connection) -> bool:
    """Whether every partition `conn` now sees is committed. Outside a transaction, yes (each
    call committed on its own). Inside one, only if the transaction created none: one it
    created may still roll back, and a later call in it answers "exists" for that one too."""
    if not conn.is_in_transaction():
        return True
    return not await conn.fetchval(q.HOLDS_PARTITION_LOCK)


def forget() -> None:
    """Partitions were dropped (retention, a test emptying the database): look again before
    writing to any day."""
    _known.clear()


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()
