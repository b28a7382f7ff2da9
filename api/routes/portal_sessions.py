"""Platform routes for tenant portal links (SPEC section 4, POST /internal/v1/portal-sessions).

Decisions:
- The link is ``<base>/portal/#token=pst_...``: the token sits in the fragment, which browsers
  never send to a server, so it is in no access log, proxy log or Referer. ``<base>`` is
  DISPATCHER_PUBLIC_URL, else the scheme and Host of this request (right when the platform
  calls the same address its users' browsers use; set the variable behind a proxy).
- The link can be opened once: the page trades the token for a session cookie at once and
  removes it from the address bar and history. The session lives until ``expires_at``.
- Revocation: DELETE .../portal-sessions/{id} (the cookie stops working on the next request);
  deleting the tenant removes its sessions.
- An unknown tenant_id is a 422 on that field, as for transitions.
"""

from __future__ import annotations

from aiohttp import web

from api import auth
from api.context import clock, pool, settings
from api.openapi import operation
from api.responses import json_response, parse
from api.schemas.portal_sessions import PortalSessionCreate, PortalSessionOut
from dispatcher.errors import FieldError, NotFound, ValidationFailed
from dispatcher.store import portal_sessions
from dispatcher.store import tenants as tenant_store

routes = web.RouteTableDef()

TAG = "platform"
PORTAL_PATH = "/portal/"


def portal_base(request: web.Request) -> str:
    configured = settings(request).public_url
    if configured:
        return configured.rstrip("/")
    return f"{request.scheme}://{request.host}"


@routes.post("/internal/v1/portal-sessions")
@operation(
    summary="Create a tenant portal link",
    tag=TAG,
    security="platform",
    body=PortalSessionCreate,
    responses={201: PortalSessionOut},
    description="A link to the tenant portal for one tenant and environment, usable once "
    "and until expires_at (default 1 h, at most 24 h). Open it in a browser or an iframe.",
)
async def create_portal_session(request: web.Request) -> web.Response:
    auth.platform(request)
    spec = await parse(request, PortalSessionCreate)
    now = clock(request).now()
    async with pool(request).acquire() as conn:
        if await tenant_store.get_tenant(conn, spec.tenant_id) is None:
            raise ValidationFailed([FieldError("tenant_id", "no such tenant")])
        created = await portal_sessions.create(
            conn, spec.tenant_id, spec.environment, spec.expires_in_seconds, now
        )
    out = PortalSessionOut(
        id=created.id,
        url=f"{portal_base(request)}{PORTAL_PATH}#token={created.token}",
        tenant_id=spec.tenant_id,
        environment=spec.environment,
        expires_at=created.expires_at,
    )
    return json_response(out.model_dump(mode="json"), status=201)


@routes.delete("/internal/v1/portal-sessions/{id}")
@operation(
    summary="Revoke a tenant portal link and its session",
    tag=TAG,
    security="platform",
    responses={204: None},
    description="The link can no longer be opened and the browser's session ends on its "
    "next request. 404 for an unknown, expired or already revoked session.",
)
async def revoke_portal_session(request: web.Request) -> web.Response:
    auth.platform(request)
    async with pool(request).acquire() as conn:
        done = await portal_sessions.revoke(conn, request.match_info["id"], clock(request).now())
    if not done:
        raise NotFound("no such live portal session")
    return web.Response(status=204)
