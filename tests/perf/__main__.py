"""Benchmark: `python -m tests.perf [--runs 3] [--events 5000] [--json out.json]`.

`python -m tests.perf --soak` runs the retention soak instead (tests/perf/soak.py): weeks of
simulated days at a steady stream, then 10 million rows of history.

Starts everything itself on this machine (embedded PostgreSQL, `dispatcher api` and
`dispatcher worker` processes, a receiver process) and prints one JSON object and a Markdown
table. Every figure is the median of `--runs` runs with its min-max range.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from dispatcher import sealing
from dispatcher.db.embedded import embedded_postgres
from dispatcher.db.migrate import migrate
from dispatcher.db.pool import create_pool
from dispatcher.models import Environment, Principal
from dispatcher.queue import QueueLimits, claim
from dispatcher.store import endpoints as endpoint_store
from dispatcher.store import tenants
from tests.deadlock_scan import find_deadlocks
from tests.perf import cpu, delivery_log, flow, minimal
from tests.queue_state import insert_events, queue_deliveries

TOKEN = "bench-platform-token-0123456789abcdef"
ENCRYPTION_KEY = "YmVuY2gtZW5jcnlwdGlvbi1rZXktMzItYnl0ZXMtMDA="
sealing.install(sealing.keyring_from(ENCRYPTION_KEY))
CONCURRENCY = 64
# latency runs measure from here on: the first second is a new worker's and a new endpoint's
# cold start (connections, prepared statements, the limiter's slow start), reported apart
WARM_UP_SECONDS = 1.0
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# Throughput runs let the worker hold as many requests in flight as the ceiling's client,
# whichever endpoint they go to. Latency and isolation runs keep the product defaults
# (an adaptive limit of up to 32 per endpoint, 128 per worker), which is what keeps a dead
# endpoint from taking every slot.
THROUGHPUT = {"endpoint_concurrency": CONCURRENCY}
SAMPLE_BODY = orjson.dumps(
    {
        "data": {"mailing_id": "ml_01JD3K7ZQ2W8R4T6Y1U3I5O7P9", "status": "created"},
        "event_id": "evt_01JD3K8Q6Z4X7V2N9M5B1C0A8E",
        "event_type": "mailing.created",
        "occurred_at": "2026-05-11T08:42:13Z",
    },
    option=orjson.OPT_SORT_KEYS,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        with log.open("ab") as sink:
            self.p = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT)

    def rss_peak_mb(self) -> float:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    async def stop(self, grace: float = 10) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            for _ in range(int(grace * 20)):
                if self.p.poll() is not None:
                    return
                await asyncio.sleep(0.05)
            self.p.kill()
            self.p.wait()


class Bench:
    def __init__(self, tmp: Path, url: str, runs: int, events: int) -> None:
        self.tmp = tmp
        self.url = url
        self.runs = runs
        self.events = events
        self.pool: asyncpg.Pool
        self.http: aiohttp.ClientSession
        self.api_port = free_port()
        self.recv_port = free_port()
        self.procs: list[Proc] = []
        self.tenants: dict[str, str] = {}
        self.seq = 0
        self.batch_sizes: dict[int, int] = {}  # batch number -> its transitions

    # ---- processes ------------------------------------------------------------------------

    def env(self, **extra: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
        env.update(
            DISPATCHER_DATABASE_URL=self.url,
            DISPATCHER_ENCRYPTION_KEY=ENCRYPTION_KEY,
            DISPATCHER_PLATFORM_TOKEN=TOKEN,
            DISPATCHER_ALLOW_PRIVATE_TARGETS="true",
            DISPATCHER_PORT=str(self.api_port),
            DISPATCHER_SHUTDOWN_GRACE_SECONDS="1",
            DISPATCHER_DB_POOL_MAX_SIZE="20",
            # the default worker: 128 slots, one tenant at most half of them (= CONCURRENCY)
        )
        env.update({f"DISPATCHER_{k.upper()}": str(v) for k, v in extra.items()})
        return env

    def spawn(self, *args: str, **extra: Any) -> Proc:
        proc = Proc(list(args), self.env(**extra), self.tmp / "processes.log")
        self.procs.append(proc)
        return proc

    def worker(self, **extra: Any) -> Proc:
        return self.spawn(sys.executable, "-m", "run.cli", "worker", **extra)

    async def until(self, check: Callable[[], Awaitable[bool]], limit: float = 120) -> None:
        async with asyncio.timeout(limit):
            while not await check():  # noqa: ASYNC110 - polling other processes
                await asyncio.sleep(0.02)

    async def listening_workers(self) -> int:
        n: int = await self.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
        )
        return n

    async def start_workers(self, count: int = 1, **extra: Any) -> list[Proc]:
        started = [self.worker(**extra) for _ in range(count)]

        async def ready() -> bool:
            return await self.listening_workers() >= count

        await self.until(ready, 60)
        return started

    async def setup(self) -> None:
        self.pool = await create_pool(self.url, min_size=2, max_size=8)
        async with self.pool.acquire() as conn:
            await migrate(conn)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        self.spawn(sys.executable, "-m", "tests.perf.receiver", "--port", str(self.recv_port))
        self.spawn(sys.executable, "-m", "run.cli", "api")

        async def up() -> bool:
            try:
                async with (
                    self.http.get(f"http://127.0.0.1:{self.api_port}/readyz") as r1,
                    self.http.get(self.recv("_stats")) as r2,
                ):
                    return r1.status == 200 and r2.status == 200
            except aiohttp.ClientError:
                return False

        await self.until(up, 60)
        for name, paths in {
            "sustained": ["s1", "s2", "s3"],
            "latency": ["l1"],
            "isolation": ["i1", "dead"],
            "ingest": [],
            **flow.TENANTS,
        }.items():
            self.tenants[name] = await self.tenant(name, paths)

    async def tenant(self, name: str, paths: list[str]) -> str:
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn:
            tenant, _ = await tenants.create_tenant(conn, name, now)
            owner = Principal(tenant.id, Environment.SANDBOX, "bench")  # type: ignore[arg-type]
            for path in paths:
                await endpoint_store.create_endpoint(
                    conn, owner, url=self.recv(path), event_types=["*"], secret=SECRET, now=now
                )
        return tenant.id

    def platform_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def recv(self, path: str) -> str:
        return f"http://127.0.0.1:{self.recv_port}/{path}"

    async def reset(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "TRUNCATE attempts, delivery_outcomes, delivery_queue, events, mailings,"
                " idempotency_keys, workers"
            )
            await conn.execute(
                "UPDATE endpoint_state SET in_flight = 0, consecutive_failures = 0,"
                " circuit_open_until = NULL, concurrency_limit = NULL, limit_threshold = NULL,"
                " latency_baseline = NULL, baseline_at = NULL, limit_decreased_at = NULL,"
                " latency_recent = NULL,"
                " rate_tat = NULL"
            )
            await conn.execute("VACUUM ANALYZE delivery_queue")
        async with self.http.post(self.recv("_reset")) as r:
            r.raise_for_status()

    async def stop_extra_processes(self) -> None:
        """Everything but the API and the receiver (workers, the reference pipeline)."""
        api_and_receiver = self.procs[:2]
        for p in self.procs[2:]:
            await p.stop(grace=3)
        self.procs = api_and_receiver

    async def stop_all_workers(self) -> None:
        await self.stop_extra_processes()

        async def gone() -> bool:
            return await self.listening_workers() == 0

        await self.until(gone, 30)

    # ---- load -----------------------------------------------------------------------------

    async def ingest_batch(
        self, tenant: str, count: int, status: str = "created", seq: int | None = None
    ) -> tuple[float, list[str]]:
        """`count` transitions to `status` in one request: new mailings, or those of batch
        `seq` again."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        self.batch_sizes[seq] = count
        items = [
            {
                "mailing_id": f"ml_{seq}_{i}",
                "tenant_id": tenant,
                "environment": "sandbox",
                "status": status,
            }
            for i in range(count)
        ]
        sent = time.time()
        async with self.http.post(
            f"http://127.0.0.1:{self.api_port}/internal/v1/transitions",
            data=orjson.dumps({"transitions": items}),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        ) as r:
            body = await r.json(loads=orjson.loads)
            if r.status != 200:
                raise RuntimeError(f"batch ingest failed: {r.status} {body}")
        return sent, [x["event_id"] for x in body["results"]]

    async def ingest(self, tenant: str, events: int, parallel: int = 2) -> None:
        remaining = list(range(0, events, 1000))

        async def lane() -> None:
            while remaining:
                start = remaining.pop()
                await self.ingest_batch(tenant, min(1000, events - start))

        await asyncio.gather(*(lane() for _ in range(parallel)))

    async def received(self) -> int:
        async with self.http.get(self.recv("_stats")) as r:
            counts: dict[str, int] = await r.json(loads=orjson.loads)
        return sum(v for k, v in counts.items() if k != "dead")

    async def arrivals(self) -> list[tuple[str, str, float]]:
        async with self.http.get(self.recv("_dump")) as r:
            data: list[tuple[str, str, float]] = await r.json(loads=orjson.loads)
        return data

    async def wait_received(self, expected: int, limit: float = 300) -> None:
        async def done() -> bool:
            return await self.received() >= expected

        await self.until(done, limit)

    # ---- scenarios ------------------------------------------------------------------------

    async def ceiling(self) -> float:
        body = SAMPLE_BODY
        total = self.events * 3
        queue = iter(range(total))
        await self.reset()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONCURRENCY + 16)
        ) as session:

            async def lane() -> None:
                for _ in queue:
                    async with session.post(
                        self.recv("c"),
                        data=body,
                        headers={"Content-Type": "application/json", "X-Event-Id": "evt_x"},
                    ) as r:
                        await r.read()

            start = time.perf_counter()
            await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
            return total / (time.perf_counter() - start)

    async def sustained(self) -> float:
        await self.reset()
        await self.start_workers(**THROUGHPUT)
        start = time.time()
        await self.ingest(self.tenants["sustained"], self.events)
        await self.wait_received(3 * self.events)
        last = max(t for _, _, t in await self.arrivals())
        await self.stop_all_workers()
        return 3 * self.events / (last - start)

    def cpu_snapshot(self) -> Counter[tuple[str, int]]:
        """CPU ticks of the receiver, the API, the workers and PostgreSQL's backends."""
        return cpu.snapshot(
            {
                "receiver": [self.procs[0].p.pid],
                "api": [self.procs[1].p.pid],
                "worker": [p.p.pid for p in self.procs[2:]],
            },
            cpu.postmaster(self.tmp),
        )

    async def dispatch_only(self, workers: int = 1) -> tuple[float, int, dict[str, float]]:
        """Deliveries/s, duplicates, and CPU microseconds per delivery by process."""
        await self.reset()
        await self.ingest(self.tenants["sustained"], self.events)
        before = self.cpu_snapshot()
        await self.start_workers(workers, **THROUGHPUT)
        await self.wait_received(3 * self.events)
        spent = cpu.per_item_us(before, self.cpu_snapshot(), 3 * self.events)
        await asyncio.sleep(0.5)
        got = await self.arrivals()
        await self.stop_all_workers()
        times = [t for _, _, t in got]
        duplicates = len(got) - len({(n, e) for n, e, _ in got})
        return 3 * self.events / (max(times) - min(times)), duplicates, spent

    async def latency(
        self,
        rate: int,
        tenant: str,
        seconds: float = 6,
        *,
        measured_from: float = WARM_UP_SECONDS,
        alongside: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> dict[str, float]:
        """Transitions at `rate`/s for `seconds`: latency of those sent from `measured_from`
        seconds on (by default after the first second: the worker was just started and the
        endpoint is new, a cold start reported apart as cold_*); `alongside` runs from the
        start of the load (a probe of the engine)."""
        await self.reset()
        await self.start_workers()
        ticks = int(seconds * 100)
        per_tick = max(1, rate // 100)
        sent_at: dict[str, float] = {}
        tasks = []
        t0 = time.perf_counter()
        wall0 = time.time()
        side = asyncio.create_task(alongside()) if alongside else None

        async def fire() -> None:
            sent, ids = await self.ingest_batch(tenant, per_tick)
            for event_id in ids:
                sent_at[event_id] = sent

        for k in range(ticks):
            delay = t0 + k / 100 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire()))
        await asyncio.gather(*tasks)
        if side is not None:
            await side
        await self.wait_received(len(sent_at), limit=120)
        got = await self.arrivals()
        await self.stop_all_workers()
        first: dict[str, float] = {}
        for name, event_id, t in got:
            if name != "dead" and event_id in sent_at:
                first[event_id] = min(t, first.get(event_id, t))
        counted = {e: sent_at[e] for e in first if sent_at[e] - wall0 >= measured_from}
        lat = [(first[e] - sent) * 1000 for e, sent in counted.items()]
        cold = [(first[e] - sent_at[e]) * 1000 for e in first if e not in counted]
        return {
            "p50_ms": quantile(lat, 0.5),
            "p99_ms": quantile(lat, 0.99),
            "max_ms": max(lat),
            **({"cold_p99_ms": quantile(cold, 0.99), "cold_max_ms": max(cold)} if cold else {}),
            **await self.latency_stages(counted, first),
        }

    async def latency_stages(
        self, sent_at: dict[str, float], received: dict[str, float]
    ) -> dict[str, float]:
        """Where the time went, per delivery that succeeded at its first attempt: the API
        (sent -> the event's acceptance time), the queue (acceptance -> the attempt's start)
        and the HTTP exchange (start -> the receiver has it); p50 and p99 of each."""
        rows = await self.pool.fetch(
            "SELECT o.event_id, extract(epoch FROM e.created_at)::float8 AS accepted,"
            " extract(epoch FROM a.started_at)::float8 AS started"
            " FROM delivery_outcomes o JOIN attempts a ON a.delivery_id = o.id AND a.attempt = 1"
            " JOIN events e ON e.id = o.event_id AND e.created_at = o.created_at"
            " WHERE o.attempts = 1 AND o.status = 'succeeded'"
        )
        stages: dict[str, list[float]] = {"api": [], "queue": [], "http": []}
        for r in rows:
            event_id = r["event_id"]
            if event_id not in received or event_id not in sent_at:
                continue
            stages["api"].append((r["accepted"] - sent_at[event_id]) * 1000)
            stages["queue"].append((r["started"] - r["accepted"]) * 1000)
            stages["http"].append((received[event_id] - r["started"]) * 1000)
        found: dict[str, float] = {}
        for name, values in stages.items():
            if values:
                found[f"{name}_p50_ms"] = quantile(values, 0.5)
                found[f"{name}_p99_ms"] = quantile(values, 0.99)
        return found

    async def single_transition(self, run: int, i: int) -> float:
        """One POST of one transition (no Idempotency-Key); its wall time in milliseconds."""
        started = time.perf_counter()
        async with self.http.post(
            f"http://127.0.0.1:{self.api_port}/internal/v1/mailings/ms_{run}_{i}/transitions",
            data=orjson.dumps(
                {"tenant_id": self.tenants["ingest"], "environment": "sandbox", "status": "created"}
            ),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        ) as r:
            if r.status != 202:
                raise RuntimeError(f"single ingest failed: {r.status}")
            await r.read()
        return (time.perf_counter() - started) * 1000

    async def ingest_rates(self) -> dict[str, float]:
        await self.reset()
        tenant = self.tenants["ingest"]
        first = self.seq + 1
        start = time.perf_counter()
        await self.ingest(tenant, self.events * 2, parallel=2)
        batch = self.events * 2 / (time.perf_counter() - start)
        updates = await self.update_batches(tenant, range(first, self.seq + 1), "paid")
        single_n = max(1000, self.events // 2)
        counter = iter(range(single_n))
        self.seq += 1
        run = self.seq

        async def lane() -> None:
            for i in counter:
                await self.single_transition(run, i)

        start = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(32)))
        single = single_n / (time.perf_counter() - start)
        return {"batch_per_s": batch, "batch_updates_per_s": updates, "single_per_s": single}

    async def update_batches(self, tenant: str, batches: range, status: str) -> float:
        """The mailings of these batches move on to `status`, batch by batch, two requests at
        a time (what the platform mostly sends: changes of known mailings); per second."""
        pending = list(batches)
        total = sum(self.batch_sizes[b] for b in pending)

        async def lane() -> None:
            while pending:
                seq = pending.pop()
                await self.ingest_batch(tenant, self.batch_sizes[seq], status, seq)

        start = time.perf_counter()
        await asyncio.gather(lane(), lane())
        return total / (time.perf_counter() - start)

    async def single_ingest_latency(self, rate: int, seconds: float = 3) -> dict[str, float]:
        """Single transitions sent at a fixed rate (open loop, 10 ms ticks): request times."""
        await self.reset()
        self.seq += 1
        run, per_tick, ticks = self.seq, rate // 100, int(seconds * 100)
        pending: list[asyncio.Task[float]] = []
        start = time.perf_counter()
        for tick in range(ticks):
            pending += [
                asyncio.create_task(self.single_transition(run, tick * per_tick + k))
                for k in range(per_tick)
            ]
            await asyncio.sleep(max(0.0, start + (tick + 1) / 100 - time.perf_counter()))
        times = await asyncio.gather(*pending)
        return {"p50_ms": quantile(times, 0.5), "p99_ms": quantile(times, 0.99)}

    async def prefill(self, pending: int) -> None:
        """`pending` deliveries spread over 1000 endpoints, written by SQL."""
        await self.reset()
        async with self.pool.acquire() as conn:
            tenant = self.tenants.get("backlog")
            if tenant is None:
                tenant = await self.tenant("backlog", [])
                self.tenants["backlog"] = tenant
                now = datetime.now(UTC)
                await conn.execute(
                    """INSERT INTO endpoints (id, tenant_id, environment, url, event_types,
                                              created_at, updated_at)
                       SELECT 'ep_b' || g, $1, 'sandbox', $2, ARRAY['*'], $3, $3
                       FROM generate_series(1, 1000) g""",
                    tenant,
                    self.recv("b"),
                    now,
                )
                keyring = sealing.keyring_from(ENCRYPTION_KEY)
                await conn.executemany(
                    "INSERT INTO endpoint_secrets (endpoint_id, secret, created_at)"
                    " VALUES ($1, $2, $3)",
                    [
                        (f"ep_b{g}", keyring.seal(SECRET, f"endpoint_secret:ep_b{g}"), now)
                        for g in range(1, 1001)
                    ],
                )
            events = pending // 1000
            now = datetime.now(UTC)
            body = SAMPLE_BODY
            await insert_events(conn, tenant, "evt_b", events, now, body)
            endpoints = [f"ep_b{e}" for e in range(1, 1001)]
            await queue_deliveries(conn, tenant, "evt_b", events, endpoints, now, now)
            await conn.execute("VACUUM ANALYZE delivery_queue")

    async def claim_latency_ms(self, samples: int = 30) -> float:
        limits = QueueLimits(endpoint_concurrency=16)
        timings = []
        async with self.pool.acquire() as conn:
            for _ in range(samples):
                tr = conn.transaction()
                await tr.start()
                start = time.perf_counter()
                claimed = await claim(conn, datetime.now(UTC), 64, limits, worker_id=0)
                timings.append((time.perf_counter() - start) * 1000)
                await tr.rollback()
                assert len(claimed) == 64
        return statistics.median(timings)

    async def backlog(self, pending: int) -> dict[str, float]:
        await self.prefill(pending)
        claim_ms = await self.claim_latency_ms()
        (worker,) = await self.start_workers()
        target = min(20_000, pending)
        await self.wait_received(target)
        got = await self.arrivals()
        rss = worker.rss_peak_mb()
        await self.stop_all_workers()
        times = sorted(t for _, _, t in got)[:target]
        rate = target / (times[-1] - times[0])
        return {"claim_ms": claim_ms, "deliveries_per_s": rate, "worker_peak_rss_mb": rss}

    async def close(self) -> None:
        for p in self.procs:
            await p.stop(grace=5)
        await self.http.close()
        await self.pool.close()


