"""Tenant routes for the delivery log, replay and retry (SPEC section 3).

Everything is scoped to the caller's tenant and environment: another tenant's endpoint or
delivery, or the other environment's, is the same 404 as one that never existed.

Decisions:
- Replay and retry answer 202: the deliveries are queued, not yet sent. They keep their
  event (same id, byte-identical body) and their attempt count (X-Delivery-Attempt keeps
  growing), are due now, and get a fresh retry window counted from the re-queue.
- Replay `status`: 'dead' (default) takes dead letters; 'failed' also takes cancelled
  deliveries and pending ones with at least one failed attempt. The range [since, until)
  is on the delivery's creation (when the event was accepted).
- Retry takes a delivery in any state but in flight (409): dead, cancelled, pending (sent
  now instead of after its backoff) and succeeded (sent again: at-least-once, same event id).
- Neither re-queues for a disabled or deleted endpoint (409): it must receive nothing.
"""

from __future__ import annotations

import asyncpg
from aiohttp import web

from api import auth
from api.context import clock, pool
from api.idempotency import idempotency_scope, tenant_scope
from api.openapi import operation
from api.pagination import page_query, resolve_cursor, slice_page
from api.responses import json_response, parse_optional
from api.schemas.deliveries import (
    DeliveryList,
    DeliveryListQuery,
    DeliveryObject,
    ReplayPreview,
    ReplayRequest,
    ReplayResult,
    delivery_object,
)
from dispatcher.errors import Conflict, NotFound
from dispatcher.ids import format_delivery_id, parse_delivery_id
from dispatcher.models import Endpoint, Principal
from dispatcher.store import deliveries as store
from dispatcher.store import endpoints as endpoint_store

routes = web.RouteTableDef()

TAG = "deliveries"


async def _endpoint(conn: asyncpg.Connection, owner: Principal, request: web.Request) -> Endpoint:
    endpoint = await endpoint_store.get_endpoint(conn, owner, request.match_info["id"])
    if endpoint is None:
        raise NotFound("no such webhook endpoint")
    return endpoint


@routes.get("/v1/webhooks/{id}/deliveries")
@operation(
    summary="The delivery log of an endpoint, newest first",
    tag=TAG,
    query=DeliveryListQuery,
    responses={200: DeliveryList},
    description="Each delivery carries its attempts (oldest first, the newest 50 at most): "
    "time, status code, duration, outcome and the first 1 KiB of the response body.",
)
async def list_deliveries(request: web.Request) -> web.Response:
    owner = await auth.tenant(request)
    query = page_query(request, DeliveryListQuery)
    async with pool(request).acquire() as conn:
        endpoint = await _endpoint(conn, owner, request)
        before = await resolve_cursor(query, lambda c: store.cursor_of(conn, endpoint.id, c))
        rows = await store.list_for_endpoint(
            conn,
            endpoint.id,
            limit=query.limit + 1,
            status=query.status,
            before=before,
            event_type=query.event_type,
            since=query.since,
            until=query.until,
        )
        page = slice_page(rows, query.limit, lambda d: format_delivery_id(d.id))
        attempts = await store.attempts_of(conn, [d.id for d in page.items])
    body = DeliveryList(
        data=[delivery_object(d, attempts.get(d.id, [])) for d in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )
    return json_response(body.model_dump(mode="json"))


@routes.post("/v1/webhooks/{id}/replay")
@operation(
    summary="Re-queue an endpoint's dead-lettered (or all failed) deliveries",
    tag=TAG,
    body=ReplayRequest,
    body_required=False,
    responses={202: ReplayResult, 200: ReplayPreview},
    errors=(409,),
    idempotent=True,
    description="Matching deliveries are due now, with the same event id and body, attempt "
    "numbers continuing, and a fresh retry window. 409 when the endpoint is disabled. "
    "With dry_run, 200 with how many would be re-queued, and nothing changes.",
)
async def replay_deliveries(request: web.Request) -> web.Response:
    owner = await auth.tenant(request)
    spec = await parse_optional(request, ReplayRequest)
    now = clock(request).now()

    async with idempotency_scope(request, tenant_scope(owner)) as scope:
        if scope.replay is not None:
            return scope.replay
        endpoint = await _endpoint(scope.conn, owner, request)
        if spec.dry_run:
            matching = await store.count_replayable(
                scope.conn, endpoint.id, scope=spec.status, since=spec.since, until=spec.until
            )
            preview = ReplayPreview(matching=matching).model_dump(mode="json")
            return await scope.answer(json_response(preview))
        if not endpoint.enabled:
            raise Conflict("the endpoint is disabled; enable it, then replay")
        count = await store.replay_endpoint(
            scope.conn, endpoint.id, scope=spec.status, since=spec.since, until=spec.until, now=now
        )
        result = ReplayResult(replayed=count).model_dump(mode="json")
        return await scope.answer(json_response(result, status=202))


@routes.post("/v1/deliveries/{id}/retry")
@operation(
    summary="Re-queue one delivery now",
    tag=TAG,
    responses={202: DeliveryObject},
    errors=(409,),
    idempotent=True,
    description="Dead, cancelled, pending and succeeded deliveries are sent again now, with "
    "the same event id and body; 409 while it is in flight or when its endpoint is disabled "
    "or deleted.",
)
async def retry_delivery(request: web.Request) -> web.Response:
    owner = await auth.tenant(request)
    delivery_id = parse_delivery_id(request.match_info["id"])
    if delivery_id is None:
        raise NotFound("no such delivery")
    now = clock(request).now()

    async with idempotency_scope(request, tenant_scope(owner)) as scope:
        if scope.replay is not None:
            return scope.replay
        delivery = await store.retry_delivery(scope.conn, owner, delivery_id, now)
        attempts = await store.attempts_of(scope.conn, [delivery.id])
        shown = delivery_object(delivery, attempts.get(delivery.id, []))
        return await scope.answer(json_response(shown.model_dump(mode="json"), status=202))
