"""Every process can be scraped: a worker-only process serves /metrics on its metrics port, and
a real Prometheus scraping an API process and a worker process reads the counters back.

The Prometheus test needs Debian's `prometheus` binary; it is skipped without it, except
under CI=true, where `.ci/run` installs it and a missing binary is a failure.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.events import Transition, record_transitions
from dispatcher.transitions import MailingStatus
from tests.conftest import PLATFORM_TOKEN
from tests.e2e.conftest import Process, add_endpoint, wait_until
from tests.tooling import free_port, require_tool

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


async def _get(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            return r.status, await r.text()
    except aiohttp.ClientConnectionError:
        return 0, ""


async def _wait_ready(base: str, proc: Process) -> None:
    async def ready() -> bool:
        assert proc.proc.poll() is None, proc.output()
        return (await _get(f"{base}/readyz"))[0] == 200

    await wait_until(ready)


def _successes(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "webhook_delivery_attempts_total" and s.labels["outcome"] == "success":
                return s.value
    raise AssertionError("no webhook_delivery_attempts_total{outcome='success'} sample")


async def _transition(api: str, tenant_id: str, mailing_id: str) -> None:
    body = {"tenant_id": tenant_id, "environment": "sandbox", "status": "created"}
    headers = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
    url = f"{api}/internal/v1/mailings/{mailing_id}/transitions"
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as r:
        assert r.status == 202, await r.text()


async def test_a_worker_process_serves_metrics_and_probes_on_its_metrics_port(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, start_process: Callable[..., Process]
) -> None:
    tenant = await make_tenant()
    await add_endpoint(pool, tenant.tenant_id, receiver.url("/hook"), datetime.now(UTC))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = start_process("worker", metrics_port=port)
    await _wait_ready(base, worker)
    assert (await _get(f"{base}/healthz"))[0] == 200
    status, text = await _get(f"{base}/metrics")
    assert status == 200 and _successes(text) == 0

    async with pool.acquire() as conn, conn.transaction():
        item = Transition(tenant.tenant_id, "sandbox", "ml_1", MailingStatus.CREATED)
        await record_transitions(conn, [item], datetime.now(UTC))
    await receiver.wait_for(1)

    async def counted() -> bool:
        return _successes((await _get(f"{base}/metrics"))[1]) == 1

    await wait_until(counted)

    taken = start_process("worker", metrics_port=port)  # a second worker on the same port
    assert await taken.wait() == 2
    assert "DISPATCHER_METRICS_PORT" in taken.output()
    worker.signal(signal.SIGTERM)
    assert await worker.wait() == 0, worker.output()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, int]], str]]:
    """Start a real Prometheus scraping the given jobs every second; yield its base URL."""
    binary = require_tool("prometheus")
    started: list[subprocess.Popen[bytes]] = []

    def start(jobs: dict[str, int]) -> str:
        scrapes = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            for job, port in jobs.items()
        )
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {ALERTS}\n"
            f"scrape_configs:\n{scrapes}"
        )
        port = free_port()
        with (tmp_path / "prometheus.log").open("wb") as sink:
            started.append(
                subprocess.Popen(
                    [
                        binary,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            )
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def _query(prom: str, promql: str) -> dict[str, float]:
    """An instant query's result as {job: value}; empty while Prometheus is not up yet."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{prom}/api/v1/query", params={"query": promql}) as r,
        ):
            if r.status != 200:
                return {}
            answer = await r.json()
    except aiohttp.ClientConnectionError:
        return {}
    assert answer["status"] == "success", answer
    return {
        item["metric"].get("job", ""): float(item["value"][1]) for item in answer["data"]["result"]
    }


@pytest.mark.timeout(90)
async def test_a_real_prometheus_reads_back_the_delivery_counters(
    pool: asyncpg.Pool,
    make_tenant: Any,
    receiver: Any,
    start_process: Callable[..., Process],
    prometheus: Callable[[dict[str, int]], str],
) -> None:
    api_port, worker_port = free_port(), free_port()
    api = start_process("api", port=api_port, platform_token=PLATFORM_TOKEN)
    worker = start_process("worker", metrics_port=worker_port)
    await _wait_ready(f"http://127.0.0.1:{api_port}", api)
    await _wait_ready(f"http://127.0.0.1:{worker_port}", worker)
    prom = prometheus({"dispatcher-api": api_port, "dispatcher-worker": worker_port})

    async def both_up() -> bool:
        up = await _query(prom, "up")
        return up == {"dispatcher-api": 1.0, "dispatcher-worker": 1.0}

    await wait_until(both_up, limit=30)

    tenant = await make_tenant()
    await add_endpoint(pool, tenant.tenant_id, receiver.url("/hook"), datetime.now(UTC))
    for i in range(3):
        await _transition(f"http://127.0.0.1:{api_port}", tenant.tenant_id, f"ml_{i}")
    await receiver.wait_for(3)

    async def scraped() -> bool:
        sent = await _query(
            prom, 'sum by (job) (webhook_delivery_attempts_total{outcome="success"})'
        )
        ingested = await _query(prom, "sum by (job) (webhook_events_ingested_total)")
        return sent.get("dispatcher-worker") == 3 and ingested.get("dispatcher-api") == 3

    await wait_until(scraped, limit=30)
    latency = await _query(prom, "sum by (job) (webhook_event_delivery_latency_seconds_count)")
    assert latency.get("dispatcher-worker") == 3

    async with aiohttp.ClientSession() as http, http.get(f"{prom}/api/v1/rules") as r:
        groups = (await r.json())["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules, "the alert rules were loaded"
    assert all(rule["health"] != "err" for rule in rules), rules

    for proc in (api, worker):
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.output()