def _latency_run(bench: Bench, rate: int, tenant: str) -> Callable[[], Awaitable[Any]]:
    return lambda: bench.latency(rate, bench.tenants[tenant])


def _backlog_run(bench: Bench, pending: int) -> Callable[[], Awaitable[Any]]:
    return lambda: bench.backlog(pending)


async def repeat(runs: int, fn: Callable[[], Awaitable[Any]]) -> list[Any]:
    return [await fn() for _ in range(runs)]


def table(results: dict[str, Any]) -> str:
    rows = ["| scenario | median | min-max | vs ceiling | target |", "|---|---|---|---|---|"]
    for name, item in results["figures"].items():
        ratio = f"{item['ratio']:.2f}" if "ratio" in item else ""
        rows.append(
            f"| {name} | {item['median']:.1f} {item['unit']} | {item['min']:.1f}-{item['max']:.1f}"
            f" | {ratio} | {item.get('target', '')} |"
        )
    return "\n".join(rows)


async def measure(bench: Bench, args: argparse.Namespace, figures: dict[str, Any]) -> None:
    """Every section asked for (all by default), after the ceiling they are compared with."""

    only = set(args.only or SECTIONS)

    def put(
        name: str,
        values: list[float],
        unit: str,
        target: str = "",
        ceiling: float | None = None,
    ) -> None:
        item: dict[str, Any] = {**summary(values), "unit": unit, "target": target}
        if ceiling:
            item["ratio"] = item["median"] / ceiling
        figures[name] = item
        print(
            f"  {name}: {item['median']:.1f} {unit} ({item['min']:.1f}-{item['max']:.1f})",
            file=sys.stderr,
            flush=True,
        )

    ceil = await repeat(args.runs, bench.ceiling)
    put("ceiling (bare aiohttp client)", ceil, "req/s")
    c = statistics.median(ceil)
    if "sustained" in only:
        put(
            "sustained, ingest included",
            await repeat(args.runs, bench.sustained),
            "deliveries/s",
            ">= 0.60 x ceiling",
            c,
        )
    await minimal.section(bench, only, args.runs, put, c)  # when asked for
    if "dispatch" in only:
        await _dispatch(bench, args, put, c, figures)
    if "latency" in only:
        await _latency(bench, args, put)
    if "isolation" in only:
        base_p99 = figures.get("latency p99 @ 1000/s", {}).get("median", math.nan)
        iso = await repeat(args.runs, lambda: bench.latency(1000, bench.tenants["isolation"]))
        put(
            "isolation: healthy p99 @ 1000/s, dead neighbour",
            [x["p99_ms"] for x in iso],
            "ms",
            f"<= 2 x {base_p99:.1f}",
        )
    if "ingest" in only:
        ing = await repeat(args.runs, bench.ingest_rates)
        put(
            "ingest, batch API",
            [x["batch_per_s"] for x in ing],
            "transitions/s",
            ">= 10000",
            c,
        )
        put(
            "ingest, batch API, status updates",
            [x["batch_updates_per_s"] for x in ing],
            "transitions/s",
            "",
            c,
        )
        put(
            "ingest, single API",
            [x["single_per_s"] for x in ing],
            "transitions/s",
            ">= 3000",
            c,
        )
        lat = await repeat(args.runs, lambda: bench.single_ingest_latency(1000))
        put("ingest, single API p50 @ 1000/s", [x["p50_ms"] for x in lat], "ms")
        put("ingest, single API p99 @ 1000/s", [x["p99_ms"] for x in lat], "ms", "<= 20")
    await flow.section(bench, args, put)  # when asked for: `--only flow`, or all
    if "backlog" in only:
        for name, values, unit, target in await _backlogs(bench, args):
            put(name, values, unit, target)
    if "log" in only:
        figures.update(await _delivery_log(bench, args))


