"""The soak benchmark's simulated days, small: 40 days of a steady stream with retention on.

`python -m tests.perf --soak` runs the same walk at full size (and the 10-million-row part);
here it checks, in a few seconds, what a user of a long-running service would notice: the
database stops growing once retention starts, and a delivery still pending is never robbed of
its event, even a replay of one older than the retention.
"""

from __future__ import annotations

import aiohttp
import asyncpg

from tests.perf.soak import DaysShape, walk_days


async def test_forty_days_level_off_and_keep_what_is_pending(
    pool: asyncpg.Pool, http_session: aiohttp.ClientSession
) -> None:
    run = await walk_days(
        pool,
        http_session,
        DaysShape(days=40, events_per_day=24, ticks_per_day=2, vacuum_database=False),
    )
    day31, day40 = run.figures[30], run.figures[39]
    assert day40.tables_bytes <= 1.2 * day31.tables_bytes, [f.tables_bytes for f in run.figures]
    # 30 days kept, plus today and the days made ahead: the same count every day after day 31
    assert len({f.history_partitions for f in run.figures[30:]}) == 1
    assert run.figures[10].history_partitions < day31.history_partitions
    assert run.removed_partitions >= 3 * 9, "a day of each history table goes every day"
    assert all(f.delivered > 0 for f in run.figures), "the stream flowed every day"
    # the day-2 event, replayed on day 32 and still failing when its day expired on day 33:
    # kept while the delivery was pending, delivered byte for byte, removed afterwards
    assert any("events_p20260102" in p for p in run.kept_for_pending), run.kept_for_pending
    assert run.late_bodies == [run.late_event_body]
    assert run.late_event_partition_gone
