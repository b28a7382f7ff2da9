"""PostgreSQL stopped (fast, as in a restart; immediate, as in a crash) and started under a
running `dispatcher serve`, mid-stream.

While the database is down the API answers 503 in the error shape and /readyz fails (the
process itself stays alive: /healthz). After the restart everything recovers without
touching the dispatcher: the pool reconnects, the LISTEN connection reconnects (the fallback
poll is ten minutes away, so only a NOTIFY can deliver the events reported afterwards), the
attempts made during the outage are settled, and every accepted event is delivered.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from dispatcher.db.migrate import migrate
from dispatcher.models import Environment
from dispatcher.store import tenants
from tests.conftest import PLATFORM_TOKEN
from tests.e2e.conftest import Process, process_env, wait_until
from tests.faults.conftest import error_shape_problem
from tests.faults.harness import PLATFORM, Api, Ledger, Subscriber, batches, free_port, poll
from tests.faults.own_postgres import OwnPostgres, own_postgres
from tests.figures import Recorder
from tests.receiver import Receiver


@pytest.fixture
def database() -> Iterator[OwnPostgres]:
    with own_postgres() as server:
        yield server


async def _prepare(url: str) -> tuple[str, str]:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        tenant, keys = await tenants.create_tenant(conn, "Restart", datetime.now(UTC))
    finally:
        await conn.close()
    return tenant.id, keys[Environment.SANDBOX].key


async def _deliveries(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM deliveries GROUP BY 1")
    finally:
        await conn.close()
    return {r["status"]: r["n"] for r in rows}


async def _listening(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
        return bool(await conn.fetchval(sql))
    finally:
        await conn.close()


class Platform:
    """Reports batches the way a careful platform does: an Idempotency-Key per batch, and
    the same request again after a 503 (the database may still be coming back)."""

    def __init__(self, api: Api, tenant_id: str, ledger: Ledger) -> None:
        self.api, self.tenant_id, self.ledger = api, tenant_id, ledger
        self.retries = 0

    async def report(self, name: str, mailings: range, status: str) -> None:
        items = [
            {
                "tenant_id": self.tenant_id,
                "environment": "sandbox",
                "mailing_id": f"ml_{i}",
                "status": status,
            }
            for i in mailings
        ]
        for n, batch in enumerate(batches(items)):
            headers = {**PLATFORM, "Idempotency-Key": f"{name}-{n}"}
            for _ in range(20):
                async with self.api.http.post(
                    f"{self.api.base}/internal/v1/transitions",
                    json={"transitions": batch},
                    headers=headers,
                ) as r:
                    if r.status == 503:
                        self.retries += 1
                        await asyncio.sleep(0.25)
                        continue
                    assert r.status == 200, await r.text()
                    answer = await r.json()
                    break
            else:
                raise AssertionError(f"batch {name}-{n} never accepted")
            self.ledger.accept(
                (x["event_id"], x["event_type"])
                for x in answer["results"]
                if x["status"] == "accepted"
            )


async def _expect_unavailable(api: Api, key: str) -> int:
    """Every database-backed route answers 503 in the error shape; liveness still answers."""
    probes: list[tuple[str, str, dict[str, str], Any]] = [
        (
            "POST",
            "/internal/v1/transitions",
            PLATFORM,
            {
                "transitions": [
                    {
                        "tenant_id": "t",
                        "environment": "sandbox",
                        "mailing_id": "m",
                        "status": "created",
                    }
                ]
            },
        ),
        (
            "POST",
            "/internal/v1/mailings/ml_x/transitions",
            PLATFORM,
            {"tenant_id": "t", "environment": "sandbox", "status": "created"},
        ),
        ("GET", "/v1/webhooks", {"Authorization": f"Bearer {key}"}, None),
        ("GET", "/readyz", {}, None),
    ]
    seen = 0
    for _round in range(3):  # the first round meets pooled connections the restart broke
        for method, path, headers, body in probes:
            async with api.http.request(
                method, f"{api.base}{path}", json=body, headers=headers
            ) as r:
                raw = await r.read()
                assert r.status == 503, (method, path, r.status, raw[:300])
                assert error_shape_problem(r.status, r.content_type, raw) is None, raw[:300]
                seen += 1
    async with api.http.get(f"{api.base}/healthz") as r:
        assert r.status == 200
    return seen


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restart_mid_stream_loses_nothing(
    mode: str,
    database: OwnPostgres,
    receiver: Receiver,
    tmp_path: Path,
    figures: Recorder,
    long_run: bool,
    patience: float,
) -> None:
    mailings = 1000 if long_run else 300
    tenant_id, key = await _prepare(database.url)
    port = free_port()
    env = process_env(
        database.url,
        port=port,
        platform_token=PLATFORM_TOKEN,
        poll_interval_seconds=600,  # only NOTIFY (so a reconnected listener) wakes the worker
        metrics_port=0,
    )
    serve = Process(["serve"], env, tmp_path / "serve.log")
    try:
        receiver.script("/hook", 200, delay=0.01)
        ledger = Ledger([Subscriber(receiver, "/hook", ["*"])])
        async with aiohttp.ClientSession() as http:
            api = Api(http, port, serve)
            await api.wait_ready()
            await api.register(key, receiver.url("/hook"), ["*"])
            platform = Platform(api, tenant_id, ledger)
            await platform.report("before", range(mailings), "created")
            await receiver.wait_for(mailings // 10, timeout=30)  # mid-stream

            # immediate: a crash (no shutdown checkpoint; what the worker committed without
            # waiting for the disk is lost and sent again; what the API accepted is kept)
            await asyncio.to_thread(database.stop, mode)
            unavailable = await _expect_unavailable(api, key)
            await asyncio.sleep(1.0)  # the worker keeps failing to claim, settle and listen
            await asyncio.to_thread(database.start)

            await api.wait_ready(limit=60)
            # well before the listener's 15 s ping: it must notice the lost socket itself
            await wait_until(lambda: _listening(database.url), limit=10)
            await platform.report("after", range(mailings), "printed")
            await poll(ledger.all_arrived, limit=90 * patience, every=0.25)

            async def settled() -> bool:
                found = await _deliveries(database.url)
                return found == {"succeeded": len(ledger.expected())}

            await wait_until(settled, limit=60 * patience)
        assert serve.proc.poll() is None, "the dispatcher was never restarted"
        serve.signal(signal.SIGTERM)
        assert await serve.wait(30) == 0, serve.output()[-3000:]
    finally:
        serve.stop()
    found = ledger.verdict()
    assert found["events_sent"] == 2 * mailings
    figures.add(**found, postgres_restarts=database.restarts, unavailable_503=unavailable)
    print(f"PostgreSQL restart: {found}, 503s: {unavailable}, batch retries: {platform.retries}")
