"""Probes and metrics for SREs."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.context import pool
from api.responses import error_response, json_response
from dispatcher.db.migrate import ensure_migrated
from dispatcher.errors import DispatcherError

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(2):
            async with pool(request).acquire() as conn:
                await ensure_migrated(conn)
    except DispatcherError as exc:
        return error_response(503, "not_ready", str(exc))
    except (TimeoutError, OSError, Exception):
        return error_response(503, "not_ready", "database unreachable")
    return json_response({"status": "ready"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
