"""Retention removes whole expired partitions (found by their bounds), keeps what pending work
needs, runs one process at a time, and trims mailing state and Idempotency-Key records.

The partitioned tables here are throwaway ones in their own schema, shaped like the history
(a day per partition, an events table a queue points into), so every case is built exactly.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from dispatcher import retention
from dispatcher.clock import FakeClock
from dispatcher.db import queries as q
from dispatcher.retention import apply_retention, partition_span
from dispatcher.store.deliveries import (
    DeadLetterFilter,
    count_dead_letters,
    replay_dead_letters,
)
from tests.integration.conftest import World
from tests.integration.history_tables import Scratch, add_partition

DAY = timedelta(days=1)


async def partitions(conn: asyncpg.Connection, scratch: Scratch) -> list[str]:
    return [r[0] for r in await conn.fetch(scratch.partitions_sql())]


def removed_total(table: str) -> float:
    value = REGISTRY.get_sample_value("webhook_retention_removed_total", {"table": table})
    return value or 0.0


async def _retain_through_contention(
    conn: asyncpg.Connection, now: datetime, scratch: Scratch
) -> tuple[list[retention.Removal], retention.RetentionReport]:
    """Retention run again while a partition was in use or another run held the lock: the
    promise there is "the next run retries". Twice, in two sessions' full-suite runs on a
    loaded machine, the first run here kept a partition it should have dropped (never
    reproduced alone); a DETACH ... CONCURRENTLY that outwaits its 500 ms lock timeout behind
    another session's snapshot is the one way it can. -> all removed, and the last report."""
    removed: list[retention.Removal] = []
    for _ in range(5):
        report = await apply_retention(conn, now, 30, history=scratch.history, trimmed=())
        removed += report.removed
        if not report.busy and all(k.reason != retention.IN_USE for k in report.kept):
            break
    return removed, report


async def test_whole_expired_partitions_are_dropped_and_the_rest_kept(
    pool: asyncpg.Pool, clock: FakeClock, scratch: Scratch
) -> None:
    now = clock.now()  # 2026-05-11 08:00 UTC: the cutoff is 2026-04-11 08:00
    events = f"{scratch.schema}.events"
    before = removed_total(events)
    async with pool.acquire() as conn:
        removed, report = await _retain_through_contention(conn, now, scratch)
        left = await partitions(conn, scratch)
        oldest_row = await conn.fetchval(f"SELECT min(created_at) FROM {events}")
        rows = await conn.fetchval(f"SELECT count(*) FROM {events}")
    # [04-10, 04-11) ends before the cutoff; [04-11, 04-12) holds rows younger than it
    assert left[0] == "events_p20260411"
    assert left[-1] == "events_p20260512"
    assert oldest_row == now - 30 * DAY, "rows of a partially expired day stay until it all is"
    assert rows == 31 * 10
    gone = sorted(r.partition or "" for r in removed if r.table == events)
    assert gone == [f"{scratch.schema}.events_p202604{d:02d}" for d in range(1, 11)]
    assert all(r.rows == 10 for r in removed)
    assert {r.table for r in removed} == {events, f"{scratch.schema}.attempts"}
    assert not report.kept and not report.busy
    assert removed_total(events) - before == 100
    async with pool.acquire() as conn:
        again = await apply_retention(conn, now, 30, history=scratch.history, trimmed=())
    assert again.removed == [], "a second run finds nothing left to do"


async def test_a_partition_pending_work_needs_is_kept_until_it_is_done(
    pool: asyncpg.Pool, clock: FakeClock, scratch: Scratch
) -> None:
    """A replayed delivery of a 35-day-old event keeps its event's partition, and only it."""
    now = clock.now()
    old = now - 35 * DAY
    async with pool.acquire() as conn:
        await conn.execute(f"INSERT INTO {scratch.schema}.queue VALUES (1, 'evt_35_1', $1)", old)
        report = await apply_retention(conn, now, 30, history=scratch.history, trimmed=())
        left = await partitions(conn, scratch)
        body = await conn.fetchval(
            f"SELECT body FROM {scratch.schema}.events WHERE id = 'evt_35_1'"
        )
    assert body == b"\x00"
    assert left[0] == f"events_p{old:%Y%m%d}"
    assert left[1] == "events_p20260411"
    assert [(k.partition, k.reason) for k in report.kept] == [
        (f"{scratch.schema}.events_p{old:%Y%m%d}", retention.NEEDED)
    ]
    async with pool.acquire() as conn:
        await conn.execute(f"DELETE FROM {scratch.schema}.queue")
        later = await apply_retention(conn, now, 30, history=scratch.history, trimmed=())
        left = await partitions(conn, scratch)
    assert [r.partition for r in later.removed] == [f"{scratch.schema}.events_p{old:%Y%m%d}"]
    assert left[0] == "events_p20260411"


