"""Tenant routes for webhook endpoints (SPEC section 3) and the event-type catalog.

Every lookup is scoped to the caller's tenant and environment by the store, so another
tenant's endpoint, or the other environment's, is the same 404 as one that never existed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api import auth
from api.context import clock, pool, settings
from api.examples import example_event
from api.idempotency import idempotency_scope, tenant_scope
from api.openapi import operation
from api.pagination import PageQuery, page_query, resolve_cursor, slice_page
from api.responses import field_errors, json_response, parse_optional, read_json
from api.schemas.webhooks import (
    EndpointCreate,
    EndpointDetail,
    EndpointList,
    EndpointObject,
    EndpointUpdate,
    EndpointWithSecret,
    EventType,
    EventTypeList,
    RotateSecret,
    endpoint_detail,
    endpoint_object,
    endpoint_with_secret,
)
from api.urls import checked_url
from dispatcher.errors import FieldError, NotFound, ValidationFailed
from dispatcher.models import Endpoint, Principal
from dispatcher.queue import QueueLimits
from dispatcher.store import endpoints as store
from dispatcher.transitions import EVENT_TYPE_CATALOG

routes = web.RouteTableDef()

M = TypeVar("M", bound=BaseModel)
TAG = "webhooks"
SECRET_FIELDS = ("secret",)  # shown once: never kept in a stored Idempotency-Key answer


def _validated(request: web.Request, model: type[M], data: Any, owner: Principal) -> M:
    """Schema and URL rules together, so one 422 lists every problem of the body."""
    if not isinstance(data, dict):
        raise ValidationFailed([FieldError("body", "a JSON object is expected")])
    errors: list[FieldError] = []
    parsed: M | None = None
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
    url = data.get("url")
    stored: str | None = None
    if isinstance(url, str) and not any(e.field == "url" for e in errors):
        config = settings(request)
        stored, problems = checked_url(
            url,
            environment=owner.environment,
            require_https=config.require_https,
            allow_private_targets=config.allow_private_targets,
        )
        errors += problems
    if errors or parsed is None:
        raise ValidationFailed(errors)
    if stored is not None:  # kept in the form delivery reads it: IDNA host, encoded path
        parsed = parsed.model_copy(update={"url": stored})
    return parsed


def _not_found() -> NotFound:
    return NotFound("no such webhook endpoint")


def _show(model: BaseModel, status: int = 200) -> web.Response:
    return json_response(model.model_dump(mode="json"), status=status)


@routes.post("/v1/webhooks")
@operation(
    summary="Create a webhook endpoint",
    tag=TAG,
    body=EndpointCreate,
    responses={201: EndpointWithSecret},
    idempotent=True,
    description="The answer carries the signing secret: the only time it is shown "
    "(an ed25519 endpoint has no secret: the answer shows its public_key).",
)
async def create_webhook(request: web.Request) -> web.Response:
    owner = await auth.tenant(request)
    spec = _validated(request, EndpointCreate, await read_json(request), owner)
    now = clock(request).now()
    async with idempotency_scope(request, tenant_scope(owner), omit=SECRET_FIELDS) as scope:
        if scope.replay is not None:
            return scope.replay
        endpoint = await store.create_endpoint(
            scope.conn,
            owner,
            url=spec.url,
            event_types=spec.events,
            secret=spec.secret,
            now=now,
            description=spec.description,
            enabled=spec.enabled,
            metadata=spec.metadata,
            standard_webhooks=spec.standard_webhooks,
            signing=spec.signing,
            rate_limit_per_second=spec.rate_limit_per_second,
            ordering=spec.ordering,
        )
        return await scope.answer(_show(endpoint_with_secret(endpoint), status=201))


@routes.get("/v1/webhooks")
@operation(
    summary="List webhook endpoints, newest first",
    tag=TAG,
    query=PageQuery,
    responses={200: EndpointList},
)
async def list_webhooks(request: web.Request) -> web.Response:
    owner = await auth.tenant(request)
    query = page_query(request, PageQuery)
    async with pool(request).acquire() as conn:
        after = await resolve_cursor(query, lambda i: store.endpoint_cursor(conn, owner, i))
        rows = await store.list_endpoints(conn, owner, limit=query.limit + 1, after=after)
    page = slice_page(rows, query.limit, lambda e: e.id)
    body = EndpointList(
        data=[endpoint_object(e) for e in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )
    return _show(body)


@routes.get("/v1/webhooks/{id}")
@operation(
    summary="Get a webhook endpoint, with its live delivery state",
    tag=TAG,
    responses={200: EndpointDetail},
    description="`delivery_state` shows the circuit, the current concurrency limit, the "
    "requests in flight and the deliveries waiting, as all worker processes share them.",
)
async def get_webhook(request: web.Request) -> web.Response:
    owner = await auth.tenant(request)
    config = settings(request)
    async with pool(request).acquire() as conn:
        endpoint = await store.get_endpoint(conn, owner, request.match_info["id"])
        if endpoint is None:
            raise _not_found()
        state = await store.delivery_state(
            conn,
            endpoint.id,
            clock(request).now(),
            QueueLimits.from_settings(config),
        )
    if state is None:  # deleted in between
        raise _not_found()
    return _show(endpoint_detail(endpoint, state))


async def _update(request: web.Request) -> web.Response:
    owner = await auth.tenant(request)
    spec = _validated(request, EndpointUpdate, await read_json(request), owner)
    endpoint_id = request.match_info["id"]
    changes = store.EndpointChanges(
        url=spec.url,
        description=spec.description,
        clear_description=spec.clears_description(),
        event_types=spec.events,
        enabled=spec.enabled,
        metadata=spec.metadata,
        standard_webhooks=spec.standard_webhooks,
        ordering=spec.ordering,
        set_rate_limit=spec.sets_rate_limit(),
        rate_limit_per_second=spec.rate_limit_per_second,
    )
    endpoint: Endpoint | None
    async with pool(request).acquire() as conn:
        if spec.model_fields_set:
            now = clock(request).now()
            endpoint = await store.update_endpoint(conn, owner, endpoint_id, changes, now)
        else:  # nothing to change: do not bump updated_at
            endpoint = await store.get_endpoint(conn, owner, endpoint_id)
    if endpoint is None:
        raise _not_found()
    return _show(endpoint_object(endpoint))


_UPDATE = operation(
    summary="Update a webhook endpoint",
    tag=TAG,
    body=EndpointUpdate,
    responses={200: EndpointObject},
    description="Only the fields given change; `description: null` clears it. "
    "Disabling cancels the endpoint's pending deliveries; enabling clears disabled_reason.",
)


@routes.patch("/v1/webhooks/{id}")
@_UPDATE
async def update_webhook(request: web.Request) -> web.Response:
    return await _update(request)


@routes.put("/v1/webhooks/{id}")
@replace(_UPDATE, summary="Update a webhook endpoint (same partial semantics as PATCH)")
async def replace_webhook(request: web.Request) -> web.Response:
    return await _update(request)


@routes.delete("/v1/webhooks/{id}")
@operation(
    summary="Delete a webhook endpoint",
    tag=TAG,
    responses={204: None},
    description="Its pending deliveries are cancelled; its delivery history stays readable.",
)
async def delete_webhook(request: web.Request) -> web.Response:
    owner = await auth.tenant(request)
    async with pool(request).acquire() as conn:
        deleted = await store.delete_endpoint(
            conn, owner, request.match_info["id"], clock(request).now()
        )
    if not deleted:
        raise _not_found()
    return web.Response(status=204)


@routes.post("/v1/webhooks/{id}/rotate-secret")
@operation(
    summary="Rotate the signing secret",
    tag=TAG,
    body=RotateSecret,
    body_required=False,
    responses={200: EndpointWithSecret},
    idempotent=True,
    description="The new secret is returned once. Previous secrets keep signing alongside "
    "it (one v1= each, oldest first, the newest last) for overlap_seconds. An ed25519 "
    "endpoint gets a new key pair instead: the answer shows its new public_key, and the "
    "previous keys keep signing (one v1a each) for overlap_seconds.",
)
async def rotate_webhook_secret(request: web.Request) -> web.Response:
    owner = await auth.tenant(request)
    spec = await parse_optional(request, RotateSecret)
    overlap = spec.overlap_seconds
    if overlap is None:
        overlap = settings(request).secret_overlap_seconds
    endpoint_id = request.match_info["id"]
    now = clock(request).now()
    async with idempotency_scope(request, tenant_scope(owner), omit=SECRET_FIELDS) as scope:
        if scope.replay is not None:
            return scope.replay
        endpoint = await store.rotate_secret(
            scope.conn, owner, endpoint_id, spec.secret, overlap, now
        )
        if endpoint is None:
            raise _not_found()
        return await scope.answer(_show(endpoint_with_secret(endpoint)))


@routes.get("/v1/event-types")
@operation(
    summary="The event-type catalog",
    tag="events",
    responses={200: EventTypeList},
    description="Names usable in an endpoint's `events`, besides '*' and 'mailing.*'.",
)
async def list_event_types(request: web.Request) -> web.Response:
    await auth.tenant(request)
    catalog = [
        EventType(name=e["name"], description=e["description"], example=example_event(e["name"]))
        for e in EVENT_TYPE_CATALOG
    ]
    return _show(EventTypeList(data=catalog, has_more=False))
