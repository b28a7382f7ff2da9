"""Probes and metrics for SREs: served on the API port, and on a worker-only process's
metrics port by the same handlers (`run/metrics_server.py`)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.context import pool
from api.responses import json_response
from dispatcher.errors import NotReady
from dispatcher.readiness import unready_reason

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    reason = await unready_reason(pool(request))
    if reason is not None:
        raise NotReady(reason)
    return json_response({"status": "ready"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
