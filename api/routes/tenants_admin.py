"""Platform administration (SPEC section 4): tenants, their API keys and their usage.

Only the platform token opens these routes; a tenant key is a 401 here, like any unknown
token. Decisions:

- Create is idempotent on ``uid``: the same uid again answers 200 with the tenant as it is
  (so a platform that retries never creates two); the same uid with another name is a 409
  naming ``uid``. Without a uid every POST creates a tenant.
- DELETE marks the tenant deleted in one short transaction (from then on its keys are
  401, it is 404 here, its ingest is refused and its deliveries are never claimed), then
  removes its rows in batches of 1000. When that finishes within a few batches the answer is
  204; otherwise 202 and the removal carries on in the background (in this process, and in
  the workers' maintenance loop should this process stop).
- Keys: listed without the key (id, name, environment, prefix, created, last used), only live
  ones; a revoked key is refused from the next request and disappears from the list.
- Usage comes from per-day counters bumped as the work happens, never from the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from aiohttp import web

from api import auth
from api.context import POOL, clock, pool
from api.openapi import operation
from api.pagination import page_query, resolve_cursor, slice_page
from api.responses import error_response, json_response, parse
from api.schemas.tenants_admin import (
    MAX_USAGE_DAYS,
    ApiKeyIn,
    ApiKeyList,
    ApiKeyWithKey,
    TenantDeletion,
    TenantIn,
    TenantList,
    TenantListQuery,
    TenantObject,
    TenantPatch,
    UsageDay,
    UsageQuery,
    UsageReport,
    api_key_object,
    tenant_object,
)
from dispatcher.errors import FieldError, NotFound, ValidationFailed
from dispatcher.models import Tenant
from dispatcher.store import tenants as store
from dispatcher.tenant_purge import purge_tenant

log = logging.getLogger(__name__)

routes = web.RouteTableDef()
TAG = "administration"
# batches the DELETE request itself removes before it answers 202 instead of 204
QUICK_PURGE_BATCHES = 5
PURGE_PATIENCE = 120  # rounds, a second apart, of waiting for in-flight deliveries to settle
Purges = set[asyncio.Task[None]]
PURGES = web.AppKey("tenant_purges", Purges)


def _show(tenant: Tenant, status: int = 200) -> web.Response:
    return json_response(tenant_object(tenant).model_dump(mode="json"), status=status)


async def _tenant(request: web.Request) -> Tenant:
    async with pool(request).acquire() as conn:
        found = await store.get_tenant(conn, request.match_info["id"])
    if found is None:
        raise NotFound("no such tenant")
    return found


@routes.post("/internal/v1/tenants")
@operation(
    summary="Create a tenant (idempotent on uid)",
    tag=TAG,
    security="platform",
    body=TenantIn,
    responses={201: TenantObject, 200: TenantObject},
    errors=(409,),
    description="201 with the new tenant; 200 with the existing one when a live tenant has "
    "this uid and name; 409 (field uid) when it has this uid and another name. No key is "
    "created: add them with POST /internal/v1/tenants/{id}/keys.",
)
async def create_tenant(request: web.Request) -> web.Response:
    auth.platform(request)
    spec = await parse(request, TenantIn)
    async with pool(request).acquire() as conn:
        tenant, created = await store.add_tenant(conn, spec.name, spec.uid, clock(request).now())
    if created:
        return _show(tenant, status=201)
    if tenant.name != spec.name:
        return error_response(
            409,
            "conflict",
            f"uid is already the tenant {tenant.id}, with another name",
            [FieldError("uid", f"belongs to tenant {tenant.id}, named differently")],
        )
    return _show(tenant)


@routes.get("/internal/v1/tenants")
@operation(
    summary="List tenants, newest first",
    tag=TAG,
    security="platform",
    query=TenantListQuery,
    responses={200: TenantList},
)
async def list_tenants(request: web.Request) -> web.Response:
    auth.platform(request)
    query = page_query(request, TenantListQuery)
    async with pool(request).acquire() as conn:
        after = await resolve_cursor(query, lambda i: store.tenant_cursor(conn, i))
        rows = await store.list_tenants_page(
            conn, uid=query.uid, limit=query.limit + 1, after=after
        )
    page = slice_page(rows, query.limit, lambda t: t.id)
    body = TenantList(
        data=[tenant_object(t) for t in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )
    return json_response(body.model_dump(mode="json"))


@routes.get("/internal/v1/tenants/{id}")
@operation(summary="One tenant", tag=TAG, security="platform", responses={200: TenantObject})
async def get_tenant(request: web.Request) -> web.Response:
    auth.platform(request)
    return _show(await _tenant(request))


@routes.patch("/internal/v1/tenants/{id}")
@operation(
    summary="Rename, suspend or resume a tenant",
    tag=TAG,
    security="platform",
    body=TenantPatch,
    responses={200: TenantObject},
    description="A suspended tenant's keys are refused with 403 and its deliveries wait "
    "unsent; their max age keeps counting, so those that expire meanwhile are dead-lettered "
    "as usual (replayable). Resuming sends what waited at once.",
)
async def patch_tenant(request: web.Request) -> web.Response:
    auth.platform(request)
    spec = await parse(request, TenantPatch)
    async with pool(request).acquire() as conn:
        found = await store.update_tenant(
            conn,
            request.match_info["id"],
            name=spec.name,
            suspended=spec.suspended,
            now=clock(request).now(),
        )
    if found is None:
        raise NotFound("no such tenant")
    return _show(found)


async def _finish_purge(app: web.Application, tenant_id: str) -> None:
    """The rest of a removal, in this process; the workers' maintenance loop is the backstop
    (it also takes over when workers keep deliveries in flight past this loop's patience)."""
    try:
        for _ in range(PURGE_PATIENCE):
            async with app[POOL].acquire() as conn:
                if await purge_tenant(conn, tenant_id):
                    return
            await asyncio.sleep(1)  # a worker still holds a delivery: its settle comes first
    except Exception:
        log.exception("tenant removal paused; workers resume it", extra={"tenant_id": tenant_id})


@routes.delete("/internal/v1/tenants/{id}")
@operation(
    summary="Delete a tenant and everything of it",
    tag=TAG,
    security="platform",
    responses={204: None, 202: TenantDeletion},
    description="The tenant is gone at once: its keys stop working, it is 404 here, its "
    "deliveries stop. Its rows (keys, endpoints, secrets, events, deliveries, attempts, "
    "usage) are removed in batches: 204 when that finished before the answer, 202 while "
    "it carries on in the background.",
)
async def delete_tenant(request: web.Request) -> web.Response:
    auth.platform(request)
    tenant_id = request.match_info["id"]
    async with pool(request).acquire() as conn:
        if not await store.mark_deleted(conn, tenant_id, clock(request).now()):
            raise NotFound("no such tenant")
        done = await purge_tenant(conn, tenant_id, max_batches=QUICK_PURGE_BATCHES)
    if done:
        return web.Response(status=204)
    task = asyncio.create_task(_finish_purge(request.app, tenant_id))
    request.app[PURGES].add(task)
    task.add_done_callback(request.app[PURGES].discard)
    return json_response(TenantDeletion(id=tenant_id).model_dump(mode="json"), status=202)


@routes.post("/internal/v1/tenants/{id}/keys")
@operation(
    summary="Create an API key",
    tag=TAG,
    security="platform",
    body=ApiKeyIn,
    responses={201: ApiKeyWithKey},
    description="The key is in this answer only; it is stored as a hash.",
)
async def create_key(request: web.Request) -> web.Response:
    auth.platform(request)
    spec = await parse(request, ApiKeyIn)
    tenant = await _tenant(request)
    now = clock(request).now()
    async with pool(request).acquire() as conn:
        key = await store.create_key(conn, tenant.id, spec.environment, now, spec.name)
    body = ApiKeyWithKey(
        id=key.id,
        name=spec.name,
        environment=key.environment,
        prefix=key.key[:16],
        created_at=now,
        last_used_at=None,
        key=key.key,
    )
    return json_response(body.model_dump(mode="json"), status=201)


@routes.get("/internal/v1/tenants/{id}/keys")
@operation(
    summary="List a tenant's live API keys",
    tag=TAG,
    security="platform",
    responses={200: ApiKeyList},
)
async def list_keys(request: web.Request) -> web.Response:
    auth.platform(request)
    tenant = await _tenant(request)
    async with pool(request).acquire() as conn:
        keys = await store.list_live_keys(conn, tenant.id)
    body = ApiKeyList(data=[api_key_object(k) for k in keys], has_more=False)
    return json_response(body.model_dump(mode="json"))


@routes.delete("/internal/v1/tenants/{id}/keys/{key_id}")
@operation(
    summary="Revoke an API key",
    tag=TAG,
    security="platform",
    responses={204: None},
    description="Refused from the next request on.",
)
async def revoke_key(request: web.Request) -> web.Response:
    auth.platform(request)
    tenant = await _tenant(request)
    async with pool(request).acquire() as conn:
        done = await store.revoke_tenant_key(
            conn, tenant.id, request.match_info["key_id"], clock(request).now()
        )
    if not done:
        raise NotFound("no such key")
    return web.Response(status=204)


@routes.get("/internal/v1/tenants/{id}/usage")
@operation(
    summary="Usage per day and environment",
    tag=TAG,
    security="platform",
    query=UsageQuery,
    responses={200: UsageReport},
    description="Events accepted, deliveries succeeded, failed attempts and dead letters per "
    "UTC day and environment, from counters kept as the work happens. `from` and `to` are "
    "included, at most 366 days apart; days without activity are left out.",
)
async def get_usage(request: web.Request) -> web.Response:
    auth.platform(request)
    query = page_query(request, UsageQuery)
    tenant = await _tenant(request)
    last = query.to or clock(request).now().date()
    first = query.from_ or last - timedelta(days=29)
    if first > last:
        raise ValidationFailed([FieldError("from", "must not be after 'to'")])
    if (last - first).days >= MAX_USAGE_DAYS:
        raise ValidationFailed([FieldError("from", f"at most {MAX_USAGE_DAYS} days before 'to'")])
    async with pool(request).acquire() as conn:
        rows = await store.usage(conn, tenant.id, first, last)
    body = UsageReport(
        tenant_id=tenant.id,
        from_=first,
        to=last,
        data=[UsageDay(**r.__dict__) for r in rows],
    )
    return json_response(body.model_dump(mode="json", by_alias=True))


def setup(app: web.Application) -> None:
    """Background removals live as long as the app; a stopped one resumes in the workers."""
    app[PURGES] = Purges()

    async def stop(app: web.Application) -> None:
        running: Purges = app[PURGES]
        tasks = list(running)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.on_cleanup.append(stop)
