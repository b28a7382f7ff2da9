"""Shared set-up for route tests that need real deliveries: an app with a delivery client,
endpoints at the real receiver, events recorded through the outbox, and a draining worker."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from dispatcher.clock import FakeClock
from dispatcher.events import Transition, record_transitions
from dispatcher.models import Endpoint, Environment, Principal
from dispatcher.policy import RetryPolicy
from dispatcher.sender import delivery_session
from dispatcher.store import endpoints as endpoint_store
from dispatcher.transitions import Accept, MailingStatus
from dispatcher.worker import Worker, WorkerConfig
from tests.conftest import TenantKeys, make_settings
from tests.integration.history_tables import scratch  # noqa: F401 - retention tests' tables

Client = TestClient[Any, Any]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """The delivery client, as `run/service.py` hands it to the app and the worker."""
    async with delivery_session(allow_private=True, max_connections=20) as session:
        yield session


@pytest.fixture
async def app_client(
    pool: asyncpg.Pool, clock: FakeClock, http_session: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """A client over an app with these settings and the delivery client as its session."""
    started: list[Client] = []

    async def factory(**overrides: Any) -> Client:
        app = create_app(
            make_settings(**overrides), pool, clock=clock, services={"test_session": http_session}
        )
        client: Client = TestClient(TestServer(app))
        await client.start_server()
        started.append(client)
        return client

    yield factory
    for client in started:
        await client.close()


@dataclass
class World:
    """Endpoints, events and a worker against the real database and receiver."""

    pool: asyncpg.Pool
    clock: FakeClock
    receiver: Any
    session: aiohttp.ClientSession
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    async def endpoint(
        self,
        tenant: TenantKeys,
        path: str,
        env: str = "sandbox",
        events: list[str] | None = None,
        **options: Any,
    ) -> Endpoint:
        owner = Principal(tenant.tenant_id, Environment(env), "key_test")  # type: ignore[arg-type]
        async with self.pool.acquire() as conn:
            return await endpoint_store.create_endpoint(
                conn,
                owner,
                url=self.receiver.url(path),
                event_types=events or ["*"],
                secret=SECRET,
                now=self.clock.now(),
                **options,
            )

    async def emit(
        self, tenant: TenantKeys, mailing_id: str, status: str, env: str = "sandbox"
    ) -> str:
        """Record one transition (through the outbox) and return its event id."""
        transition = Transition(tenant.tenant_id, env, mailing_id, MailingStatus(status))
        async with self.pool.acquire() as conn, conn.transaction():
            (result,) = await record_transitions(conn, [transition], self.clock.now())
        assert isinstance(result.verdict, Accept) and result.event_id is not None
        return result.event_id

    async def drain(self, max_age_seconds: float | None = None) -> int:
        """Send everything due at the fake clock's now; a small max age dead-letters fast."""
        policy = (
            RetryPolicy()
            if max_age_seconds is None
            else RetryPolicy(max_age_seconds=max_age_seconds)
        )
        config = WorkerConfig(allow_private_targets=True, policy=policy)
        worker = Worker(self.pool, self.session, config, clock=self.clock, rng=self.rng)
        return await worker.drain()

    async def delivery_ids(self, endpoint: Endpoint) -> list[int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id FROM deliveries WHERE endpoint_id = $1 ORDER BY id", endpoint.id
            )
        return [r["id"] for r in rows]

    async def statuses(self, endpoint: Endpoint) -> list[str]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT status FROM deliveries WHERE endpoint_id = $1 ORDER BY id", endpoint.id
            )
        return [r["status"] for r in rows]


@pytest.fixture
def world(
    pool: asyncpg.Pool, clock: FakeClock, receiver: Any, http_session: aiohttp.ClientSession
) -> World:
    return World(pool, clock, receiver, http_session)
