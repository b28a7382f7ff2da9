"""A worker-only process's own small listener: /metrics, /healthz and /readyz.

A process that runs the API serves these on the API port. A `dispatcher worker` process has
no API, so it opens this one on `DISPATCHER_METRICS_PORT`, with the API's own handlers of
these three routes: Prometheus scrapes every process (one target per process or pod), and
the kubelet probes workers the same way as API pods, with the same answers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from api.context import POOL
from api.errors import error_middleware
from api.routes import ops
from dispatcher.errors import ConfigError

log = logging.getLogger(__name__)


def create_metrics_app(pool: asyncpg.Pool) -> web.Application:
    """The API's own probe and metrics routes, answering in the API's error shape."""
    app = web.Application(middlewares=[error_middleware])
    app[POOL] = pool
    app.add_routes(ops.routes)
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
