"""Benchmark of the delivery log the portal pages through: an endpoint with 100,000
deliveries (and their attempts), pages of 100 read through the API process.

`python -m tests.perf.delivery_log [--runs 3]` runs it alone (embedded PostgreSQL and a
`dispatcher api` process of its own); `python -m tests.perf` runs it with the rest.

Figures are the median time of one page as the client sees it on loopback (the server's time
plus a loopback round trip), for the newest page, a page deep in the history (cursor), and
the portal's filters. The target is <= 100 ms per page. The same run measures a one-row
authenticated GET (`GET /v1/webhooks/{id}`) as the baseline: the ratio shows what paging
costs beyond a request's fixed cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from dispatcher.db.embedded import embedded_postgres
from dispatcher.db.migrate import migrate
from dispatcher.db.pool import create_pool
from dispatcher.models import Environment
from dispatcher.partitions import partitioned_tables
from dispatcher.store import tenants

DELIVERIES = 100_000
PAGE = 100
SAMPLES = 30
ENDPOINT = "ep_deliverylog"
TYPES = ["mailing.created", "mailing.paid", "mailing.printed", "mailing.delivered"]


async def prefill(pool: asyncpg.Pool, count: int = DELIVERIES) -> tuple[str, datetime]:
    """One endpoint with `count` deliveries over 30 days: 90% succeeded (1 attempt), 5% dead
    (8 attempts), 5% pending (2 attempts); the API key of its tenant, and the newest time."""
    now = datetime.now(UTC)
    start = now - timedelta(days=30)
    step = timedelta(days=30) / count
    async with pool.acquire() as conn:
        tenant, keys = await tenants.create_tenant(conn, "delivery-log", now)
        await conn.execute(
            """INSERT INTO endpoints (id, tenant_id, environment, url, event_types, created_at,
                                      updated_at)
               VALUES ($1, $2, 'sandbox', 'https://hooks.example.com/x', ARRAY['*'], $3, $3)""",
            ENDPOINT,
            tenant.id,
            start,
        )
        for day in range(-1, 32):  # the history's daily partitions for these 30 days
            for table in partitioned_tables():
                await conn.execute(
                    "SELECT dispatcher_ensure_partition($1, $2)",
                    table,
                    (start + timedelta(days=day)).date(),
                )
        await conn.execute(
            """INSERT INTO events (id, tenant_id, environment, event_type, mailing_id,
                                   occurred_at, created_at, body)
               SELECT 'evt_log' || lpad(g::text, 8, '0'), $1, 'sandbox',
                      ($2::text[])[1 + g % 4], 'ml_log' || g,
                      $3::timestamptz + $4::interval * g, $3::timestamptz + $4::interval * g,
                      '{}'::bytea
               FROM generate_series(1, $5) g""",
            tenant.id,
            TYPES,
            start,
            step,
            count,
        )
        # 5% pending, in the queue (2 attempts made); the rest final, in the history
        await conn.execute(
            """INSERT INTO delivery_queue (id, event_id, endpoint_id, tenant_id, event_created_at,
                                           created_at, next_attempt_at, age_origin, attempts,
                                           last_status_code, last_outcome)
               SELECT g, 'evt_log' || lpad(g::text, 8, '0'), $1, $5,
                      $2::timestamptz + $3::interval * g, $2::timestamptz + $3::interval * g,
                      $2::timestamptz + $3::interval * g, $2::timestamptz + $3::interval * g,
                      2, 503, 'http_5xx'
               FROM generate_series(1, $4) g WHERE g % 20 = 1""",
            ENDPOINT,
            start,
            step,
            count,
            tenant.id,
        )
        await conn.execute(
            """INSERT INTO delivery_outcomes (id, generation, status, attempts, endpoint_id,
                                              event_id, created_at, completed_at,
                                              last_status_code, last_outcome)
               SELECT g, 0, CASE WHEN g % 20 = 0 THEN 'dead' ELSE 'succeeded' END,
                      CASE WHEN g % 20 = 0 THEN 8 ELSE 1 END, $1,
                      'evt_log' || lpad(g::text, 8, '0'),
                      $2::timestamptz + $3::interval * g, $2::timestamptz + $3::interval * g,
                      CASE WHEN g % 20 = 0 THEN 503 ELSE 200 END,
                      CASE WHEN g % 20 = 0 THEN 'http_5xx' ELSE 'success' END
               FROM generate_series(1, $4) g WHERE g % 20 <> 1
               ORDER BY g""",
            ENDPOINT,
            start,
            step,
            count,
        )
        await conn.execute(
            "SELECT setval('delivery_ids', (SELECT max(id) FROM deliveries) + 1, false)"
        )
        await conn.execute(
            """INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, outcome,
                                     status_code, error, response_body)
               SELECT d.id, n, d.created_at, 12.5,
                      CASE WHEN d.last_outcome = 'success' THEN 'success' ELSE 'http_5xx' END,
                      d.last_status_code,
                      CASE WHEN d.last_outcome = 'success' THEN NULL ELSE 'HTTP 503' END,
                      repeat('x', 200)
               FROM deliveries d CROSS JOIN LATERAL generate_series(1, d.attempts) n
               WHERE d.endpoint_id = $1""",
            ENDPOINT,
        )
        await conn.execute("VACUUM ANALYZE")
    return keys[Environment.SANDBOX].key, now


async def _median_ms(
    http: aiohttp.ClientSession, url: str, key: str, samples: int = SAMPLES
) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    timings = []
    for n in range(samples + 3):
        started = time.perf_counter()
        async with http.get(url, headers=headers) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"{url}: {response.status} {body[:200]!r}")
        if n >= 3:  # warm-up: connection, prepared statements, caches
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


async def measure(base: str, key: str, newest: datetime) -> dict[str, float]:
    """One run: the median page time of each kind of page, and the baseline."""
    log = f"{base}/v1/webhooks/{ENDPOINT}/deliveries?limit={PAGE}"
    week = (newest - timedelta(days=7)).isoformat().replace("+00:00", "Z")
    mid_since = (newest - timedelta(days=16)).isoformat().replace("+00:00", "Z")
    mid_until = (newest - timedelta(days=15)).isoformat().replace("+00:00", "Z")
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {key}"}
        async with http.get(f"{log}&status=succeeded", headers=headers) as response:
            page = orjson.loads(await response.read())
        # a cursor 90% of the way down the history
        deep = f"dlv_{int(page['data'][0]['id'].removeprefix('dlv_')) // 10}"
        for url in (log, f"{log}&starting_after={deep}", f"{log}&since={mid_since}"):
            async with http.get(url, headers=headers) as response:  # full pages, or no figure
                if len(orjson.loads(await response.read())["data"]) != PAGE:
                    raise RuntimeError(f"{url}: not a full page of {PAGE}")
        return {
            "baseline": await _median_ms(http, f"{base}/v1/webhooks/{ENDPOINT}", key),
            "newest": await _median_ms(http, log, key),
            "deep": await _median_ms(http, f"{log}&starting_after={deep}", key),
            "dead": await _median_ms(http, f"{log}&status=dead", key),
            "type": await _median_ms(http, f"{log}&event_type=mailing.paid", key),
            "week": await _median_ms(http, f"{log}&since={week}", key),
            "day": await _median_ms(http, f"{log}&since={mid_since}&until={mid_until}", key),
            "dead_day": await _median_ms(
                http, f"{log}&status=dead&since={mid_since}&until={mid_until}", key
            ),
        }


NAMES = {
    "newest": "newest page",
    "deep": "a page 90% down (cursor)",
    "dead": "status=dead",
    "type": "event_type filter",
    "week": "since a week ago",
    "day": "one day, 15 days ago",
    "dead_day": "status=dead, one day, 15 days ago",
}


def figures(runs: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Rows for the benchmark table: median, range, ratio to the same run's baseline."""
    baseline = statistics.median(r["baseline"] for r in runs)
    found: dict[str, dict[str, Any]] = {
        f"delivery log of {DELIVERIES:,}: one-row GET (baseline)": {
            "median": baseline,
            "min": min(r["baseline"] for r in runs),
            "max": max(r["baseline"] for r in runs),
            "unit": "ms",
            "target": "",
        }
    }
    for key, name in NAMES.items():
        values = [r[key] for r in runs]
        median = statistics.median(values)
        found[f"delivery log of {DELIVERIES:,}: {name}, {PAGE}/page"] = {
            "median": median,
            "min": min(values),
            "max": max(values),
            "ratio": median / baseline,
            "unit": "ms",
            "target": "<= 100",
        }
    return found