async def test_partitions_are_judged_by_their_bounds_not_their_names(
    pool: asyncpg.Pool, clock: FakeClock, scratch: Scratch
) -> None:
    s = scratch.schema
    async with pool.acquire() as conn:
        # misleading names, a range that straddles days, a bound far in the future
        await add_partition(
            conn,
            s,
            "events",
            "events_p20990101",
            datetime(2026, 3, 1, tzinfo=UTC),
            datetime(2026, 3, 2, 12, tzinfo=UTC),
        )
        await add_partition(
            conn,
            s,
            "events",
            "events_p20000101",
            datetime(2027, 1, 1, tzinfo=UTC),
            datetime(2099, 1, 1, tzinfo=UTC),
        )
        await conn.execute(
            f"CREATE TABLE {s}.events_rest PARTITION OF {s}.events"
            " FOR VALUES FROM ('2099-01-01') TO (MAXVALUE)"
        )
        await conn.execute("SET TimeZone = 'Asia/Kolkata'")  # bounds print with +05:30
        try:
            report = await apply_retention(
                conn, clock.now(), 30, history=scratch.history[:1], trimmed=()
            )
        finally:
            await conn.execute("RESET TimeZone")
        left = await partitions(conn, scratch)
    removed = {r.partition: r for r in report.removed}
    assert f"{s}.events_p20990101" in removed
    assert removed[f"{s}.events_p20990101"].end == datetime(2026, 3, 2, 12, tzinfo=UTC)
    assert {"events_p20000101", "events_rest", "events_p20260411"} <= set(left)
    assert f"{s}.events_p20260411" not in removed


def test_partition_bounds_are_read_in_every_form_postgresql_prints() -> None:
    tz = UTC
    assert partition_span(
        "FOR VALUES FROM ('2026-05-11 05:30:00+05:30') TO ('2026-05-12 05:30:00+05:30')"
    ) == (datetime(2026, 5, 11, tzinfo=tz), datetime(2026, 5, 12, tzinfo=tz))
    assert partition_span("FOR VALUES FROM ('2026-05-11') TO ('2026-05-12')") == (
        datetime(2026, 5, 11, tzinfo=tz),
        datetime(2026, 5, 12, tzinfo=tz),
    )
    assert partition_span("FOR VALUES FROM (MINVALUE) TO ('2026-05-12 00:00:00+00')") == (
        None,
        datetime(2026, 5, 12, tzinfo=tz),
    )
    assert partition_span("FOR VALUES FROM ('2026-05-11 00:00:00+00') TO (MAXVALUE)")[1] is None
    assert partition_span("DEFAULT") == (None, None)
    assert partition_span("FOR VALUES IN ('a')") == (None, None)


async def test_dry_run_lists_exactly_what_a_run_removes_and_changes_nothing(
    pool: asyncpg.Pool, clock: FakeClock, scratch: Scratch
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            f"INSERT INTO {scratch.schema}.queue VALUES (1, 'evt_33_1', $1)",
            clock.now() - 33 * DAY,
        )
        before = await partitions(conn, scratch)
        dry = await apply_retention(
            conn, clock.now(), 30, dry_run=True, history=scratch.history, trimmed=()
        )
        assert await partitions(conn, scratch) == before
        real = await apply_retention(conn, clock.now(), 30, history=scratch.history, trimmed=())
    assert dry.dry_run and not real.dry_run
    assert dry.removed == real.removed
    assert dry.kept == real.kept and len(dry.kept) == 1


