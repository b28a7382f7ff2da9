"""Test sends cannot crowd out real deliveries: their own pool, and a cap per tenant.

Issue 16 measured 100 concurrent test sends to a hanging endpoint delaying other tenants'
attempts from 2 ms to seconds: they shared the workers' connection pool, with no limit.
Here, at the default settings (private targets allowed: the receivers are on loopback), with
a real receiver that never answers, another tenant's delivery and test send go through
while the hanging ones are still waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from dispatcher.clock import FakeClock
from dispatcher.events import Transition, record_transitions
from dispatcher.models import Environment, Principal
from dispatcher.sender import delivery_session
from dispatcher.settings import Settings
from dispatcher.store import endpoints as endpoint_store
from dispatcher.transitions import MailingStatus
from dispatcher.worker import Worker, WorkerConfig
from tests.conftest import PLATFORM_TOKEN, TenantKeys
from tests.receiver import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HANGING_SENDS = 100


@pytest.fixture
async def hanging() -> AsyncIterator[Receiver]:
    """A real receiver that reads the request and never answers."""
    found = Receiver()
    found.script("/hang", delay=3600)
    await found.start()
    yield found
    await found.stop()


async def endpoint(pool: asyncpg.Pool, tenant: TenantKeys, url: str, clock: FakeClock) -> str:
    owner = Principal(tenant.tenant_id, Environment.SANDBOX, "key")  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        created = await endpoint_store.create_endpoint(
            conn, owner, url=url, event_types=["*"], secret=SECRET, now=clock.now()
        )
    return created.id


async def test_hanging_test_sends_delay_no_other_tenant(
    pool: asyncpg.Pool, clock: FakeClock, make_tenant: Any, receiver: Any, hanging: Receiver
) -> None:
    settings = Settings(platform_token=PLATFORM_TOKEN, allow_private_targets=True)
    noisy: TenantKeys = await make_tenant("noisy")
    quiet: TenantKeys = await make_tenant("quiet")
    noisy_endpoint = await endpoint(pool, noisy, hanging.url("/hang"), clock)
    quiet_endpoint = await endpoint(pool, quiet, receiver.url("/quiet"), clock)
    # as `dispatcher serve` builds them: the workers' client, and the app with its own
    async with delivery_session(
        allow_private=True, max_connections=settings.worker_concurrency + 16
    ) as worker_session:
        app = create_app(settings, pool, clock=clock)
        async with TestClient(TestServer(app)) as api:

            async def test_send(keys: TenantKeys, endpoint_id: str) -> tuple[int, Any]:
                answer = await api.post(f"/v1/webhooks/{endpoint_id}/test", headers=keys.headers())
                return answer.status, (answer.headers.get("Retry-After"), await answer.json())

            sends = [
                asyncio.create_task(test_send(noisy, noisy_endpoint)) for _ in range(HANGING_SENDS)
            ]
            await hanging.wait_for(settings.test_send_concurrency)
            waiting = set(sends)
            async with asyncio.timeout(30):  # a bound for a hang, not a measurement
                while len(waiting) > settings.test_send_concurrency:
                    _, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            refused = [task.result() for task in sends if task.done()]
            pending = [task for task in sends if not task.done()]
            assert len(pending) == settings.test_send_concurrency, "the cap's worth hang"
            assert {(status, headers[0]) for status, headers in refused} == {(429, "1")}
            assert {body["error"]["type"] for _, (_, body) in refused} == {"rate_limited"}

            item = Transition(quiet.tenant_id, "sandbox", "ml_quiet", MailingStatus.CREATED)
            async with pool.acquire() as conn, conn.transaction():
                await record_transitions(conn, [item], clock.now())
            worker = Worker(pool, worker_session, WorkerConfig.from_settings(settings), clock=clock)
            await worker.drain()
            status, (_, tested) = await test_send(quiet, quiet_endpoint)

            assert all(not task.done() for task in pending), "still hanging meanwhile"
            async with pool.acquire() as conn:
                outcomes = await conn.fetch("SELECT outcome FROM attempts")
            assert [r["outcome"] for r in outcomes] == ["success"], "the quiet tenant's delivery"
            assert (status, tested["outcome"]) == (200, "success"), tested
            assert [r.path for r in receiver.requests] == ["/quiet", "/quiet"]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
