"""The portal's page, its static assets and the token-for-cookie exchange, under /portal/.

Every portal response carries a strict Content-Security-Policy: scripts, styles, images and
requests from this origin only, no inline script or style, nothing framed except by
DISPATCHER_PORTAL_FRAME_ANCESTORS. Together with the page rendering everything as text
(``textContent``, never ``innerHTML``), a receiver's or tenant's string cannot run.
The assets are read once from the package (they ship in the wheel) and served from memory.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aiohttp import web

from api import auth
from api.context import clock, pool, settings
from api.openapi import Raw, operation
from api.portal.schemas import PortalExchange, PortalSessionInfo
from api.responses import json_response, parse
from dispatcher.store import portal_sessions

routes = web.RouteTableDef()

TAG = "portal"
STATIC_DIR = Path(__file__).parent / "static"
_HTML = Raw("text/html")


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _load_assets() -> dict[str, Asset]:
    found = {}
    for path in sorted(STATIC_DIR.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            body = path.read_bytes()
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind.endswith("javascript"):
                kind += "; charset=utf-8"
            found[path.name] = Asset(body, kind, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return found


ASSETS = _load_assets()


def content_security_policy(frame_ancestors: str) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            f"frame-ancestors {frame_ancestors}",
        ]
    )


def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    ancestors = settings(request).portal_frame_ancestors
    response.headers["Content-Security-Policy"] = content_security_policy(ancestors)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if ancestors.strip() == "'none'":
        response.headers["X-Frame-Options"] = "DENY"  # for browsers older than CSP level 2


def _asset(request: web.Request, name: str, cache: str) -> web.Response:
    asset = ASSETS.get(name)
    if asset is None:
        raise web.HTTPNotFound()
    if request.headers.get("If-None-Match") == asset.etag:
        response = web.Response(status=304)
    else:
        response = web.Response(body=asset.body, headers={"Content-Type": asset.content_type})
        response.enable_compression()
    response.headers["ETag"] = asset.etag
    response.headers["Cache-Control"] = cache
    _secure_headers(request, response)
    return response


@routes.get("/portal")
@operation(summary="Redirect to /portal/", tag=TAG, security="public", responses={308: None})
async def portal_redirect(request: web.Request) -> web.Response:
    # browsers keep the fragment (the link's token) across a redirect without one
    raise web.HTTPPermanentRedirect("/portal/")


@routes.get("/portal/")
@operation(
    summary="The tenant portal page",
    tag=TAG,
    security="public",
    responses={200: _HTML},
    description="Opened from a portal-session link; it needs nothing from another origin.",
)
async def portal_page(request: web.Request) -> web.Response:
    return _asset(request, "index.html", "no-store")


@routes.get("/portal/static/{name}")
@operation(
    summary="A static asset of the portal",
    tag=TAG,
    security="public",
    responses={200: Raw("application/octet-stream")},
)
async def portal_static(request: web.Request) -> web.Response:
    return _asset(request, request.match_info["name"], "no-cache")


def _info(
    request: web.Request, session: portal_sessions.PortalSession, cookie: str
) -> web.Response:
    info = PortalSessionInfo(
        tenant_id=session.tenant_id,
        environment=session.environment,
        expires_at=session.expires_at,
        csrf_token=portal_sessions.csrf_token(cookie),
        signature_header=settings(request).signature_header,
    )
    response = json_response(info.model_dump(mode="json"))
    response.headers["Cache-Control"] = "no-store"
    return response


def _is_https(request: web.Request) -> bool:
    public = settings(request).public_url
    return request.secure or (public is not None and public.startswith("https://"))


def _max_age(expires_at: datetime, now: datetime) -> int:
    return max(1, int((expires_at - now).total_seconds()))


@routes.post("/portal/session")
@operation(
    summary="Trade a portal link's token for a session cookie",
    tag=TAG,
    security="public",
    body=PortalExchange,
    responses={200: PortalSessionInfo},
    errors=(401, 429),
    description="Called by the portal page with the token from its URL fragment. A token "
    "works once, until it expires or is revoked; an API key is never a portal token. Sets "
    "an HttpOnly, SameSite=Strict cookie (Secure over https) that authenticates the tenant "
    "API for this tenant and environment.",
)
async def exchange_token(request: web.Request) -> web.Response:
    auth.check_throttle(request)  # a guessed token is a failed authentication like any other
    spec = await parse(request, PortalExchange)
    now = clock(request).now()
    async with pool(request).acquire() as conn:
        found = await portal_sessions.exchange(conn, spec.token, now)
    if found is None:
        raise auth.refused(request, "this portal link has expired, was revoked or was already used")
    session, cookie = found
    response = _info(request, session, cookie)
    secure = _is_https(request)
    response.set_cookie(
        auth.portal_cookie_name(secure),
        cookie,
        path="/",
        httponly=True,
        secure=secure,
        samesite="Strict",
        max_age=_max_age(session.expires_at, now),
    )
    return response


@routes.get("/portal/session")
@operation(
    summary="The portal session of this browser",
    tag=TAG,
    security="public",
    responses={200: PortalSessionInfo},
    errors=(401, 429),
    description="Authenticated by the portal cookie: who the page acts for and its CSRF token.",
)
async def session_info(request: web.Request) -> web.Response:
    session, cookie = await auth.portal_signed_in(request, "no portal session; open a portal link")
    return _info(request, session, cookie)


@routes.delete("/portal/session")
@operation(
    summary="Sign out of the portal",
    tag=TAG,
    security="public",
    responses={204: None},
    errors=(401, 403, 429),
    description="Revokes this browser's portal session (X-CSRF-Token required).",
)
async def sign_out(request: web.Request) -> web.Response:
    session, cookie = await auth.portal_signed_in(request, "no portal session")
    auth.check_csrf(request, cookie)
    async with pool(request).acquire() as conn:
        await portal_sessions.revoke(conn, session.id, clock(request).now())
    response = web.Response(status=204)
    response.del_cookie(auth.portal_cookie_name(_is_https(request)), path="/")
    return response