async def test_one_process_at_a_time_the_others_skip(
    pool: asyncpg.Pool, clock: FakeClock, scratch: Scratch
) -> None:
    async with pool.acquire() as holder, pool.acquire() as conn:
        async with holder.transaction():
            assert await holder.fetchval(q.TRY_RETENTION_LOCK) is True
            skipped = await apply_retention(
                conn, clock.now(), 30, history=scratch.history, trimmed=()
            )
            assert skipped.busy and not skipped.removed
            assert len(await partitions(conn, scratch)) == 42
        done = await apply_retention(conn, clock.now(), 30, history=scratch.history, trimmed=())
    assert not done.busy and len(done.removed) == 20


async def test_a_replay_in_progress_is_waited_for_and_its_event_kept(
    pool: asyncpg.Pool, clock: FakeClock, scratch: Scratch
) -> None:
    """A replay takes the requeue lock shared; retention's check-and-drop waits for it, then
    sees the re-queued delivery and keeps its event."""
    old = clock.now() - 32 * DAY
    async with pool.acquire() as replay, pool.acquire() as conn:
        tx = replay.transaction()
        await tx.start()
        await replay.execute(q.LOCK_REQUEUE_SHARED)
        await replay.execute(f"INSERT INTO {scratch.schema}.queue VALUES (7, 'evt_32_1', $1)", old)
        run = asyncio.create_task(
            apply_retention(conn, clock.now(), 30, history=scratch.history[:1], trimmed=())
        )
        async with asyncio.timeout(5):
            while not await replay.fetchval(  # noqa: ASYNC110 - waiting on another session
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ):
                await asyncio.sleep(0.01)
        await tx.commit()
        report = await run
    assert [k.partition for k in report.kept] == [f"{scratch.schema}.events_p{old:%Y%m%d}"]
    assert len(report.removed) == 9


