"""Soak: weeks of a steady stream with retention on, through an injected clock.

`python -m tests.perf --soak` runs two parts on an embedded PostgreSQL of its own:

1. **Days.** A fake clock walks through `--soak-days` (40) simulated days. Every quarter day the
   platform reports a steady stream of transitions (in-process, through the outbox), a worker
   delivers everything due to a real receiver, and the worker's maintenance round runs
   (partitions ahead, retention). Once a simulated day the database is vacuumed, as autovacuum
   would (its timer runs on the wall clock, which barely moves here). The database size is
   recorded every day: it must level off once retention starts removing days (day 40 at most
   1.2 x day 31). Along the way one delivery is dead-lettered on day 2, replayed on day 32 and
   still failing when its event's day expires on day 33: retention must keep that day until the
   delivery succeeds, byte for byte.
2. **History.** `--soak-history-rows` (10,000,000) deliveries of history (each with its
   attempt, one event per 3) are written by SQL over 31 days, the oldest day, past the
   retention, holding `--soak-partition-rows` (1,000,000) of them. The claim is timed with that
   history and, in turns with it, on a second database with the same queue and no history;
   then retention removes the oldest day while claims run, and both its duration and the
   claims' p99 during it are reported.

`tests/integration/test_soak.py` runs part 1 small (a few seconds) in the test suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from dispatcher import partitions, sealing
from dispatcher.clock import FakeClock
from dispatcher.db import queries as q
from dispatcher.db.embedded import embedded_postgres
from dispatcher.db.migrate import migrate
from dispatcher.db.pool import create_pool
from dispatcher.events import Transition, record_transitions
from dispatcher.maintenance import maintain
from dispatcher.models import Environment, Principal
from dispatcher.policy import RetryPolicy
from dispatcher.queue import QueueLimits, claim
from dispatcher.retention import apply_retention
from dispatcher.sender import delivery_session
from dispatcher.store import deliveries as delivery_store
from dispatcher.store import endpoints as endpoint_store
from dispatcher.store import tenants
from dispatcher.transitions import MailingStatus
from dispatcher.worker import Worker, WorkerConfig
from tests.deadlock_scan import find_deadlocks

DAY = timedelta(days=1)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
START = datetime(2026, 1, 1, tzinfo=UTC)
LATE_TYPE = "mailing.failed"


# ---- a receiver that only counts ------------------------------------------------------------


@dataclass
class CountingReceiver:
    """Answers 200 (or what `failing` says for a path) and keeps counts, not bodies: weeks of
    deliveries must not fill the memory."""

    failing: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    bodies: dict[str, list[bytes]] = field(default_factory=dict)  # only of `kept` paths
    kept: set[str] = field(default_factory=set)
    port: int = 0

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        if path in self.failing:
            return web.Response(status=500)
        self.counts[path] = self.counts.get(path, 0) + 1
        if path in self.kept:
            self.bodies.setdefault(path, []).append(body)
        return web.Response(status=200)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CountingReceiver]:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield self
        finally:
            await runner.cleanup()


# ---- part 1: simulated days -------------------------------------------------------------------


@dataclass(frozen=True)
class DaysShape:
    days: int = 40
    events_per_day: int = 1000
    ticks_per_day: int = 4
    retention_days: int = 30
    # vacuum everything once a day (catalogs too), or only the tables updated in place (quicker)
    vacuum_database: bool = True


# the tables with updates and deletes; history partitions are only appended to
UPDATED_IN_PLACE = ("delivery_queue", "endpoint_state", "mailings", "workers", "endpoints")


@dataclass
class DayFigures:
    day: int
    database_bytes: int
    tables_bytes: int
    history_partitions: int
    delivered: int


@dataclass
class DaysRun:
    figures: list[DayFigures] = field(default_factory=list)
    # partitions retention left in place because a queued delivery needed them
    kept_for_pending: set[str] = field(default_factory=set)
    removed_partitions: int = 0
    late_event_id: str = ""
    late_event_body: bytes = b""
    late_bodies: list[bytes] = field(default_factory=list)
    late_event_partition_gone: bool = False
    seconds: dict[str, float] = field(default_factory=dict)  # wall time by phase

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self.seconds[phase] = self.seconds.get(phase, 0.0) + spent

    def size(self, day: int, what: str = "database_bytes") -> int:
        value: int = getattr(self.figures[day - 1], what)
        return value


TABLE_BYTES = """
SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')
"""
HISTORY_PARTITION_COUNT = """
SELECT count(*) FROM pg_inherits WHERE inhparent = ANY(
    SELECT to_regclass(t) FROM unnest($1::text[]) t)
