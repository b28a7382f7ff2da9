"""The aiohttp application: shared state, the error middleware and every route table."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api import auth, openapi
from api.context import CLOCK, POOL, SERVICES, SETTINGS
from api.errors import error_middleware
from api.limits import ConcurrencyCap, body_deadline
from api.portal import pages as portal_pages
from api.routes import deliveries as delivery_routes
from api.routes import events as event_routes
from api.routes import ops, tenants_admin, webhooks
from api.routes import platform as platform_routes
from api.routes import portal_sessions as portal_session_routes
from api.routes import test_send as test_send_routes
from dispatcher.clock import Clock, SystemClock
from dispatcher.settings import Settings


def create_app(
    settings: Settings,
    pool: asyncpg.Pool,
    clock: Clock | None = None,
    services: dict[str, Any] | None = None,
) -> web.Application:
    """The pool belongs to the caller, so tests and the CLI decide its lifetime."""
    app = web.Application(
        middlewares=[error_middleware, body_deadline], client_max_size=settings.max_body_bytes
    )
    app[SETTINGS] = settings
    app[POOL] = pool
    app[CLOCK] = clock or SystemClock()
    app[SERVICES] = dict(services or {})
    app.add_routes(ops.routes)
    app.add_routes([*webhooks.routes, *openapi.routes])
    app.add_routes(platform_routes.routes)
    platform_routes.setup(app)
    app.add_routes(delivery_routes.routes)
    app.add_routes(event_routes.routes)
    app.add_routes(test_send_routes.routes)
    app.add_routes(portal_session_routes.routes)
    app.add_routes(portal_pages.routes)
    app.cleanup_ctx.append(test_send_routes.test_send_client)
    app[auth.THROTTLE] = auth.new_throttle(settings.auth_failures_per_minute)
    app[test_send_routes.CAP] = ConcurrencyCap(settings.test_send_concurrency, retry_after=1)
    app.add_routes(tenants_admin.routes)
    tenants_admin.setup(app)
    return app
