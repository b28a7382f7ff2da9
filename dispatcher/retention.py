"""Retention: history older than `RETENTION_DAYS` is removed by whole partitions, never row by row.

History tables are range-partitioned by day. A partition goes when its whole range is older
than the cutoff, read from the catalog (its bound), not from its name, and only when nothing
pending still needs it (a replayed delivery of an old event keeps its event). Tables keyed by
something else than time (mailing state, Idempotency-Key records) cannot be partitioned by
time, so they are trimmed in bounded batches of pages instead. Every step is a short
transaction that first tries the retention lock: one process at a time across any number of
replicas; the others skip.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from dispatcher import metrics
from dispatcher.db import queries as q
from dispatcher.partitions import forget as forget_partitions
from dispatcher.partitions import partitioned_tables

log = logging.getLogger(__name__)

# Idempotency-Key answers are replayed for 24 hours (as Stripe does), then forgotten.
IDEMPOTENCY_KEEP = timedelta(hours=24)
# Pages (8 KiB each) per trim transaction: bounded work and row locks per step.
PAGES_PER_BATCH = 1024
# How long a partition drop may wait for the locks it needs; a busy table is left for the next
# run rather than queueing every writer behind the drop.
LOCK_TIMEOUT_MS = 500


@dataclass(frozen=True)
class HistoryTable:
    """A partitioned history table and what pending deliveries may still need from it."""

    name: str
    # $1 start, $2 end of a partition's range -> true while pending work needs rows in it
    needed_by_pending: str | None = None


@dataclass(frozen=True)
class TrimmedTable:
    """A table that time partitioning does not fit, trimmed by page ranges."""

    name: str
    trim: str  # $1 first page, $2 page after the last, $3 cutoff -> rows deleted
    count: str  # $1 cutoff -> rows a trim would delete
    keep: timedelta | None = None  # None: RETENTION_DAYS


# The partitioned history tables are wired to the engine's partition layout in one place
# (dispatcher.partitions): an events partition stays while a queued delivery needs its event.
_NEEDED_BY_PENDING = {"events": q.QUEUE_NEEDS_EVENTS}
HISTORY: tuple[HistoryTable, ...] = tuple(
    HistoryTable(name, _NEEDED_BY_PENDING.get(name)) for name in partitioned_tables()
)
TRIMMED: tuple[TrimmedTable, ...] = (
    TrimmedTable("mailings", q.TRIM_MAILINGS, q.COUNT_EXPIRED_MAILINGS),
    TrimmedTable(
        "idempotency_keys",
        q.TRIM_IDEMPOTENCY_KEYS,
        q.COUNT_EXPIRED_IDEMPOTENCY_KEYS,
        IDEMPOTENCY_KEEP,
    ),
)

BOUNDED_TABLES = tuple(t.name for t in HISTORY) + tuple(t.name for t in TRIMMED)

for _name in BOUNDED_TABLES:  # every series exists from the start, at 0
    metrics.RETENTION_REMOVED.labels(table=_name)
    metrics.RETAINED_BYTES.labels(table=_name)
for _history in HISTORY:
    metrics.RETAINED_DAYS.labels(table=_history.name)


@dataclass(frozen=True)
class Partition:
    table: str
    name: str
    start: datetime | None  # None: MINVALUE
    end: datetime | None  # None: MAXVALUE (or a bound this module cannot read: never removed)
    estimated_rows: int
    bytes: int
    detaching: bool = False  # a concurrent detach was interrupted: finish it


@dataclass(frozen=True)
class Removal:
    """What went (or would go): a whole partition, or the expired rows of a trimmed table."""

    table: str
    rows: int
    partition: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class Kept:
    """An expired partition left in place, and why."""

    table: str
    partition: str
    reason: str


@dataclass
class RetentionReport:
    cutoff: datetime
    dry_run: bool
    removed: list[Removal] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    # another process held the retention lock: this run stopped where it was
    busy: bool = False


_BOUND = re.compile(r"FOR VALUES FROM \((?P<start>[^)]*)\) TO \((?P<end>[^)]*)\)")


def _bound_value(text: str) -> datetime | None:
    """One bound literal as PostgreSQL prints it: `'2026-05-11 00:00:00+00'`, or MINVALUE."""
    literal = text.strip()
    if not (literal.startswith("'") and literal.endswith("'")):
        return None
    try:
        value = datetime.fromisoformat(literal[1:-1])
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def partition_span(bound: str) -> tuple[datetime | None, datetime | None]:
    """The [start, end) of a range partition from its bound; (None, None) when unreadable."""
    found = _BOUND.search(bound)
    if found is None:
        return None, None
    return _bound_value(found["start"]), _bound_value(found["end"])


async def list_partitions(
    conn: asyncpg.Connection, history: Sequence[HistoryTable]
) -> list[Partition]:
    """Every partition of the history tables, oldest first within each table."""
    rows = await conn.fetch(q.HISTORY_PARTITIONS, [t.name for t in history])
    found = []
    for r in rows:
        start, end = partition_span(r["bound"])
        found.append(
            Partition(
                r["parent"],
                r["partition"],
                start,
                end,
                r["estimated_rows"],
                r["bytes"],
                r["detaching"],
            )
        )
    oldest = datetime.min.replace(tzinfo=UTC)
    found.sort(key=lambda p: (p.table, p.start or oldest))
    return found


class _Busy(Exception):
    """Another process holds the retention lock: this run stops where it is."""


async def _lock(conn: asyncpg.Connection) -> None:
    if not await conn.fetchval(q.TRY_RETENTION_LOCK):
        raise _Busy


async def _exact_rows(conn: asyncpg.Connection, partition: Partition) -> int:
    if partition.estimated_rows >= 0:
        return partition.estimated_rows
    # never analyzed (young or bulk-loaded): count it, outside any lock
    n: int = await conn.fetchval(f"SELECT count(*) FROM {partition.name}")
    return n


async def _needed(conn: asyncpg.Connection, table: HistoryTable, partition: Partition) -> bool:
    if table.needed_by_pending is None:
        return False
    needed: bool = await conn.fetchval(table.needed_by_pending, partition.start, partition.end)
    return needed


NEEDED = "pending deliveries need it"
IN_USE = "in use; the next run retries"


async def _drop(conn: asyncpg.Connection, table: HistoryTable, partition: Partition) -> str | None:
    """Detach one partition concurrently, then drop it; the reason it stays, if it does.

    `DETACH PARTITION ... CONCURRENTLY` takes no lock that readers of the parent wait for (a
    claim reads event bodies through `events`): it waits for the queries that already see the
    partition instead, while new ones no longer do. It cannot run in a transaction block, so the
    retention lock and the requeue lock are held by the session across the check, the detach
    and the drop: a replay waits (or finishes first) and never re-queues a delivery whose event
    is going. A detach interrupted (lock timeout, process killed) leaves the partition pending
    detach; the next run finishes it with FINALIZE.
    """
    if not await conn.fetchval(q.TRY_RETENTION_SESSION_LOCK):
        raise _Busy
    try:
        await conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
        await conn.execute(q.LOCK_REQUEUE_SESSION)
        try:
            if await _needed(conn, table, partition):
                return NEEDED
            how = "FINALIZE" if partition.detaching else "CONCURRENTLY"
            await conn.execute(f"ALTER TABLE {table.name} DETACH PARTITION {partition.name} {how}")
            await conn.execute(f"DROP TABLE {partition.name}")
        finally:
            await conn.execute(q.UNLOCK_REQUEUE_SESSION)
        forget_partitions()  # a write for that day (a test's clock) makes it again
    except asyncpg.LockNotAvailableError:
        return IN_USE
    finally:
        await conn.execute("RESET lock_timeout")
        await conn.execute(q.UNLOCK_RETENTION_SESSION)
    return None


async def _remove_partitions(
    conn: asyncpg.Connection, history: Sequence[HistoryTable], report: RetentionReport
) -> None:
    tables = {t.name: t for t in history}
    # a table has at most one partition pending detach: an interrupted one is finished first,
    # and after a detach gives up, the table's other partitions wait for the next run
    found = sorted(await list_partitions(conn, history), key=lambda p: not p.detaching)
    stuck: set[str] = set()
    for partition in found:
        if partition.end is None or partition.end > report.cutoff:
            continue
        table = tables[partition.table]
        rows = await _exact_rows(conn, partition)
        if report.dry_run:
            reason = NEEDED if await _needed(conn, table, partition) else None
        elif table.name in stuck:
            reason = IN_USE
        else:
            reason = await _drop(conn, table, partition)
        if reason is not None:
            if reason == IN_USE:
                stuck.add(table.name)
            report.kept.append(Kept(table.name, partition.name, reason))
            continue
        report.removed.append(
            Removal(
                table.name, rows, partition.name, partition.start, partition.end, partition.bytes
            )
        )


async def _trim(
    conn: asyncpg.Connection, table: TrimmedTable, cutoff: datetime, report: RetentionReport
) -> None:
    """Delete the table's expired rows, one bounded page range per transaction."""
    if report.dry_run:
        n: int = await conn.fetchval(table.count, cutoff)
        if n:
            report.removed.append(Removal(table.name, n))
        return
    pages: int = await conn.fetchval(q.TABLE_PAGES, table.name)
    removed = 0
    try:
        for first in range(0, pages, PAGES_PER_BATCH):
            async with conn.transaction():
                await _lock(conn)
                status = await conn.execute(table.trim, first, first + PAGES_PER_BATCH, cutoff)
                removed += int(status.rsplit(" ", 1)[-1])
    finally:
        if removed:
            report.removed.append(Removal(table.name, removed))