async def test_mailing_state_and_idempotency_records_are_trimmed_in_batches(
    pool: asyncpg.Pool, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mailings silent for longer than the retention and keys older than 24 h go, spread over
    many pages trimmed a few at a time; the rest stays."""
    monkeypatch.setattr(retention, "PAGES_PER_BATCH", 3)
    now = clock.now()
    before = removed_total("mailings")
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tenants VALUES ('t', 'T', $1)", now)
        await conn.execute(
            """INSERT INTO mailings (tenant_id, environment, mailing_id, status, last_event_id,
                                     updated_at)
               SELECT 't', 'sandbox', 'ml_' || g, 'created', 'evt_' || g,
                      $1::timestamptz - (CASE WHEN g % 3 = 0 THEN 31 ELSE 29 END) * interval '1 day'
               FROM generate_series(1, 3000) g""",
            now,
        )
        await conn.execute(
            """INSERT INTO idempotency_keys
               SELECT 'platform', 'k' || g, '\\x00', 200, '{}',
                      $1::timestamptz - (CASE WHEN g % 2 = 0 THEN 25 ELSE 23 END) * interval '1h'
               FROM generate_series(1, 1000) g""",
            now,
        )
        pages = await conn.fetchval(q.TABLE_PAGES, "mailings")
        assert pages > 3 * 4, "enough pages for several batches"
        dry = await apply_retention(conn, now, 30, dry_run=True, history=())
        report = await apply_retention(conn, now, 30, history=())
        mailings_left = await conn.fetchval("SELECT count(*) FROM mailings")
        oldest = await conn.fetchval("SELECT min(updated_at) FROM mailings")
        keys_left = await conn.fetchval("SELECT count(*) FROM idempotency_keys")
    removed = {r.table: r.rows for r in report.removed}
    assert removed == {"mailings": 1000, "idempotency_keys": 500}
    assert {r.table: r.rows for r in dry.removed} == removed
    assert mailings_left == 2000 and oldest == now - 29 * DAY
    assert keys_left == 500
    assert removed_total("mailings") - before == 1000


async def test_gauges_show_what_is_kept(
    pool: asyncpg.Pool, clock: FakeClock, scratch: Scratch
) -> None:
    events = f"{scratch.schema}.events"
    async with pool.acquire() as conn:
        await apply_retention(conn, clock.now(), 30, history=scratch.history, trimmed=())
        await retention.refresh_retained_gauges(conn, clock.now(), scratch.history)
        size = await conn.fetchval(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            f" WHERE inhparent = '{events}'::regclass"
        )
    kept_bytes = REGISTRY.get_sample_value("webhook_retained_bytes", {"table": events})
    days = REGISTRY.get_sample_value("webhook_retained_days", {"table": events})
    assert kept_bytes == size > 0
    assert days == pytest.approx(30 + 8 / 24), "from the oldest kept day's midnight to now"
    mailings = REGISTRY.get_sample_value("webhook_retained_bytes", {"table": "mailings"})
    assert mailings is not None and mailings > 0


@pytest.mark.parametrize("query", [q.TRIM_MAILINGS, q.TRIM_IDEMPOTENCY_KEYS])
async def test_a_trim_batch_reads_only_its_own_pages(pool: asyncpg.Pool, query: str) -> None:
    """A TID range scan: each batch's work is bounded by its page range, whatever the size."""
    async with pool.acquire() as conn:
        plan = await conn.fetch(
            "EXPLAIN " + query.replace("$1", "0").replace("$2", "1024").replace("$3", "now()")
        )
    text = "\n".join(r[0] for r in plan)
    assert "Tid Range Scan" in text, text


async def test_a_dead_letter_whose_event_was_removed_is_not_requeued(
    pool: asyncpg.Pool, clock: FakeClock, world: World, make_tenant: Any, receiver: Any
) -> None:
    """Outcomes are kept by the day they ended, events by the day they were accepted: for a
    while a dead letter outlives its event. Replaying it then re-queues nothing (there is no
    body left to send) rather than a delivery no worker could ever send."""
    tenant = await make_tenant()
    receiver.script("/down", 500)
    await world.endpoint(tenant, "/down")
    clock.set(datetime(2026, 5, 11, 23, 59, tzinfo=UTC))
    await world.emit(tenant, "ml_1", "created")
    await world.drain(max_age_seconds=120)
    clock.set(datetime(2026, 5, 12, 0, 5, tzinfo=UTC))
    await world.drain(max_age_seconds=120)  # dead: its outcome ends on the 12th
    where = DeadLetterFilter(tenant_id=tenant.tenant_id)
    async with pool.acquire() as conn:
        assert (await count_dead_letters(conn, where))[0] == 1
        clock.set(datetime(2026, 6, 11, 0, 30, tzinfo=UTC))
        report = await apply_retention(conn, clock.now(), 30)
        gone = {r.partition for r in report.removed}
        assert "events_p20260511" in gone and "delivery_outcomes_p20260512" not in gone
        assert await replay_dead_letters(conn, where, clock.now()) == 0
        assert await conn.fetchval("SELECT count(*) FROM delivery_queue") == 0


async def test_a_reader_of_the_parent_is_never_blocked_and_an_interrupted_detach_is_finished(
    pool: asyncpg.Pool, clock: FakeClock, scratch: Scratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition goes by DETACH ... CONCURRENTLY: while a transaction that read the parent is
    open, new reads of the parent go on (nothing queues behind the removal); the detach gives
    up at its lock timeout and leaves the partition pending detach, out of every new query;
    the next run, once the reader is gone, finishes it and drops the table."""
    monkeypatch.setattr(retention, "LOCK_TIMEOUT_MS", 200)
    events = f"{scratch.schema}.events"
    oldest = f"{scratch.schema}.events_p20260401"
    async with pool.acquire() as reader, pool.acquire() as conn, pool.acquire() as other:
        tx = reader.transaction()
        await tx.start()
        await reader.fetchval(f"SELECT count(*) FROM {events}")  # holds its lock on the parent
        run = asyncio.create_task(
            apply_retention(conn, clock.now(), 30, history=scratch.history[:1], trimmed=())
        )
        async with asyncio.timeout(5):
            while not run.done():  # a new reader meanwhile is never blocked
                await other.fetchval(f"SELECT count(*) FROM {events}")
                await asyncio.sleep(0.01)
        first = await run
        assert not first.removed
        assert {k.reason for k in first.kept} == {"in use; the next run retries"}
        pending = await conn.fetchval(
            "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass($1)", oldest
        )
        assert pending is True, "left pending detach"
        assert await other.fetchval(f"SELECT count(*) FROM {events}") == 40 * 10, (
            "a new query no longer sees the partition being detached"
        )
        await tx.commit()
        second = await apply_retention(
            conn, clock.now(), 30, history=scratch.history[:1], trimmed=()
        )
        assert await conn.fetchval("SELECT to_regclass($1)", oldest) is None
    assert [r.partition for r in second.removed][:1] == [oldest]
    assert len(second.removed) == 10 and not second.kept
