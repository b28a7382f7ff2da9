"""The real aiohttp app on a real 127.0.0.1 port, in a thread of its own, for synchronous
clients such as schemathesis (which speaks HTTP through `requests`).

The thread has its own event loop and its own asyncpg pool against the session database.
Outbound HTTP (the test-send route) goes through a session whose connector is a Unix
socket, served by a tiny receiver in the same thread: whatever URL a generated request
registers, nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
from aiohttp import web

from api.app import create_app
from dispatcher.db.pool import create_pool
from dispatcher.events import Transition, record_transitions
from dispatcher.models import Environment, Principal
from dispatcher.settings import Settings
from dispatcher.store import endpoints as endpoint_store
from dispatcher.store import tenants
from dispatcher.transitions import MailingStatus

T = TypeVar("T")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass(frozen=True)
class Objects:
    """Real ids of one tenant's sandbox objects, for requests that should find something."""

    tenant_id: str
    sandbox_key: str
    endpoint_id: str
    event_id: str
    delivery_id: str
    mailing_id: str
    # a tenant of its own, with a key, for the administration routes (they may delete it)
    spare_tenant_id: str = ""
    spare_key_id: str = ""


class AppThread:
    def __init__(self, database_url: str, settings: Settings) -> None:
        self._url = database_url
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="app", daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self._tmp = tempfile.TemporaryDirectory(prefix="fuzz-")
        self.pool: asyncpg.Pool | None = None
        self.port = 0
        self.tenant_id = ""
        self.sandbox_key = ""
        self.production_key = ""
        self._serial = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.run(self._start())

    def stop(self) -> None:
        try:
            self.run(self._stack.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._tmp.cleanup()

    async def _site(self, app: web.Application, **where: Any) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site: web.BaseSite
        if "path" in where:
            site = web.UnixSite(runner, where["path"])
        else:
            site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner

    async def _start(self) -> None:
        pool = await create_pool(self._url, min_size=1, max_size=5)
        self._stack.push_async_callback(pool.close)
        self.pool = pool
        sink = web.Application()
        sink.router.add_route("*", "/{tail:.*}", _ok)
        socket_path = str(Path(self._tmp.name) / "receiver.sock")
        await self._site(sink, path=socket_path)
        session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_path))
        self._stack.push_async_callback(session.close)
        app = create_app(self._settings, pool, services={"test_session": session})
        runner = await self._site(app)
        self.port = runner.addresses[0][1]
        async with pool.acquire() as conn:
            tenant, keys = await tenants.create_tenant(conn, "Fuzz", datetime.now(UTC))
        self.tenant_id = tenant.id
        self.sandbox_key = keys[Environment.SANDBOX].key
        self.production_key = keys[Environment.PRODUCTION].key

    def objects(self) -> Objects:
        """A fresh endpoint, event and delivery: generated requests may delete or change them."""
        return self.run(self._objects())

    async def _objects(self) -> Objects:
        assert self.pool is not None
        self._serial += 1
        mailing = f"ml_fuzz_{self._serial}"
        owner = Principal(self.tenant_id, Environment.SANDBOX, "key_fuzz")  # type: ignore[arg-type]
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            endpoint = await endpoint_store.create_endpoint(
                conn,
                owner,
                url=f"http://hooks.example.test/{mailing}",
                event_types=["*"],
                secret=SECRET,
                now=now,
            )
            item = Transition(self.tenant_id, "sandbox", mailing, MailingStatus.CREATED)
            (result,) = await record_transitions(conn, [item], now)
            delivery = await conn.fetchval(
                "SELECT id FROM deliveries WHERE endpoint_id = $1", endpoint.id
            )
            spare, keys = await tenants.create_tenant(conn, f"Spare {self._serial}", now)
        return Objects(
            self.tenant_id,
            self.sandbox_key,
            endpoint.id,
            str(result.event_id),
            f"dlv_{delivery}",
            mailing,
            spare.id,
            keys[Environment.SANDBOX].id,
        )


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")