async def apply_retention(
    conn: asyncpg.Connection,
    now: datetime,
    retention_days: int,
    *,
    dry_run: bool = False,
    history: Sequence[HistoryTable] | None = None,
    trimmed: Sequence[TrimmedTable] | None = None,
) -> RetentionReport:
    """Remove (or, dry, list) everything older than the cutoff that nothing pending needs.

    Mailing state goes before the events its rows point at, so no mailing outlives its last
    event. Counts of removed partitions come from the planner's statistics when it has them.
    """
    report = RetentionReport(now - timedelta(days=retention_days), dry_run)
    try:
        for table in TRIMMED if trimmed is None else trimmed:
            cutoff = now - table.keep if table.keep is not None else report.cutoff
            await _trim(conn, table, cutoff, report)
        await _remove_partitions(conn, HISTORY if history is None else history, report)
    except _Busy:
        report.busy = True
    if not dry_run:
        for removal in report.removed:
            metrics.RETENTION_REMOVED.labels(table=removal.table).inc(removal.rows)
    return report


async def refresh_retained_gauges(
    conn: asyncpg.Connection,
    now: datetime,
    history: Sequence[HistoryTable] | None = None,
    trimmed: Sequence[TrimmedTable] | None = None,
) -> None:
    """What is kept: bytes per table, and how many days back each history table reaches."""
    history = HISTORY if history is None else history
    trimmed = TRIMMED if trimmed is None else trimmed
    sizes: dict[str, int] = {t.name: 0 for t in history}
    oldest: dict[str, datetime] = {}
    for p in await list_partitions(conn, history):
        sizes[p.table] += p.bytes
        if p.start is not None and (p.table not in oldest or p.start < oldest[p.table]):
            oldest[p.table] = p.start
    for trim in trimmed:
        sizes[trim.name] = await conn.fetchval(q.TABLE_BYTES, trim.name)
    for name, size in sizes.items():
        metrics.RETAINED_BYTES.labels(table=name).set(size)
    for table in history:
        start = oldest.get(table.name)
        days = max((now - start).total_seconds() / 86400, 0) if start else 0
        metrics.RETAINED_DAYS.labels(table=table.name).set(days)