async def run_alone(runs: int) -> dict[str, dict[str, Any]]:
    with (
        tempfile.TemporaryDirectory(prefix="dispatcher-bench-log-") as tmp,
        embedded_postgres(Path(tmp)) as url,
    ):
        pool = await create_pool(url, min_size=1, max_size=4)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            key, newest = await prefill(pool)
            port = _free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
            env.update(DISPATCHER_DATABASE_URL=url, DISPATCHER_PORT=str(port))
            with (Path(tmp) / "api.log").open("wb") as sink:
                proc = subprocess.Popen(  # noqa: ASYNC220 - the API under test
                    [sys.executable, "-m", "run.cli", "api"],
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            try:
                base = f"http://127.0.0.1:{port}"
                await _until_ready(base)
                return figures([await measure(base, key, newest) for _ in range(runs)])
            finally:
                proc.terminate()
                proc.wait(timeout=20)
        finally:
            await pool.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _until_ready(base: str) -> None:
    async with asyncio.timeout(60), aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.delivery_log")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    found = asyncio.run(run_alone(args.runs))
    print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    print()
    print("| scenario | median | min-max | vs baseline | target |")
    print("|---|---|---|---|---|")
    for name, item in found.items():
        ratio = f"{item['ratio']:.1f}" if "ratio" in item else ""
        print(
            f"| {name} | {item['median']:.1f} ms | {item['min']:.1f}-{item['max']:.1f} "
            f"| {ratio} | {item['target']} |"
        )


if __name__ == "__main__":
    main()
