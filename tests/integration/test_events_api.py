"""The event log: one event, or a mailing's events, with their delivery status per endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import TenantKeys

Client = TestClient[Any, Any]
MakeTenant = Callable[..., Awaitable[TenantKeys]]


@pytest.fixture
async def api(app_client: Callable[..., Awaitable[Client]]) -> Client:
    return await app_client()


@pytest.fixture
async def acme(make_tenant: MakeTenant) -> TenantKeys:
    return await make_tenant("ACME")


async def get_json(
    client: Client, path: str, headers: dict[str, str], status: int = 200
) -> dict[str, Any]:
    response = await client.get(path, headers=headers)
    assert response.status == status, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_event_with_delivery_status_per_endpoint(
    world: Any, api: Client, acme: TenantKeys
) -> None:
    every = await world.endpoint(acme, "/every")
    failing = await world.endpoint(acme, "/failing", events=["mailing.delivered"])
    await world.endpoint(acme, "/other-type", events=["mailing.failed"])
    world.receiver.script("/failing", 500)
    event_id = await world.emit(acme, "ml_1", "delivered")
    assert await world.drain() == 2

    event = await get_json(api, f"/v1/events/{event_id}", acme.headers())
    assert event["event_id"] == event_id
    assert event["object"] == "event"
    assert event["event_type"] == "mailing.delivered"
    assert event["mailing_id"] == "ml_1"
    assert event["data"] == {"mailing_id": "ml_1", "status": "delivered"}
    assert event["occurred_at"] and event["created_at"]
    (sent,) = world.receiver.at("/every")
    assert event["data"] == orjson.loads(sent.body)["data"]

    by_endpoint = {d["endpoint_id"]: d for d in event["deliveries"]}
    assert set(by_endpoint) == {every.id, failing.id}
    ok, bad = by_endpoint[every.id], by_endpoint[failing.id]
    assert ok["status"] == "succeeded"
    assert ok["attempt_count"] == 1
    assert ok["last_status_code"] == 200
    assert ok["delivery_id"].startswith("dlv_")
    assert ok["next_attempt_at"] is None and ok["completed_at"] is not None
    assert bad["status"] == "pending"
    assert bad["last_status_code"] == 500
    assert bad["last_outcome"] == "http_5xx"
    assert bad["next_attempt_at"] is not None


async def test_mailing_events_newest_first_in_pages(
    world: Any, api: Client, acme: TenantKeys
) -> None:
    await world.endpoint(acme, "/all")
    emitted = []
    for status in ("created", "paid", "printed", "delivered"):
        emitted.append(await world.emit(acme, "ml_7", status))
        world.clock.advance(1)
    await world.emit(acme, "ml_other", "created")

    page = await get_json(api, "/v1/events?mailing_id=ml_7", acme.headers())
    assert [e["event_id"] for e in page["data"]] == list(reversed(emitted))
    assert [e["data"]["status"] for e in page["data"]] == [
        "delivered",
        "printed",
        "paid",
        "created",
    ]
    assert all(len(e["deliveries"]) == 1 for e in page["data"])
    assert page["has_more"] is False

    seen: list[str] = []
    query = "mailing_id=ml_7&limit=3"
    while True:
        page = await get_json(api, f"/v1/events?{query}", acme.headers())
        seen += [e["event_id"] for e in page["data"]]
        if not page["has_more"]:
            break
        query = f"mailing_id=ml_7&limit=3&starting_after={page['next_cursor']}"
    assert seen == list(reversed(emitted))

    empty = await get_json(api, "/v1/events?mailing_id=ml_never", acme.headers())
    assert empty["data"] == [] and empty["has_more"] is False


async def test_list_needs_a_mailing_id_and_a_cursor_of_that_mailing(
    world: Any, api: Client, acme: TenantKeys
) -> None:
    other = await world.emit(acme, "ml_other", "created")
    body = await get_json(api, "/v1/events", acme.headers(), status=422)
    assert [e["field"] for e in body["error"]["errors"]] == ["mailing_id"]
    body = await get_json(
        api, f"/v1/events?mailing_id=ml_7&starting_after={other}", acme.headers(), status=422
    )
    assert [e["field"] for e in body["error"]["errors"]] == ["starting_after"]
    await get_json(api, "/v1/events/evt_unknown", acme.headers(), status=404)


async def test_events_are_scoped_by_tenant_and_environment(
    world: Any, api: Client, acme: TenantKeys, make_tenant: MakeTenant
) -> None:
    event_id = await world.emit(acme, "ml_1", "created")
    production_id = await world.emit(acme, "ml_1", "created", env="production")
    intruder = await make_tenant("Intruder")
    production = {"Authorization": f"Bearer {acme.production}"}
    for headers in (intruder.headers(), intruder.headers("production"), production):
        body = await get_json(api, f"/v1/events/{event_id}", headers, status=404)
        assert body["error"]["type"] == "not_found"
    for headers in (intruder.headers(), intruder.headers("production")):
        listed = await get_json(api, "/v1/events?mailing_id=ml_1", headers)
        assert listed["data"] == []
    own = await get_json(api, "/v1/events?mailing_id=ml_1", production)
    assert [e["event_id"] for e in own["data"]] == [production_id]
    sandbox = await get_json(api, "/v1/events?mailing_id=ml_1", acme.headers())
    assert [e["event_id"] for e in sandbox["data"]] == [event_id]