async def _latency(bench: Bench, args: argparse.Namespace, put: Callable[..., None]) -> None:
    """One endpoint at 200, 1,000 and 2,000 events/s, and where the time went (API, queue,
    HTTP) at the two higher rates."""
    for rate in (200, 1000, 2000):
        lats = await repeat(args.runs, _latency_run(bench, rate, "latency"))
        targets = {200: ("", "<= 50"), 1000: ("<= 8", "<= 25"), 2000: ("<= 10", "<= 50")}[rate]
        put(f"latency p50 @ {rate}/s", [x["p50_ms"] for x in lats], "ms", targets[0])
        put(f"latency p99 @ {rate}/s", [x["p99_ms"] for x in lats], "ms", targets[1])
        put(f"latency max @ {rate}/s", [x["max_ms"] for x in lats], "ms")
        put(
            f"latency max @ {rate}/s, first second (new worker, new endpoint)",
            [x["cold_max_ms"] for x in lats],
            "ms",
        )
        if rate < 1000:
            continue
        for stage in ("api", "queue", "http"):
            for q in ("p50", "p99"):
                values = [x[f"{stage}_{q}_ms"] for x in lats if f"{stage}_{q}_ms" in x]
                if values:
                    put(f"latency @ {rate}/s: {stage} {q}", values, "ms")


