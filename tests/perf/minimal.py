"""The reference pipeline: the least a PostgreSQL-backed dispatcher must do, measured in the same
run as the product so that its ratio to the ceiling says what this machine allows.

Batch insert -> one-statement `SKIP LOCKED` claim of up to 100 narrow rows -> HMAC-SHA256
signature -> POST at concurrency 64 -> completion batched with `unnest`. No retries, no
history, no tenants, no fairness: what is left when everything the product promises beyond
"POST it once, signed" is taken away. It runs as its own process under uvloop, like a worker:
`python -m tests.perf.minimal --dsn DSN --url URL`, until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import uvloop

from tests.perf import cpu

if TYPE_CHECKING:
    from tests.perf.__main__ import Bench

CONCURRENCY = 64
CLAIM_ROWS = 100
SECRET = b"minimal-reference-secret"

CREATE = """
CREATE TABLE IF NOT EXISTS minimal_queue (
    id bigserial PRIMARY KEY,
    endpoint text NOT NULL,
    body bytea NOT NULL,
    claimed boolean NOT NULL DEFAULT false
)
"""
# $1 endpoints, $2 bodies
INSERT = "INSERT INTO minimal_queue (endpoint, body) SELECT * FROM unnest($1::text[], $2::bytea[])"
CLAIM = """
UPDATE minimal_queue SET claimed = true
WHERE id IN (SELECT id FROM minimal_queue WHERE NOT claimed ORDER BY id LIMIT $1
             FOR UPDATE SKIP LOCKED)
RETURNING id, endpoint, body
"""
COMPLETE = "DELETE FROM minimal_queue q USING unnest($1::bigint[]) AS u (id) WHERE q.id = u.id"


async def run(dsn: str, url: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    done: list[int] = []
    done_ready = asyncio.Event()
    slot_free = asyncio.Event()
    in_flight = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONCURRENCY + 16)
    ) as session:

        async def send(row: asyncpg.Record) -> None:
            nonlocal in_flight
            ts = str(int(time.time()))
            msg = f"{row['id']}.{ts}.".encode() + row["body"]
            sig = base64.b64encode(hmac.new(SECRET, msg, hashlib.sha256).digest()).decode()
            try:
                async with session.post(
                    f"{url}/{row['endpoint']}",
                    data=row["body"],
                    headers={
                        "Content-Type": "application/json",
                        "X-Event-Id": str(row["id"]),
                        "Webhook-Timestamp": ts,
                        "Webhook-Signature": f"v1,{sig}",
                    },
                    allow_redirects=False,
                ) as r:
                    await r.read()
            finally:
                in_flight -= 1
                done.append(row["id"])
                done_ready.set()
                slot_free.set()

        async def complete() -> None:
            while not stop.is_set() or done:
                await done_ready.wait()
                done_ready.clear()
                await asyncio.sleep(0.002)
                batch = done[:]
                del done[:]
                if batch:
                    await pool.execute(COMPLETE, batch)

        tasks: set[asyncio.Task[None]] = set()
        completer = asyncio.create_task(complete())
        while not stop.is_set():
            free = CONCURRENCY - in_flight
            if free < CONCURRENCY // 4 and in_flight:
                slot_free.clear()
                await slot_free.wait()
                continue
            rows = await pool.fetch(CLAIM, min(free, CLAIM_ROWS))
            for row in rows:
                in_flight += 1
                task = asyncio.create_task(send(row))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if not rows:
                await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)
        done_ready.set()
        await completer
    await pool.close()


# ---- the benchmark's side ---------------------------------------------------------------------


async def _fill(bench: Bench, events: int) -> None:
    endpoints = [p for _ in range(events) for p in ("m1", "m2", "m3")]
    from tests.perf.__main__ import SAMPLE_BODY

    await bench.pool.execute(INSERT, endpoints, [SAMPLE_BODY] * len(endpoints))


async def _start(bench: Bench) -> None:
    await bench.pool.execute(CREATE)
    await bench.pool.execute("TRUNCATE minimal_queue")
    await bench.reset()


def _spawn(bench: Bench) -> None:
    bench.spawn(
        sys.executable,
        "-m",
        "tests.perf.minimal",
        "--dsn",
        bench.url,
        "--url",
        bench.recv("").rstrip("/"),
    )


async def dispatch_only(bench: Bench) -> tuple[float, dict[str, float]]:
    """3 x events rows queued first, then the reference process drains them; the rate and the
    CPU microseconds per delivery by process (its process counts as the worker)."""
    await _start(bench)
    await _fill(bench, bench.events)
    before = bench.cpu_snapshot()
    _spawn(bench)
    await bench.wait_received(3 * bench.events)
    spent = cpu.per_item_us(before, bench.cpu_snapshot(), 3 * bench.events)
    times = [t for _, _, t in await bench.arrivals()]
    await bench.stop_extra_processes()
    return 3 * bench.events / (max(times) - min(times)), spent


async def sustained(bench: Bench) -> float:
    """The reference process runs while batches of 1,000 events (3,000 rows) are inserted."""
    await _start(bench)
    _spawn(bench)
    await asyncio.sleep(0.5)  # its start-up is not part of the rate
    start = time.time()
    for first in range(0, bench.events, 1000):
        await _fill(bench, min(1000, bench.events - first))
    await bench.wait_received(3 * bench.events)
    last = max(t for _, _, t in await bench.arrivals())
    await bench.stop_extra_processes()
    return 3 * bench.events / (last - start)


async def section(bench: Bench, only: set[str], runs: int, put: Any, ceiling: float) -> None:
    """`--only reference` (or all): both figures, as ratios to the same run's ceiling, and the
    CPU per delivery of the dispatch-only run."""
    if "reference" not in only:
        return
    name = "reference pipeline"
    values = [await sustained(bench) for _ in range(runs)]
    put(f"{name}, ingest included", values, "deliveries/s", "what this machine allows", ceiling)
    drained = [await dispatch_only(bench) for _ in range(runs)]
    rates = [rate for rate, _ in drained]
    put(f"{name}, dispatch-only", rates, "deliveries/s", "what this machine allows", ceiling)
    for process in ("worker", "postgres", "receiver"):
        per = [spent.get(process, 0.0) for _, spent in drained]
        put(f"{name}, dispatch-only: {process} CPU per delivery", per, "us")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.minimal")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--url", required=True, help="the receiver's base URL")
    args = parser.parse_args()
    uvloop.run(run(args.dsn, args.url))


if __name__ == "__main__":
    main()
