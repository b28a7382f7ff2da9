"""The transactional outbox: `record_transition` lives and dies with the caller's transaction."""

from __future__ import annotations

import random
from typing import Any

import asyncpg
import pytest

from dispatcher.clock import FakeClock
from dispatcher.events import Transition, record_transition, record_transitions
from dispatcher.models import Environment, Principal
from dispatcher.sender import delivery_session
from dispatcher.store import endpoints as endpoint_store
from dispatcher.transitions import Accept, MailingStatus, Refuse, Repeat
from dispatcher.worker import Worker, WorkerConfig

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class PlatformError(Exception):
    """The platform's own write failed after it recorded the transition."""


async def _endpoint(pool: asyncpg.Pool, tenant_id: str, url: str, clock: FakeClock) -> None:
    owner = Principal(tenant_id, Environment.SANDBOX, "key")  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        await endpoint_store.create_endpoint(
            conn, owner, url=url, event_types=["*"], secret=SECRET, now=clock.now()
        )


async def _drain(pool: asyncpg.Pool, clock: FakeClock) -> int:
    config = WorkerConfig(allow_private_targets=True)
    async with delivery_session(allow_private=True, max_connections=10) as session:
        return await Worker(pool, session, config, clock=clock, rng=random.Random(1)).drain()


async def _counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    async with pool.acquire() as conn:
        return (
            await conn.fetchval("SELECT count(*) FROM events"),
            await conn.fetchval("SELECT count(*) FROM deliveries"),
            await conn.fetchval("SELECT count(*) FROM mailings"),
        )


async def _platform_write(conn: asyncpg.Connection) -> None:
    """A stand-in for the platform's own write, in the same transaction (a temporary table,
    so the shared test schema stays exactly what the migrations built)."""
    await conn.execute("CREATE TEMP TABLE letters (id text PRIMARY KEY) ON COMMIT DROP")
    await conn.execute("INSERT INTO letters VALUES ('ml_1')")


async def test_committed_transition_is_delivered(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock, receiver: Any
) -> None:
    tenant = await make_tenant()
    await _endpoint(pool, tenant.tenant_id, receiver.url("/hook"), clock)
    transition = Transition(
        tenant.tenant_id, "sandbox", "ml_1", MailingStatus.PRINTED, metadata={"batch": 7}
    )
    async with pool.acquire() as conn, conn.transaction():
        await _platform_write(conn)
        result = await record_transition(conn, transition, clock.now())
    assert isinstance(result.verdict, Accept)
    assert await _drain(pool, clock) == 1
    (got,) = receiver.at("/hook")
    assert got.headers["X-Event-Id"] == result.event_id
    assert got.headers["X-Event-Type"] == "mailing.printed"
    assert b'"metadata":{"batch":7}' in got.body


async def test_rolled_back_transition_leaves_nothing(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock, receiver: Any
) -> None:
    tenant = await make_tenant()
    await _endpoint(pool, tenant.tenant_id, receiver.url("/hook"), clock)
    transition = Transition(tenant.tenant_id, "sandbox", "ml_1", MailingStatus.PRINTED)
    with pytest.raises(PlatformError):
        async with pool.acquire() as conn, conn.transaction():
            await _platform_write(conn)
            result = await record_transition(conn, transition, clock.now())
            assert isinstance(result.verdict, Accept)
            raise PlatformError("the platform's own write failed")
    assert await _counts(pool) == (0, 0, 0)
    assert await _drain(pool, clock) == 0
    assert receiver.requests == []


async def test_outside_a_transaction_is_refused(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = await make_tenant()
    transition = Transition(tenant.tenant_id, "sandbox", "ml_1", MailingStatus.PRINTED)
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside a transaction"):
            await record_transition(conn, transition, clock.now())
        with pytest.raises(RuntimeError, match="inside a transaction"):
            await record_transitions(conn, [transition], clock.now())
    assert await _counts(pool) == (0, 0, 0)


async def test_outbox_and_api_share_the_state_machine(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = await make_tenant()
    await _endpoint(pool, tenant.tenant_id, "https://example.com/hook", clock)

    async def record(status: MailingStatus) -> Any:
        async with pool.acquire() as conn, conn.transaction():
            return await record_transition(
                conn, Transition(tenant.tenant_id, "sandbox", "ml_1", status), clock.now()
            )

    first = await record(MailingStatus.DELIVERED)
    repeated = await record(MailingStatus.DELIVERED)
    refused = await record(MailingStatus.FAILED)
    assert isinstance(repeated.verdict, Repeat) and repeated.event_id == first.event_id
    assert isinstance(refused.verdict, Refuse)
    assert refused.current_status == MailingStatus.DELIVERED
    assert await _counts(pool) == (1, 1, 1)
