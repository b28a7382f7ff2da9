"""Bearer authentication: tenant API keys for /v1, the platform token for /internal."""

from __future__ import annotations

import hmac

from aiohttp import web

from api.context import pool, settings
from dispatcher.errors import Unauthorized
from dispatcher.models import Principal
from dispatcher.store import tenants

PRINCIPAL = web.RequestKey("principal", Principal)


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing or malformed Authorization header; expected 'Bearer <key>'")
    return token.strip()


async def tenant(request: web.Request) -> Principal:
    """The caller's tenant and environment; every failure is the same 401, to reveal nothing."""
    cached = request.get(PRINCIPAL)
    if isinstance(cached, Principal):
        return cached
    token = _bearer(request)
    if len(token) > 200 or not token.isascii():
        raise Unauthorized("invalid API key")
    async with pool(request).acquire() as conn:
        principal = await tenants.authenticate(conn, token)
    if principal is None:
        raise Unauthorized("invalid API key")
    request[PRINCIPAL] = principal
    return principal


def platform(request: web.Request) -> None:
    expected = settings(request).platform_token
    token = _bearer(request)
    if expected is None:
        raise Unauthorized("the platform API is disabled: set DISPATCHER_PLATFORM_TOKEN")
    if not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("invalid platform token")
