"""SIGTERM to a busy `dispatcher worker`: it stops claiming, lets the quick attempts finish,
cancels the ones that outlast the shutdown grace, hands every lease back, exits 0; a new
worker then delivers everything, the cancelled attempts included."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from dispatcher.events import Transition, record_transitions
from dispatcher.transitions import MailingStatus
from tests.conftest import TenantKeys
from tests.e2e.conftest import Process, add_endpoint, wait_until
from tests.faults.harness import Ledger, Subscriber, poll
from tests.figures import Recorder
from tests.receiver import Receiver

GRACE = 1.5
WORKER = {
    "shutdown_grace_seconds": GRACE,
    "worker_concurrency": 32,
    "endpoint_concurrency": 8,
    "lease_seconds": 120,  # a lease left behind would stall the test: they must be handed back
    "poll_interval_seconds": 1,
    "attempt_timeout_seconds": 30,  # the slow receiver is slow, not failing: no retries
    "retry_base_seconds": 0.5,
    "retry_max_delay_seconds": 2,
    "metrics_port": 0,
}


async def _emit(pool: asyncpg.Pool, tenant_id: str, count: int) -> list[tuple[str, str]]:
    items = [
        Transition(tenant_id, "sandbox", f"ml_{i}", MailingStatus.CREATED) for i in range(count)
    ]
    async with pool.acquire() as conn, conn.transaction():
        results = await record_transitions(conn, items, datetime.now(UTC))
    return [(str(r.event_id), str(r.event_type)) for r in results]


async def _scalar(pool: asyncpg.Pool, sql: str) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchval(sql)


@pytest.mark.timeout(180)
async def test_sigterm_under_load_exits_cleanly_and_loses_nothing(
    pool: asyncpg.Pool,
    make_tenant: Any,
    start_process: Callable[..., Process],
    receiver: Receiver,
    figures: Recorder,
    long_run: bool,
    patience: float,
) -> None:
    count = 2000 if long_run else 400
    tenant: TenantKeys = await make_tenant()
    now = datetime.now(UTC)
    receiver.script("/quick", 200, delay=0.05)
    receiver.script("/slow", 200, delay=GRACE * 4)  # outlasts the grace: cancelled
    for path in ("/quick", "/slow"):
        await add_endpoint(pool, tenant.tenant_id, receiver.url(path), now)
    ledger = Ledger([Subscriber(receiver, "/quick", ["*"]), Subscriber(receiver, "/slow", ["*"])])
    first = start_process("worker", **WORKER)
    ledger.accept(await _emit(pool, tenant.tenant_id, count))
    await poll(lambda: len(receiver.at("/quick")) >= count // 4, limit=60 * patience, every=0.05)
    assert len(receiver.at("/slow")) > 0, "slow attempts must be in flight at the SIGTERM"

    first.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert await first.wait(GRACE + 10) == 0, first.output()[-3000:]
    shutdown = time.monotonic() - stopped_at
    output = first.output()
    assert "Traceback" not in output, output[-3000:]
    # every lease handed back: nothing in flight, no endpoint slot held
    assert await _scalar(pool, "SELECT count(*) FROM deliveries WHERE status = 'in_flight'") == 0
    assert await _scalar(pool, "SELECT coalesce(sum(in_flight), 0) FROM endpoint_state") == 0
    left = await _scalar(pool, "SELECT count(*) FROM deliveries WHERE status = 'pending'")
    assert left > 0, "the SIGTERM came too late to test anything"

    receiver.script("/slow", 200)  # the receiver got quick again
    second = start_process("worker", **WORKER)

    async def settled() -> bool:
        done = await _scalar(pool, "SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
        return bool(done == 2 * count)

    await wait_until(settled, limit=120 * patience)
    second.signal(signal.SIGTERM)
    assert await second.wait(GRACE + 10) == 0, second.output()[-3000:]
    found = ledger.verdict()
    figures.add(**found, worker_sigterms=2)
    print(f"SIGTERM: exit 0 after {shutdown:.2f} s (grace {GRACE} s), {left} left; {found}")
