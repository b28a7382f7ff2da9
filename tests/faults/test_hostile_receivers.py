"""Hostile receivers next to a healthy one, against a real `dispatcher worker` process.

The healthy endpoint gets every event while the hostile ones are still failing (checked at
that moment, not by the clock); the worker's memory stays bounded (its VmRSS is sampled
throughout, 50 MB answers included); the endpoints that do eventually answer 2xx (the
flapping one, and the one answering binary bytes) get every event; and the worker stops
cleanly on SIGTERM with attempts still stalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from dispatcher.events import Transition, record_transitions
from dispatcher.transitions import MailingStatus
from tests.conftest import TenantKeys
from tests.e2e.conftest import Process, add_endpoint, wait_until
from tests.faults.conftest import vm_rss_mb
from tests.faults.harness import poll
from tests.faults.hostile import KINDS, Hostile
from tests.figures import Recorder
from tests.receiver import Receiver

RSS_LIMIT_MB = 300
ATTEMPT_TIMEOUT = 0.5
WORKER = {
    "attempt_timeout_seconds": ATTEMPT_TIMEOUT,
    "retry_base_seconds": 0.2,
    "retry_multiplier": 2,
    "retry_max_delay_seconds": 1,
    "breaker_open_seconds": 0.5,
    "breaker_max_open_seconds": 1,
    "endpoint_concurrency": 8,
    "worker_concurrency": 48,
    "shutdown_grace_seconds": 2,
    "metrics_port": 0,
}
NEVER_SUCCEED = ("blackhole", "huge", "truncated")


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    found = Hostile(stall_seconds=ATTEMPT_TIMEOUT * 4)
    await found.start()
    yield found
    await found.stop()


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.samples = pid, 0.0, 0

    async def run(self) -> None:
        for _ in range(100_000):  # bounded; cancelled long before
            rss = vm_rss_mb(self.pid)
            if rss is not None:
                self.peak = max(self.peak, rss)
                self.samples += 1
            await asyncio.sleep(0.05)


async def _emit(pool: asyncpg.Pool, tenant_id: str, count: int) -> list[str]:
    items = [
        Transition(tenant_id, "sandbox", f"ml_{i}", MailingStatus.CREATED) for i in range(count)
    ]
    async with pool.acquire() as conn, conn.transaction():
        results = await record_transitions(conn, items, datetime.now(UTC))
    return [str(r.event_id) for r in results]


async def _counts(pool: asyncpg.Pool, endpoint_id: str) -> dict[str, int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT status, count(*) AS n FROM deliveries WHERE endpoint_id = $1 GROUP BY 1",
            endpoint_id,
        )
    return {r["status"]: r["n"] for r in rows}


@pytest.mark.timeout(240)
async def test_hostile_receivers_neither_starve_healthy_ones_nor_bloat_the_worker(
    pool: asyncpg.Pool,
    make_tenant: Any,
    start_process: Callable[..., Process],
    receiver: Receiver,
    hostile: Hostile,
    figures: Recorder,
    long_run: bool,
    patience: float,
) -> None:
    count = 1000 if long_run else 120
    tenant: TenantKeys = await make_tenant()
    now = datetime.now(UTC)
    healthy = await add_endpoint(pool, tenant.tenant_id, receiver.url("/healthy"), now)
    bad = {k: await add_endpoint(pool, tenant.tenant_id, hostile.url(k), now) for k in KINDS}
    worker = start_process("worker", **WORKER)
    sampler = RssSampler(worker.proc.pid)
    sampling = asyncio.create_task(sampler.run())
    try:
        emitted = await _emit(pool, tenant.tenant_id, count)

        await receiver.wait_for(count, path="/healthy", timeout=60 * patience)
        # at this moment, the hostile endpoints are in play and still failing
        for kind in NEVER_SUCCEED:
            assert hostile.hits[kind] > 0, f"{kind} was never tried: {hostile.hits}"
            state = await _counts(pool, bad[kind])
            assert state.get("succeeded", 0) == 0 and sum(state.values()) == count, state

        async def settled(endpoint: str) -> bool:
            return (await _counts(pool, endpoint)) == {"succeeded": count}

        for endpoint in (healthy, bad["flapping"], bad["binary"]):
            await wait_until(lambda e=endpoint: settled(e), limit=120 * patience)
        await poll(lambda: hostile.hits["huge"] >= 5, limit=60)  # 250 MB offered, at least
        assert worker.proc.poll() is None, worker.output()[-3000:]
        worker.signal(signal.SIGTERM)  # with blackhole attempts stalled in flight
        assert await worker.wait(WORKER["shutdown_grace_seconds"] + 20) == 0, worker.output()[
            -3000:
        ]
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
    healthy_ids = {r.headers["X-Event-Id"] for r in receiver.at("/healthy")}
    delivered = {
        "healthy": healthy_ids,
        "flapping": hostile.succeeded["flapping"],
        "binary": hostile.succeeded["binary"],
    }
    for name, ids in delivered.items():
        assert ids == set(emitted), f"{name}: {len(set(emitted) - ids)} events never arrived"
    assert sampler.samples > 10
    assert sampler.peak < RSS_LIMIT_MB, f"worker RSS peaked at {sampler.peak:.0f} MB"
    figures.add(
        events_sent=count,
        deliveries_expected=3 * count,
        deliveries_delivered=sum(len(ids) for ids in delivered.values()),
        deliveries_lost=sum(len(set(emitted) - ids) for ids in delivered.values()),
        duplicates=len(receiver.at("/healthy")) - len(healthy_ids),
        hostile_receivers=len(KINDS),
        hostile_attempts=sum(hostile.hits.values()),
        worker_rss_peak_mb=round(sampler.peak, 1),
        worker_sigterms=1,
    )
    print(
        f"hostile: hits {dict(hostile.hits)}, huge bytes offered {hostile.huge_bytes_sent}, "
        f"worker RSS peak {sampler.peak:.1f} MB over {sampler.samples} samples"
    )