"""


class Days:
    """The world of part 1: a tenant, healthy endpoints, one that fails, a worker, a clock."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        session: aiohttp.ClientSession,
        receiver: CountingReceiver,
        shape: DaysShape,
    ) -> None:
        self.pool = pool
        self.session = session
        self.receiver = receiver
        self.shape = shape
        self.clock = FakeClock(START)
        self.tenant = ""
        self.late_endpoint = ""
        self.seq = 0
        self.previous: list[str] = []
        self.run = DaysRun()

    async def setup(self, endpoints: int = 3) -> None:
        now = self.clock.now()
        async with self.pool.acquire() as conn:
            await partitions.ensure_partitions(conn, now)
            tenant, _ = await tenants.create_tenant(conn, "soak", now)
            owner = Principal(tenant.id, Environment.SANDBOX, "soak")  # type: ignore[arg-type]
            for k in range(endpoints):
                await endpoint_store.create_endpoint(
                    conn,
                    owner,
                    url=self.receiver.url(f"/s{k}"),
                    event_types=["*"],
                    secret=SECRET,
                    now=now,
                )
            late = await endpoint_store.create_endpoint(
                conn,
                owner,
                url=self.receiver.url("/late"),
                event_types=[LATE_TYPE],
                secret=SECRET,
                now=now,
            )
        self.tenant = tenant.id
        self.late_endpoint = late.id
        self.receiver.kept.add("/late")

    async def report(self, items: list[Transition]) -> list[str]:
        async with self.pool.acquire() as conn, conn.transaction():
            results = await record_transitions(conn, items, self.clock.now())
        return [str(r.event_id) for r in results if r.event_id is not None]

    async def stream(self, count: int) -> None:
        """Half new mailings, half the previous tick's mailings moving on: a steady stream."""
        fresh = []
        for _ in range(max(1, count // 2)):
            self.seq += 1
            fresh.append(f"ml_{self.seq}")
        items = [Transition(self.tenant, "sandbox", m, MailingStatus.CREATED) for m in fresh]
        items += [
            Transition(self.tenant, "sandbox", m, MailingStatus.PRINTED) for m in self.previous
        ]
        self.previous = fresh
        await self.report(items)

    async def drain(self) -> int:
        config = WorkerConfig(allow_private_targets=True, policy=RetryPolicy())
        worker = Worker(self.pool, self.session, config, clock=self.clock)
        return await worker.drain()

    async def maintain(self) -> None:
        report = await maintain(self.pool, self.clock.now(), self.shape.retention_days)
        self.run.removed_partitions += sum(1 for r in report.removed if r.partition)
        self.run.kept_for_pending |= {k.partition for k in report.kept}

    async def day_end(self, day: int, delivered: int) -> None:
        async with self.pool.acquire() as conn:
            if self.shape.vacuum_database:
                await conn.execute("VACUUM (ANALYZE)")
            else:
                await conn.execute(f"VACUUM (ANALYZE) {', '.join(UPDATED_IN_PLACE)}")
            self.run.figures.append(
                DayFigures(
                    day,
                    await conn.fetchval("SELECT pg_database_size(current_database())"),
                    await conn.fetchval(TABLE_BYTES),
                    await conn.fetchval(
                        HISTORY_PARTITION_COUNT, list(partitions.partitioned_tables())
                    ),
                    delivered,
                )
            )

    async def late_event(self) -> None:
        """Day 2: one event only the failing endpoint wants (besides the healthy ones)."""
        self.seq += 1
        (event_id,) = await self.report(
            [Transition(self.tenant, "sandbox", f"ml_late_{self.seq}", MailingStatus.FAILED)]
        )
        self.run.late_event_id = event_id
        self.receiver.failing.add("/late")
        async with self.pool.acquire() as conn:
            self.run.late_event_body = bytes(
                await conn.fetchval("SELECT body FROM events WHERE id = $1", event_id)
            )

    async def replay_late(self) -> int:
        async with self.pool.acquire() as conn:
            return await delivery_store.replay_dead_letters(
                conn,
                delivery_store.DeadLetterFilter(endpoint_id=self.late_endpoint),
                self.clock.now(),
            )

    async def late_partition_exists(self) -> bool:
        name = partitions.partition_name("events", (START + DAY).date())  # day 2
        async with self.pool.acquire() as conn:
            found = await conn.fetchval("SELECT to_regclass($1)", name)
        return found is not None

    async def walk(self) -> DaysRun:
        shape = self.shape
        per_tick = max(2, shape.events_per_day // shape.ticks_per_day)
        tick = DAY / shape.ticks_per_day
        for day in range(1, shape.days + 1):
            delivered = 0
            for t in range(shape.ticks_per_day):
                if day == 2 and t == 0:
                    await self.late_event()
                if day == 32 and t == shape.ticks_per_day - 1:
                    assert await self.replay_late() == 1, "the day-2 dead letter is replayable"
                with self.run.timed("ingest"):
                    await self.stream(per_tick)
                with self.run.timed("deliver"):
                    delivered += await self.drain()
                with self.run.timed("maintenance"):
                    await self.maintain()
                extra = 0.0
                if day == 33 and t == 0:
                    # the event's day ended a retention ago: only the queued replay kept it
                    assert await self.late_partition_exists()
                    self.receiver.failing.discard("/late")
                    extra = 3600.0  # past the replay's next backoff
                    self.clock.advance(extra)
                    delivered += await self.drain()
                    await self.maintain()
                self.clock.advance(tick.total_seconds() - extra)
            with self.run.timed("vacuum and sizes"):
                await self.day_end(day, delivered)
        self.run.late_bodies = self.receiver.bodies.get("/late", [])
        self.run.late_event_partition_gone = not await self.late_partition_exists()
        return self.run


async def walk_days(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, shape: DaysShape
) -> DaysRun:
    async with CountingReceiver().running() as receiver:
        world = Days(pool, session, receiver, shape)
        await world.setup()
        return await world.walk()


# ---- part 2: history, claim latency, removal of a big day ------------------------------------


@dataclass(frozen=True)
class HistoryShape:
    history_rows: int = 10_000_000
    partition_rows: int = 1_000_000
    days: int = 30
    pending: int = 10_000
    endpoints: int = 1000
    retention_days: int = 30


EVENTS_OF_DAY = """
INSERT INTO events (id, tenant_id, environment, event_type, mailing_id, occurred_at,
                    created_at, body)
SELECT 'evt_h' || $2 || '_' || g, $1, 'sandbox', 'mailing.created', 'ml_h' || $2 || '_' || g,
       t, t, $5
FROM generate_series(1, $4::int) g,
     LATERAL (SELECT $3::timestamptz + (g - 1) * (interval '86399 seconds' / $4)) AS s (t)
"""
OUTCOMES_OF_DAY = """
INSERT INTO delivery_outcomes (id, generation, status, attempts, endpoint_id, event_id,
                               created_at, completed_at, last_status_code, last_outcome)
SELECT $4::bigint + g, 0, 'succeeded', 1, 'ep_b' || (g % $5::int + 1),
       'evt_h' || $1 || '_' || e, t, t + interval '1 second', 200, 'success'
FROM generate_series(1, $3::int) g,
     LATERAL (SELECT (g - 1) / 3 + 1) AS k (e),
     LATERAL (SELECT $2::timestamptz
                     + (e - 1) * (interval '86398 seconds' / GREATEST($3::int / 3, 1))) AS s (t)
"""
ATTEMPTS_OF_DAY = """
INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, outcome, status_code)
SELECT $3::bigint + g, 1, $1::timestamptz + (g - 1) * (interval '86398 seconds' / $2), 12.5,
       'success', 200
FROM generate_series(1, $2::int) g
"""


@dataclass
class ClaimTimer:
    pool: asyncpg.Pool
    worker_id: int
    limits: QueueLimits = field(default_factory=lambda: QueueLimits(endpoint_concurrency=16))
    samples: list[tuple[float, float]] = field(default_factory=list)  # (start, ms)

    async def once(self, conn: asyncpg.Connection) -> None:
        tr = conn.transaction()
        await tr.start()
        start = time.perf_counter()
        claimed = await claim(conn, datetime.now(UTC), 64, self.limits, worker_id=self.worker_id)
        self.samples.append((start, (time.perf_counter() - start) * 1000))
        await tr.rollback()
        if len(claimed) != 64:
            raise RuntimeError(f"a claim found {len(claimed)} deliveries, not 64")

    async def series(self, count: int) -> list[float]:
        self.samples.clear()
        async with self.pool.acquire() as conn:
            await conn.execute("VACUUM (ANALYZE) delivery_queue, endpoint_state")
            for _ in range(count):
                await self.once(conn)
        return [ms for _, ms in self.samples]

    async def loop(self, stop: asyncio.Event) -> None:
        async with self.pool.acquire() as conn:
            while not stop.is_set():
                await self.once(conn)
                await asyncio.sleep(0)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


async def prefill_queue(conn: asyncpg.Connection, shape: HistoryShape, now: datetime) -> str:
    """`shape.pending` due deliveries over `shape.endpoints` endpoints, with their events."""
    tenant, _ = await tenants.create_tenant(conn, "history", now)
    await conn.execute(
        """INSERT INTO endpoints (id, tenant_id, environment, url, event_types, created_at,
                                  updated_at)
           SELECT 'ep_b' || g, $1, 'sandbox', 'http://127.0.0.1:9/b', ARRAY['*'], $2, $2
           FROM generate_series(1, $3::int) g""",
        tenant.id,
        now,
        shape.endpoints,
    )
    keyring = sealing.current()  # secrets are stored sealed, opened after the claim
    await conn.executemany(
        "INSERT INTO endpoint_secrets (endpoint_id, secret, created_at) VALUES ($1, $2, $3)",
        [
            (f"ep_b{g}", keyring.seal(SECRET, f"endpoint_secret:ep_b{g}"), now)
            for g in range(1, shape.endpoints + 1)
        ],
    )
    created = now - timedelta(minutes=1)
    await conn.execute(
        EVENTS_OF_DAY, tenant.id, "q", created, shape.pending // 10, b'{"soak":true}'
    )
    await conn.execute(
        """INSERT INTO delivery_queue (endpoint_id, tenant_id, event_id, event_created_at,
                                       created_at, next_attempt_at, age_origin)
           SELECT 'ep_b' || e, $1, 'evt_hq_' || g, ev.created_at, $2, $2, $2
           FROM generate_series(1, $3::int) g
           JOIN events ev ON ev.id = 'evt_hq_' || g
           CROSS JOIN generate_series(1, 10) k,
           LATERAL (SELECT (g * 10 + k) % $4::int + 1) AS x (e)""",
        tenant.id,
        created,
        shape.pending // 10,
        shape.endpoints,
    )
    return tenant.id


async def fill_history(
    conn: asyncpg.Connection, tenant: str, shape: HistoryShape, now: datetime
) -> datetime:
    """The history by SQL: `days` full days, and before them one day past the retention with
    `partition_rows` deliveries. Returns the start of that oldest day."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    per_day = (shape.history_rows - shape.partition_rows) // shape.days
    plan = [(today - k * DAY, per_day) for k in range(1, shape.days + 1)]
    oldest = today - (shape.days + 1) * DAY
    plan.append((oldest, shape.partition_rows))
    next_id = 10_000_000_000
    body = b'{"data":{"mailing_id":"ml_h","status":"created"},"event_type":"mailing.created"}'
    for start, rows in plan:
        for table in partitions.partitioned_tables():
            await conn.fetchval(q.ENSURE_PARTITION, table, start.date())
        label = f"{start:%Y%m%d}"
        await conn.execute(EVENTS_OF_DAY, tenant, label, start, max(1, rows // 3), body)
        await conn.execute(OUTCOMES_OF_DAY, label, start, rows, next_id, shape.endpoints)
        await conn.execute(ATTEMPTS_OF_DAY, start, rows, next_id)
        next_id += rows
    await conn.execute("VACUUM (ANALYZE)")
    return oldest


async def _queue_world(
    url: str, database: str, shape: HistoryShape, now: datetime
) -> tuple[asyncpg.Pool, str, ClaimTimer]:
    """A database with the same pending queue as the other one, and a timer of its claims."""
    pool = await asyncpg.create_pool(url, database=database, min_size=2, max_size=4)
    async with pool.acquire() as conn:
        await partitions.ensure_partitions(conn, now)
        tenant = await prefill_queue(conn, shape, now)
        worker_id = await conn.fetchval(
            "INSERT INTO workers (host, pid, started_at, heartbeat_at)"
            " VALUES ('soak', 0, $1, $1) RETURNING id",
            now,
        )
    return pool, tenant, ClaimTimer(pool, worker_id)


async def interleaved(a: ClaimTimer, b: ClaimTimer, rounds: int) -> tuple[list[float], list[float]]:
    """Claims on two databases in turn (ABBA), so the machine's load falls on both alike."""
    async with a.pool.acquire() as ca, b.pool.acquire() as cb:
        for conn in (ca, cb):
            await conn.execute("VACUUM (ANALYZE) delivery_queue, endpoint_state")
        a.samples.clear()
        b.samples.clear()
        for k in range(rounds):
            first, second = ((a, ca), (b, cb)) if k % 2 == 0 else ((b, cb), (a, ca))
            await first[0].once(first[1])
            await second[0].once(second[1])
    return [ms for _, ms in a.samples], [ms for _, ms in b.samples]


async def history(
    url: str, shape: HistoryShape, log: Any, databases: tuple[str, str]
) -> dict[str, Any]:
    """`databases`: the one that gets the history, and one that keeps none (the baseline)."""
    now = datetime.now(UTC)
    pool, tenant, timer = await _queue_world(url, databases[0], shape, now)
    empty_pool, _, baseline = await _queue_world(url, databases[1], shape, now)
    try:
        started = time.perf_counter()
        async with pool.acquire() as conn:
            oldest = await fill_history(conn, tenant, shape, now)
            size = await conn.fetchval("SELECT pg_database_size(current_database())")
        fill_seconds = time.perf_counter() - started
        log(f"history written in {fill_seconds:.0f} s ({size / 2**30:.1f} GiB)")
        full, none = await interleaved(timer, baseline, 400)
        log(
            f"claim: median {statistics.median(full):.2f} ms with the history,"
            f" {statistics.median(none):.2f} ms without (interleaved)"
        )

        stop = asyncio.Event()
        timer.samples.clear()
        claims = asyncio.create_task(timer.loop(stop))
        await asyncio.sleep(3)
        async with pool.acquire() as conn:
            begin = time.perf_counter()
            report = await apply_retention(conn, now, shape.retention_days)
            end = time.perf_counter()
        await asyncio.sleep(0.5)
        stop.set()
        await claims
        normal = [ms for t, ms in timer.samples if t + ms / 1000 < begin]
        during = [ms for t, ms in timer.samples if t < end and t + ms / 1000 > begin]
        gone = [r for r in report.removed if r.partition is not None]
        assert {r.start for r in gone} == {oldest}, f"removed {gone}"
        return {
            "history_rows": shape.history_rows,
            "history_bytes": size,
            "history_fill_seconds": fill_seconds,
            "claim_ms_no_history": statistics.median(none),
            "claim_ms_with_history": statistics.median(full),
            "claim_ratio": statistics.median(full) / statistics.median(none),
            "removal_seconds": end - begin,
            "removed": [{"partition": r.partition, "rows": r.rows, "bytes": r.bytes} for r in gone],
            "claim_p99_ms_normal": p99(normal),
            "claim_p99_ms_during_removal": p99(during) if during else 0.0,
            "claims_during_removal": len(during),
            "claim_p99_ratio": (p99(during) / p99(normal)) if during else 0.0,
        }
    finally:
        await pool.close()
        await empty_pool.close()


# ---- the command ------------------------------------------------------------------------------


def _log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


async def _migrated(url: str, database: str | None = None) -> None:
    conn = await asyncpg.connect(url, database=database)
    try:
        await migrate(conn)
    finally:
        await conn.close()


def _server_deadlocks(tmp: Path) -> list[str]:
    """Deadlocks in the embedded server's log (pgserver writes it to pgdata/log)."""
    return find_deadlocks(p for p in tmp.rglob("log") if p.is_file())


def _figures(days: DaysRun | None, hist: dict[str, Any] | None) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if days is not None:
        last = days.figures[-1]
        d31, d_last = days.size(31), last.database_bytes
        figures[f"database size, day {last.day} / day 31"] = {
            "value": d_last / d31,
            "unit": "x",
            "detail": f"{d31 / 2**20:.1f} MiB -> {d_last / 2**20:.1f} MiB",
            "target": "<= 1.2",
        }
        figures["replayed delivery of an expired day"] = {
            "value": float(days.late_bodies == [days.late_event_body]),
            "unit": "delivered",
            "detail": f"its events partition kept while pending: "
            f"{sorted(days.kept_for_pending)}; removed after: {days.late_event_partition_gone}",
            "target": "1",
        }
    if hist is not None:
        figures["claim latency, history / none"] = {
            "value": hist["claim_ratio"],
            "unit": "x",
            "detail": f"{hist['claim_ms_no_history']:.2f} ms -> "
            f"{hist['claim_ms_with_history']:.2f} ms with {hist['history_rows']:,} deliveries",
            "target": "<= 1.2",
        }
        figures["removing the expired day"] = {
            "value": hist["removal_seconds"],
            "unit": "s",
            "detail": ", ".join(f"{r['partition']} {r['rows']:,} rows" for r in hist["removed"]),
            "target": "< 1",
        }
        figures["claim p99 during removal / normal"] = {
            "value": hist["claim_p99_ratio"],
            "unit": "x",
            "detail": f"{hist['claim_p99_ms_normal']:.2f} ms -> "
            f"{hist['claim_p99_ms_during_removal']:.2f} ms "
            f"({hist['claims_during_removal']} claims during it)",
            "target": "<= 2",
        }
    return figures


def soak_table(figures: dict[str, Any]) -> str:
    rows = ["| soak figure | value | detail | target |", "|---|---|---|---|"]
    for name, item in figures.items():
        rows.append(
            f"| {name} | {item['value']:.2f} {item['unit']} | {item['detail']} | {item['target']} |"
        )
    return "\n".join(rows)


async def run_soak(args: Any) -> dict[str, Any]:
    """Part 1 unless --soak-days 0, part 2 unless --soak-history-rows 0."""
    shape = DaysShape(days=args.soak_days, events_per_day=args.soak_events_per_day)
    if 0 < shape.days < 31:
        raise SystemExit("--soak-days must be 0 or at least 31 (sizes are compared at day 31)")
    hist_shape = HistoryShape(
        history_rows=args.soak_history_rows, partition_rows=args.soak_partition_rows
    )
    days: DaysRun | None = None
    hist: dict[str, Any] | None = None
    with (
        tempfile.TemporaryDirectory(prefix="dispatcher-soak-") as tmp,
        embedded_postgres(Path(tmp)) as url,
    ):
        if shape.days:
            await _migrated(url)
            _log(f"part 1: {shape.days} simulated days, {shape.events_per_day} transitions a day")
            pool = await create_pool(url, min_size=2, max_size=8)
            try:
                async with delivery_session(allow_private=True, max_connections=80) as session:
                    days = await walk_days(pool, session, shape)
            finally:
                await pool.close()
            for f in days.figures:
                _log(
                    f"day {f.day}: {f.database_bytes / 2**20:.1f} MiB,"
                    f" {f.history_partitions} partitions, {f.delivered} delivered"
                )
        if hist_shape.history_rows:
            databases = ("soak_history", "soak_empty")
            admin = await asyncpg.connect(url)
            try:
                for name in databases:
                    await admin.execute(f"CREATE DATABASE {name}")
            finally:
                await admin.close()
            for name in databases:
                await _migrated(url, name)
            _log(f"part 2: {hist_shape.history_rows:,} deliveries of history")
            hist = await history(url, hist_shape, _log, databases)
        deadlocks = await asyncio.to_thread(_server_deadlocks, Path(tmp))
    if deadlocks:
        raise SystemExit(f"soak failed: {len(deadlocks)} deadlock lines: {deadlocks[:5]}")
    return {
        "machine": {"cores": os.cpu_count()},
        "soak": {"days": shape.days, "events_per_day": shape.events_per_day},
        "figures": _figures(days, hist),
        "days": [f.__dict__ for f in days.figures] if days else [],
        "day_seconds": days.seconds if days else {},
        "history": hist,
    }
