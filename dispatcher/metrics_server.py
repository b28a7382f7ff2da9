"""A worker-only process's own small listener: /metrics, /healthz and /readyz.

A process that runs the API serves these on the API port. A `dispatcher worker` process has
no API, so it opens this one on `DISPATCHER_METRICS_PORT`: Prometheus scrapes every process
(one target per process or pod), and the kubelet probes workers the same way as API pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dispatcher.db.migrate import ensure_migrated
from dispatcher.errors import ConfigError, DispatcherError

log = logging.getLogger(__name__)

POOL = web.AppKey("pool", asyncpg.Pool)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(2), request.app[POOL].acquire() as conn:
            await ensure_migrated(conn)
    except DispatcherError as exc:
        return web.json_response({"status": "not_ready", "reason": str(exc)}, status=503)
    except Exception:
        reason = "database unreachable"
        return web.json_response({"status": "not_ready", "reason": reason}, status=503)
    return web.json_response({"status": "ready"})


def create_metrics_app(pool: asyncpg.Pool) -> web.Application:
    app = web.Application()
    app[POOL] = pool
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


@contextlib.asynccontextmanager
async def metrics_listener(
    host: str, port: int, pool: asyncpg.Pool, *, required: bool
) -> AsyncIterator[None]:
    """Serve for the block's lifetime; port 0 means no listener.

    A taken port stops start-up when the port was configured (`required`). The default port
    only warns: a second worker on a developer's machine still delivers, unscraped.
    """
    if port == 0:
        yield
        return
    runner = web.AppRunner(create_metrics_app(pool), access_log=None, shutdown_timeout=1)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError as exc:
            problem = (
                f"DISPATCHER_METRICS_PORT: cannot listen on {host}:{port} ({exc.strerror}); "
                "set a free port for each worker on this host, or 0 for no metrics listener"
            )
            if required:
                raise ConfigError(problem) from None
            log.warning(problem + "; running without /metrics")
        else:
            log.info(f"metrics listening on http://{host}:{port}/metrics")
        yield
    finally:
        await runner.cleanup()
