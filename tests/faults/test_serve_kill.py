"""SIGKILL of `dispatcher serve` with deliveries in flight to two endpoints, at the DEFAULT
settings (60 s lease, 5 s poll): a restarted process delivers every accepted event within
about 10 s, because the dead process's liveness lock is gone, not because a lease expired."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from dispatcher.events import Transition, record_transitions
from dispatcher.transitions import MailingStatus
from tests.conftest import PLATFORM_TOKEN
from tests.e2e.conftest import add_endpoint, wait_until
from tests.faults.harness import free_port
from tests.figures import Recorder

EVENTS = 120
# what the liveness design promises (reaped within 2 s of the restart, or of the kill by any
# live worker), plus the time the restarted process needs to start and to send what is left
PROMISE_SECONDS = 10
SLACK_SECONDS = 10


async def _emit(pool: asyncpg.Pool, tenant_id: str) -> set[str]:
    items = [
        Transition(tenant_id, "sandbox", f"ml_{i}", MailingStatus.CREATED) for i in range(EVENTS)
    ]
    async with pool.acquire() as conn, conn.transaction():
        results = await record_transitions(conn, items, datetime.now(UTC))
    return {str(r.event_id) for r in results}


async def _held(pool: asyncpg.Pool) -> dict[str, int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT endpoint_id, count(*) AS n FROM delivery_queue"
            " WHERE worker_id IS NOT NULL GROUP BY 1"
        )
    return {r["endpoint_id"]: r["n"] for r in rows}


@pytest.mark.timeout(120)
async def test_sigkilled_serve_delivers_everything_within_seconds_after_restart(
    pool: asyncpg.Pool,
    make_tenant: Any,
    receiver: Any,
    start_process: Any,
    figures: Recorder,
) -> None:
    tenant = await make_tenant()
    receiver.script("/a", 200, delay=0.5)
    receiver.script("/b", 200, delay=0.5)
    now = datetime.now(UTC)
    endpoints = [
        await add_endpoint(pool, tenant.tenant_id, receiver.url(path), now) for path in ("/a", "/b")
    ]
    serve = start_process("serve", port=free_port(), platform_token=PLATFORM_TOKEN)
    async with pool.acquire() as conn:
        await wait_until(lambda: _registered(conn), limit=30)
    emitted = await _emit(pool, tenant.tenant_id)
    await wait_until(lambda: _both_held(pool, endpoints), limit=30)
    serve.signal(signal.SIGKILL)  # deliveries in flight to both endpoints
    await serve.wait()
    held = await _held(pool)
    assert set(held) == set(endpoints), held  # the dead process's claims are still in the queue

    loop = asyncio.get_running_loop()
    receiver.script("/a", 200, delay=0.01)
    receiver.script("/b", 200, delay=0.01)
    restarted = start_process("serve", port=free_port(), platform_token=PLATFORM_TOKEN)
    started = loop.time()

    def got(path: str) -> set[str]:
        return {r.headers["X-Event-Id"] for r in receiver.at(path)}

    async def everything() -> bool:
        return got("/a") >= emitted and got("/b") >= emitted

    await wait_until(everything, limit=PROMISE_SECONDS + SLACK_SECONDS)
    figures.add(seconds_from_restart_to_all_delivered=round(loop.time() - started, 2))
    assert got("/a") == emitted and got("/b") == emitted  # nothing lost, nothing foreign
    async with pool.acquire() as conn:
        await wait_until(lambda: _queue_empty(conn), limit=10)
        assert await conn.fetchval("SELECT sum(in_flight) FROM endpoint_state") == 0
    restarted.signal(signal.SIGTERM)
    assert await restarted.wait() == 0


async def _registered(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM workers"))


async def _both_held(pool: asyncpg.Pool, endpoints: list[str]) -> bool:
    return set(await _held(pool)) == set(endpoints)


async def _queue_empty(conn: asyncpg.Connection) -> bool:
    return not await conn.fetchval("SELECT count(*) FROM delivery_queue")