async def _dispatch(
    bench: Bench,
    args: argparse.Namespace,
    put: Callable[..., None],
    c: float,
    figures: dict[str, Any],
) -> None:
    """Dispatch-only with 1 and 2 workers, and where the 1-worker run's CPU went."""
    one = await repeat(args.runs, lambda: bench.dispatch_only(1))
    put(
        "dispatch-only, 1 worker",
        [x[0] for x in one],
        "deliveries/s",
        ">= 0.70 x ceiling",
        c,
    )
    for process in ("worker", "postgres", "receiver"):
        put(
            f"dispatch-only, 1 worker: {process} CPU per delivery",
            [x[2].get(process, 0.0) for x in one],
            "us",
        )
    two = await repeat(args.runs, lambda: bench.dispatch_only(2))
    put("dispatch-only, 2 workers", [x[0] for x in two], "deliveries/s", "no loss", c)
    figures["duplicates (scale-out)"] = {
        **summary([float(x[1]) for x in one + two]),
        "unit": "",
        "target": "0",
    }


async def _backlogs(
    bench: Bench, args: argparse.Namespace
) -> list[tuple[str, list[float], str, str]]:
    """Claim latency, throughput and worker memory with 10,000 and 1,000,000 pending."""
    found = []
    for pending in (10_000, 1_000_000):
        b = await repeat(args.runs, _backlog_run(bench, pending))
        target = "1M <= 1.5 x 10k" if pending > 10_000 else ""
        found += [
            (f"claim latency, {pending:,} pending", [x["claim_ms"] for x in b], "ms", target),
            (
                f"deliveries/s, {pending:,} pending",
                [x["deliveries_per_s"] for x in b],
                "deliveries/s",
                "",
            ),
            (
                f"worker peak RSS, {pending:,} pending",
                [x["worker_peak_rss_mb"] for x in b],
                "MB",
                "<= 150",
            ),
        ]
    return found


