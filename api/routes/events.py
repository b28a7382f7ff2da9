"""Tenant routes for the event log: an event, or one mailing's events, with delivery status.

Scoped by tenant and environment, like every tenant route: another tenant's event is a 404.
Test events (POST /v1/webhooks/{id}/test) are never stored, so they are not found here.
"""

from __future__ import annotations

from aiohttp import web

from api import auth
from api.context import pool
from api.openapi import operation
from api.pagination import page_query, resolve_cursor, slice_page
from api.responses import json_response
from api.schemas.events import EventList, EventListQuery, EventObject, event_object
from dispatcher.errors import NotFound
from dispatcher.store import deliveries as delivery_store
from dispatcher.store import events as store

routes = web.RouteTableDef()

TAG = "events"


@routes.get("/v1/events")
@operation(
    summary="The events of one mailing, newest first",
    tag=TAG,
    query=EventListQuery,
    responses={200: EventList},
    description="`mailing_id` is required. Each event carries its delivery status at every "
    "endpoint it was fanned out to.",
)
async def list_events(request: web.Request) -> web.Response:
    owner = await auth.tenant(request)
    query = page_query(request, EventListQuery)
    async with pool(request).acquire() as conn:
        after = await resolve_cursor(
            query, lambda c: store.event_cursor(conn, owner, query.mailing_id, c)
        )
        rows = await store.list_mailing_events(
            conn, owner, query.mailing_id, limit=query.limit + 1, after=after
        )
        page = slice_page(rows, query.limit, lambda e: e.id)
        deliveries = await delivery_store.for_events(conn, [e.id for e in page.items])
    body = EventList(
        data=[event_object(e, deliveries.get(e.id, [])) for e in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )
    return json_response(body.model_dump(mode="json"))


@routes.get("/v1/events/{event_id}")
@operation(
    summary="One event with its delivery status per endpoint",
    tag=TAG,
    responses={200: EventObject},
)
async def get_event(request: web.Request) -> web.Response:
    owner = await auth.tenant(request)
    async with pool(request).acquire() as conn:
        event = await store.get_event(conn, owner, request.match_info["event_id"])
        if event is None:
            raise NotFound("no such event")
        deliveries = await delivery_store.for_events(conn, [event.id])
    return json_response(event_object(event, deliveries.get(event.id, [])).model_dump(mode="json"))
