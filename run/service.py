"""Runs the roles of one process (API, workers, or both) as one `async with` stack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from api.app import create_app
from dispatcher import sealing
from dispatcher.db.migrate import ensure_migrated, migrate
from dispatcher.db.pool import database_url, open_delivery_pool, open_pool
from dispatcher.gauges import refresh_gauges_forever
from dispatcher.http_server import api_runner
from dispatcher.listener import Listener
from dispatcher.maintenance import maintain_forever
from dispatcher.partitions import ensure_partitions
from dispatcher.queue import QueueLimits
from dispatcher.sender import delivery_session
from dispatcher.settings import Settings
from dispatcher.store.secrets import load_keyring, reseal_legacy
from dispatcher.worker import Worker, WorkerConfig
from run.metrics_server import metrics_listener

log = logging.getLogger(__name__)


async def prepare_database(
    conn: asyncpg.Connection, settings: Settings, migrate_first: bool
) -> None:
    """Migrated, and the encryption key checked against what the database holds (a wrong
    key stops start-up naming the variable); legacy plain secrets get sealed now."""
    if migrate_first:
        applied = await migrate(conn)
        if applied:
            log.info(f"applied migrations: {', '.join(applied)}")
    await ensure_migrated(conn)
    keyring = await load_keyring(conn, settings)
    sealing.install(keyring)
    sealed = await reseal_legacy(conn, keyring)
    if sealed:
        log.info(f"sealed {sealed} secret values written before encryption at rest")
    created = await ensure_partitions(conn, datetime.now(UTC))
    if created:
        log.info(f"created partitions: {', '.join(created)}")


@contextlib.asynccontextmanager
async def api_role(
    settings: Settings, pool: asyncpg.Pool, services: dict[str, Any]
) -> AsyncIterator[web.AppRunner]:
    app = create_app(settings, pool, services=services)
    runner = api_runner(app, settings)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
        await site.start()
        log.info(f"API listening on http://{settings.host}:{settings.port}")
        yield runner
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def background(coro: Any, name: str) -> AsyncIterator[asyncio.Task[Any]]:
    """A task that lives exactly as long as the block: never left dangling."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _stop_worker(runner: Worker, task: asyncio.Task[None]) -> None:
    runner.stop()
    with contextlib.suppress(Exception):
        await task


async def serve(settings: Settings, *, api: bool, worker: bool, migrate_first: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with database_url(settings) as url:
        async with contextlib.AsyncExitStack() as stack:
            pool = await stack.enter_async_context(open_pool(url, settings))
            async with pool.acquire() as conn:
                await prepare_database(conn, settings, migrate_first)
            session = await stack.enter_async_context(
                delivery_session(
                    allow_private=settings.allow_private_targets,
                    max_connections=settings.worker_concurrency + 16,
                )
            )
            services: dict[str, Any] = {}  # the app keeps its own client for test sends
            worker_task = None
            if worker:
                delivery_pool = await stack.enter_async_context(open_delivery_pool(url, settings))
                runner = Worker(delivery_pool, session, WorkerConfig.from_settings(settings))
                listener = Listener(url, runner.wake)
                for coro, name in (
                    (listener.run(), "listener"),
                    (refresh_gauges_forever(pool, QueueLimits.from_settings(settings)), "gauges"),
                    (maintain_forever(pool, settings.retention_days), "maintenance"),
                ):
                    _ = await stack.enter_async_context(background(coro, name))
                if not api:  # the API port serves /metrics otherwise
                    configured = "metrics_port" in settings.model_fields_set
                    await stack.enter_async_context(
                        metrics_listener(
                            settings.host, settings.metrics_port, pool, required=configured
                        )
                    )
                worker_task = asyncio.create_task(runner.run(), name="worker")
                # if a later role fails to start, the worker stops (and lets its liveness
                # connection go) before the pool closes, so the process exits
                stack.push_async_callback(_stop_worker, runner, worker_task)
            if api:
                await stack.enter_async_context(api_role(settings, pool, services))
            roles = " and ".join(r for r, on in (("api", api), ("worker", worker)) if on)
            log.info(f"dispatcher running ({roles}); SIGTERM stops it")
            if worker_task is not None:
                stop_wait = asyncio.create_task(stop.wait())
                await asyncio.wait({worker_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                runner.stop()
                await worker_task
            else:
                await stop.wait()
            log.info("dispatcher stopping")
