"""Who is calling: tenant API keys or a portal session's cookie for /v1, the platform token
for /internal.

The tenant portal uses the tenant API itself, so both credentials end in the same
``tenant()`` and every route authorizes the same ``Principal`` whichever way it came.
A cookie-authenticated write must also carry the session's CSRF token (``X-CSRF-Token``):
the cookie is SameSite=Strict already, the token is the second lock. A request with an
``Authorization`` header is judged by it alone, whatever cookie it carries.

Failed attempts are counted per client address (``AUTH_FAILURES_PER_MINUTE``, per API
process): beyond it the address gets a 429 with ``Retry-After`` before any key is checked.
They are logged, sampled (an address's first failure in a window, and the one that trips
the throttle): the route, the client address and the first characters of a tenant key,
never the key or the token itself.
"""

from __future__ import annotations

import hmac
import logging
from datetime import timedelta

from aiohttp import web

from api.context import clock, pool, settings
from api.limits import FailureThrottle
from dispatcher.errors import DispatcherError, Forbidden, Unauthorized
from dispatcher.models import Principal
from dispatcher.store import portal_sessions, tenants

PRINCIPAL = web.RequestKey("principal", Principal)
# "__Host-" makes the browser refuse it unless Secure, on "/", without a Domain: over https
PORTAL_COOKIE_SECURE = "__Host-dispatcher_portal"
PORTAL_COOKIE = "dispatcher_portal"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
THROTTLE = web.AppKey("auth_throttle", FailureThrottle)
WINDOW = timedelta(minutes=1)
_SHOWN_KEY_CHARACTERS = 3  # after "sk_sandbox_": enough to tell keys apart, not to guess one

log = logging.getLogger(__name__)


def new_throttle(failures_per_minute: int) -> FailureThrottle:
    return FailureThrottle(failures_per_minute, WINDOW)


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


def _key_prefix(token: str) -> str | None:
    for prefix in tenants.KEY_PREFIX.values():
        if token.startswith(prefix) and token.isascii():
            return token[: len(prefix) + _SHOWN_KEY_CHARACTERS]
    return None


def _route(request: web.Request) -> str:
    """The route's pattern (``/v1/webhooks/{id}``): ids in paths are no business of logs."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


class CsrfRefused(DispatcherError):
    """A portal-session write without its CSRF token (403, by the error table)."""

    type = "csrf_failed"


def check_throttle(request: web.Request) -> None:
    request.app[THROTTLE].check(_client(request), clock(request).now())


def refused(request: web.Request, message: str, token: str | None = None) -> Unauthorized:
    """Count the failure against the client address, log a sample, and say 401."""
    throttle = request.app[THROTTLE]
    client = _client(request)
    failures = throttle.failed(client, clock(request).now())
    if failures in (1, throttle.limit):
        log.warning(
            "authentication failed"
            + ("; further failures from this address are refused" if failures > 1 else ""),
            extra={
                "path": _route(request),
                "method": request.method,
                "client": client,
                "key_prefix": _key_prefix(token) if token else None,
            },
        )
    return Unauthorized(message)


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise refused(
            request, "missing or malformed Authorization header; expected 'Bearer <key>'", None
        )
    return token.strip()


def portal_cookie_name(secure: bool) -> str:
    return PORTAL_COOKIE_SECURE if secure else PORTAL_COOKIE


def portal_cookie(request: web.Request) -> str | None:
    for name in (PORTAL_COOKIE_SECURE, PORTAL_COOKIE):
        value = request.cookies.get(name)
        if value:
            return value
    return None


async def portal_session(request: web.Request, cookie: str) -> portal_sessions.PortalSession:
    """The live session of a portal cookie; the same 401 for every failure, counted."""
    found = None
    if 0 < len(cookie) <= 200 and cookie.isascii():
        async with pool(request).acquire() as conn:
            found = await portal_sessions.authenticate(conn, cookie, clock(request).now())
    if found is None:
        raise refused(request, "the portal session has expired or was revoked; open a new link")
    return found


async def portal_signed_in(
    request: web.Request, missing: str
) -> tuple[portal_sessions.PortalSession, str]:
    """The portal pages' own check: throttled, a cookie (else 401 with `missing`), a live
    session for it; returns the session and the cookie (for the CSRF check)."""
    check_throttle(request)
    cookie = portal_cookie(request)
    if cookie is None:
        raise refused(request, missing)
    return await portal_session(request, cookie), cookie


def check_csrf(request: web.Request, cookie: str) -> None:
    if request.method in _SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    expected = portal_sessions.csrf_token(cookie)
    if not hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode()):
        raise CsrfRefused(f"missing or wrong {CSRF_HEADER} header for a portal session")


async def tenant(request: web.Request) -> Principal:
    """The caller's tenant and environment; every failure is the same 401, to reveal nothing,
    but a live key of a suspended tenant, which is a 403 (the key holder may know that)."""
    cached = request.get(PRINCIPAL)
    if isinstance(cached, Principal):
        return cached
    check_throttle(request)
    cookie = portal_cookie(request) if "Authorization" not in request.headers else None
    if cookie is not None:
        session = await portal_session(request, cookie)
        check_csrf(request, cookie)
        if session.suspended:
            raise Forbidden("the tenant is suspended; its keys are refused until it is resumed")
        request[PRINCIPAL] = session.principal()
        return request[PRINCIPAL]
    token = _bearer(request)
    if len(token) > 200 or not token.isascii():
        raise refused(request, "invalid API key", None)
    async with pool(request).acquire() as conn:
        principal = await tenants.authenticate(conn, token, clock(request).now())
    if principal is tenants.KeyState.SUSPENDED:
        raise Forbidden("the tenant is suspended; its keys are refused until it is resumed")
    if not isinstance(principal, Principal):
        raise refused(request, "invalid API key", token)
    request[PRINCIPAL] = principal
    return principal


def platform(request: web.Request) -> None:
    check_throttle(request)
    expected = settings(request).platform_token
    token = _bearer(request)
    if expected is None:
        raise Unauthorized("the platform API is disabled: set DISPATCHER_PLATFORM_TOKEN")
    if not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        raise refused(request, "invalid platform token", None)