async def _delivery_log(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """The portal's delivery log: pages of an endpoint with 100,000 deliveries."""
    key, newest = await delivery_log.prefill(bench.pool)
    api = f"http://127.0.0.1:{bench.api_port}"
    log_runs = await repeat(args.runs, lambda: delivery_log.measure(api, key, newest))
    found: dict[str, Any] = delivery_log.figures(log_runs)
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="dispatcher-bench-") as tmp,
        embedded_postgres(Path(tmp)) as url,
    ):
        bench = Bench(Path(tmp), url, args.runs, args.events)
        await bench.setup()
        figures: dict[str, Any] = {}
        try:
            await measure(bench, args, figures)
        finally:
            await bench.close()
            logs = Path(tmp)
            deadlocks = await asyncio.to_thread(lambda: find_deadlocks(logs.rglob("*.log")))
    if deadlocks:
        print("deadlocks in the process logs:", *deadlocks[:20], sep="\n", file=sys.stderr)
        raise SystemExit(f"benchmark failed: {len(deadlocks)} deadlock lines in process logs")
    return {
        "machine": {"cores": os.cpu_count()},
        "runs": args.runs,
        "events": args.events,
        "figures": figures,
    }


SECTIONS = (
    "reference",
    "sustained",
    "dispatch",
    "latency",
    "isolation",
    "ingest",
    "backlog",
    "log",
    "flow",
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.perf")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=5000, help="events per throughput run")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    flow.add_arguments(parser)
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable); the ceiling always runs. Default: all",
    )
    soak = parser.add_argument_group("soak (retention)")
    soak.add_argument("--soak", action="store_true", help="run the retention soak instead")
    soak.add_argument("--soak-days", type=int, default=40, help="simulated days (40; 0 skips them)")
    soak.add_argument(
        "--soak-events-per-day", type=int, default=2000, help="transitions a day (2000)"
    )
    soak.add_argument(
        "--soak-history-rows",
        type=int,
        default=10_000_000,
        help="deliveries of history written by SQL for the claim and removal figures"
        " (10M; 0 skips them)",
    )
    soak.add_argument(
        "--soak-partition-rows",
        type=int,
        default=1_000_000,
        help="deliveries in the expired day that retention removes (1M)",
    )
    args = parser.parse_args()
    import uvloop

    started = time.perf_counter()
    if args.soak:
        from tests.perf.soak import run_soak, soak_table

        results = uvloop.run(run_soak(args))
        render = soak_table
    else:
        results = uvloop.run(run(args))
        render = table
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
    print(text)
    print()
    print(render(results["figures"] if args.soak else results))
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
