"""SIGKILL of `dispatcher worker` processes at seeded random moments, during a stream of
events reported through a `dispatcher api` process to three receivers with different
subscriptions: every accepted event reaches every subscriber at least once, nothing
reaches a non-subscriber, and duplicates carry the same event id and body."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import PLATFORM_TOKEN, TenantKeys
from tests.e2e.conftest import Process, wait_until
from tests.faults.harness import (
    Api,
    Ledger,
    Subscriber,
    batches,
    free_port,
    poll,
    transitions,
)
from tests.figures import Recorder
from tests.receiver import Receiver

# Default lease and poll interval: a killed worker's deliveries come back within seconds
# because its liveness lock is gone, not because a lease is short.
WORKER = {
    "worker_concurrency": 32,
    "metrics_port": 0,
}


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    started = [Receiver() for _ in range(3)]
    for r in started:
        await r.start()
    yield started
    for r in started:
        await r.stop()


async def _statuses(pool: asyncpg.Pool) -> Counter[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM deliveries GROUP BY 1")
    return Counter({r["status"]: r["n"] for r in rows})


class Chaos:
    """Kills a random live worker each time the receivers pass a seeded random milestone,
    and starts a replacement at once, so two workers run between the kills."""

    def __init__(
        self,
        start: Callable[[], Process],
        ledger: Ledger,
        rng: random.Random,
        kills: int,
        patience: float,
    ) -> None:
        self.start, self.ledger, self.rng, self.patience = start, ledger, rng, patience
        self.workers = [start(), start()]
        self.milestones = sorted(rng.uniform(0.05, 0.8) for _ in range(kills))
        self.killed = 0

    async def run(self, expected_deliveries: int) -> None:
        for milestone in self.milestones:
            goal = int(milestone * expected_deliveries)

            await poll(
                lambda goal=goal: self.ledger.received() >= goal,
                limit=120 * self.patience,
                every=0.05,
            )
            await asyncio.sleep(self.rng.uniform(0, 0.2))  # not always right at the milestone
            victim = self.rng.choice(self.workers)
            victim.signal(signal.SIGKILL)
            await victim.wait(10)
            self.killed += 1
            self.workers[self.workers.index(victim)] = self.start()


@pytest.mark.timeout(300)
async def test_sigkilled_workers_lose_no_event(
    pool: asyncpg.Pool,
    make_tenant: Any,
    start_process: Callable[..., Process],
    receivers: list[Receiver],
    rng: random.Random,
    long_run: bool,
    patience: float,
    figures: Recorder,
) -> None:
    mailings, kills = (5000, 20) if long_run else (1000, 5)
    tenant: TenantKeys = await make_tenant()
    port = free_port()
    api_process = start_process("api", port=port, platform_token=PLATFORM_TOKEN, metrics_port=0)
    subscribers = [
        Subscriber(receivers[0], "/all", ["*"]),
        Subscriber(receivers[1], "/mailings", ["mailing.*"]),
        Subscriber(receivers[2], "/printed", ["mailing.printed"]),
    ]
    receivers[0].script("/all", 200, delay=0.02)  # keep some work in flight at every kill
    ledger = Ledger(subscribers)
    async with aiohttp.ClientSession() as http:
        api = Api(http, port, api_process)
        await api.wait_ready()
        for s in subscribers:
            await api.register(tenant.sandbox, s.receiver.url(s.path), s.events)
        items = transitions(tenant.tenant_id, mailings, ["created", "printed"])
        expected_deliveries = mailings * 3 + mailings * 2  # '*' and 'mailing.*' get both
        chaos = Chaos(lambda: start_process("worker", **WORKER), ledger, rng, kills, patience)
        killing = asyncio.create_task(chaos.run(expected_deliveries))
        for batch in batches(items):
            ledger.accept(await api.report(batch))
        assert len(ledger.accepted) == len(items)
        await asyncio.wait_for(killing, timeout=180 * patience)
        await poll(ledger.all_arrived, limit=120 * patience, every=0.5)

        async def settled() -> bool:
            return (await _statuses(pool))["succeeded"] == expected_deliveries

        await wait_until(settled, limit=60 * patience)
    for worker in chaos.workers:
        worker.signal(signal.SIGTERM)
        assert await worker.wait(30) == 0, worker.output()[-3000:]
    found = ledger.verdict()
    assert found["deliveries_expected"] == expected_deliveries
    assert chaos.killed == kills
    figures.add(**found, worker_sigkills=chaos.killed)
    print(f"SIGKILL x{chaos.killed}: {found}")
