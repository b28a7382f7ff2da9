"""The delivery log, replay and retry, against a real database, worker and receiver."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from dispatcher.db import queries
from tests.conftest import TenantKeys, make_settings
from tests.queue_state import endpoint_ids_of, force_status

Client = TestClient[Any, Any]
MakeTenant = Callable[..., Awaitable[TenantKeys]]
AppClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def api(app_client: AppClient) -> Client:
    return await app_client()


@pytest.fixture
async def acme(make_tenant: MakeTenant) -> TenantKeys:
    return await make_tenant("ACME")


async def get_json(client: Client, path: str, keys: TenantKeys, status: int = 200) -> Any:
    response = await client.get(path, headers=keys.headers())
    assert response.status == status, await response.text()
    return await response.json()


async def post_json(
    client: Client, path: str, keys: TenantKeys, body: Any = None, status: int = 202
) -> Any:
    response = await client.post(path, json=body, headers=keys.headers())
    assert response.status == status, await response.text()
    return await response.json()


def log_path(endpoint: Any, query: str = "") -> str:
    return f"/v1/webhooks/{endpoint.id}/deliveries{query}"


async def dead_delivery(world: Any, tenant: TenantKeys, path: str = "/dead") -> Any:
    """An endpoint whose only delivery is dead: the receiver fails, the max age is tiny."""
    endpoint = await world.endpoint(tenant, path)
    world.receiver.script(path, 500)
    await world.emit(tenant, "ml_dead", "created")
    assert await world.drain(max_age_seconds=10) == 1
    assert await world.statuses(endpoint) == ["dead"]
    return endpoint


# ---- the log ------------------------------------------------------------------------------


async def test_log_shows_every_attempt_with_code_and_excerpt(
    world: Any, api: Client, acme: TenantKeys
) -> None:
    endpoint = await world.endpoint(acme, "/flaky")
    world.receiver.script("/flaky", 500, 200, body=b"E" * 3000)
    event_id = await world.emit(acme, "ml_1", "delivered")
    assert await world.drain() == 1

    (pending,) = (await get_json(api, log_path(endpoint), acme))["data"]
    assert pending["id"].startswith("dlv_")
    assert pending["status"] == "pending"
    assert pending["event_id"] == event_id
    assert pending["event_type"] == "mailing.delivered"
    assert pending["attempt_count"] == 1
    assert datetime.fromisoformat(pending["next_attempt_at"]) > world.clock.now()
    assert pending["completed_at"] is None
    (first,) = pending["attempts"]
    assert first["attempt"] == 1
    assert first["status_code"] == 500
    assert first["outcome"] == first["error_class"] == "http_5xx"
    assert first["error"] == "HTTP 500"
    assert first["response_body"] == "E" * 1024
    assert first["duration_ms"] >= 0

    world.clock.advance(60)
    assert await world.drain() == 1
    (done,) = (await get_json(api, log_path(endpoint), acme))["data"]
    assert done["status"] == "succeeded"
    assert done["attempt_count"] == 2
    assert done["next_attempt_at"] is None
    assert done["completed_at"] is not None
    assert done["last_status_code"] == 200
    assert [a["status_code"] for a in done["attempts"]] == [500, 200]
    assert [a["attempt"] for a in done["attempts"]] == [1, 2]
    assert done["attempts"][1]["error_class"] is None
    assert done["attempts"][1]["outcome"] == "success"
    assert [r.headers["X-Delivery-Attempt"] for r in world.receiver.at("/flaky")] == ["1", "2"]


async def test_status_filter_and_pages(world: Any, api: Client, acme: TenantKeys) -> None:
    endpoint = await world.endpoint(acme, "/paged")
    other = await world.endpoint(acme, "/other")
    for n in range(5):
        await world.emit(acme, f"ml_{n}", "created")
    ids = await world.delivery_ids(endpoint)
    async with world.pool.acquire() as conn:
        await force_status(conn, [ids[0], ids[3]], "dead", world.clock.now())

    everything = await get_json(api, log_path(endpoint), acme)
    assert [d["id"] for d in everything["data"]] == [f"dlv_{i}" for i in reversed(ids)]
    assert everything["has_more"] is False and everything["next_cursor"] is None

    dead = await get_json(api, log_path(endpoint, "?status=dead"), acme)
    assert [d["id"] for d in dead["data"]] == [f"dlv_{ids[3]}", f"dlv_{ids[0]}"]
    pending = await get_json(api, log_path(endpoint, "?status=pending"), acme)
    assert len(pending["data"]) == 3
    assert all(d["next_attempt_at"] is not None for d in pending["data"])
    assert (await get_json(api, log_path(endpoint, "?status=succeeded"), acme))["data"] == []

    seen: list[str] = []
    query = "?limit=2"
    while True:
        page = await get_json(api, log_path(endpoint, query), acme)
        seen += [d["id"] for d in page["data"]]
        if not page["has_more"]:
            break
        assert len(page["data"]) == 2
        query = f"?limit=2&starting_after={page['next_cursor']}"
    assert seen == [f"dlv_{i}" for i in reversed(ids)]

    filtered = await get_json(api, log_path(endpoint, "?status=pending&limit=2"), acme)
    rest = await get_json(
        api,
        log_path(endpoint, f"?status=pending&limit=2&starting_after={filtered['next_cursor']}"),
        acme,
    )
    assert [d["id"] for d in filtered["data"] + rest["data"]] == [
        f"dlv_{i}" for i in (ids[4], ids[2], ids[1])
    ]

    foreign = (await world.delivery_ids(other))[0]
    for bad in ("?status=gone", "?limit=0", f"?starting_after=dlv_{foreign}", "?starting_after=x"):
        body = await get_json(api, log_path(endpoint, bad), acme, status=422)
        assert body["error"]["type"] == "validation_error"
    body = await get_json(api, log_path(endpoint, "?status=gone&limit=500"), acme, status=422)
    assert {e["field"] for e in body["error"]["errors"]} == {"status", "limit"}


async def test_attempts_of_a_page_come_in_one_query(
    world: Any, acme: TenantKeys, database_url: str, clock: Any, http_session: Any
) -> None:
    """A full page costs a fixed number of statements, not one per delivery."""
    endpoint = await world.endpoint(acme, "/many")
    world.receiver.script("/many", 503)
    for n in range(4):  # below the circuit breaker's threshold of 5 failures
        await world.emit(acme, f"ml_{n}", "created")
    await world.drain()
    world.clock.advance(60)
    await world.drain()

    statements: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: statements.append(record.query))

    counting = await asyncpg.create_pool(database_url, min_size=1, max_size=2, init=log_queries)
    app = create_app(
        make_settings(), counting, clock=clock, services={"test_session": http_session}
    )
    try:
        async with TestClient(TestServer(app)) as api:
            page = await get_json(api, log_path(endpoint), acme)
    finally:
        await counting.close()
    assert len(page["data"]) == 4
    assert all(len(d["attempts"]) == 2 for d in page["data"])
    ours = [q for q in statements if q in vars(queries).values()]  # not type introspection
    assert ours == [
        queries.AUTHENTICATE_KEY,
        queries.TOUCH_API_KEY,  # the key's first use this minute is noted, once
        queries.GET_ENDPOINT,
        queries.LIST_ENDPOINT_DELIVERIES,
        queries.ATTEMPTS_OF_DELIVERIES,
    ]


# ---- replay -------------------------------------------------------------------------------


async def test_replay_requeues_dead_with_same_event_and_body(
    world: Any, api: Client, acme: TenantKeys
) -> None:
    endpoint = await dead_delivery(world, acme)
    (first,) = world.receiver.at("/dead")

    answer = await post_json(api, f"/v1/webhooks/{endpoint.id}/replay", acme, {})
    assert answer == {"replayed": 1}
    (queued,) = (await get_json(api, log_path(endpoint), acme))["data"]
    assert queued["status"] == "pending"
    assert queued["replayed_at"] is not None
    assert queued["completed_at"] is None

    world.receiver.script("/dead", 200)
    assert await world.drain() == 1
    again = world.receiver.at("/dead")[-1]
    assert again.headers["X-Event-Id"] == first.headers["X-Event-Id"]
    assert again.body == first.body
    assert again.headers["X-Delivery-Attempt"] == "2"
    assert await world.statuses(endpoint) == ["succeeded"]
    # nothing dead is left: a second replay finds nothing
    assert await post_json(api, f"/v1/webhooks/{endpoint.id}/replay", acme) == {"replayed": 0}


async def test_replay_range_and_scope(world: Any, api: Client, acme: TenantKeys) -> None:
    endpoint = await dead_delivery(world, acme)
    path = f"/v1/webhooks/{endpoint.id}/replay"
    created = world.clock.now()
    before = (created - timedelta(hours=1)).isoformat()
    after = (created + timedelta(seconds=1)).isoformat()
    assert await post_json(api, path, acme, {"until": before}) == {"replayed": 0}
    assert await post_json(api, path, acme, {"since": after}) == {"replayed": 0}
    async with world.pool.acquire() as conn:  # cancelled: only "failed" takes it
        await force_status(
            conn, await endpoint_ids_of(conn, endpoint.id), "cancelled", world.clock.now()
        )
    assert await post_json(api, path, acme, {"since": before, "until": after}) == {"replayed": 0}
    body = {"since": before, "until": after, "status": "failed"}
    assert await post_json(api, path, acme, body) == {"replayed": 1}
    assert await world.statuses(endpoint) == ["pending"]


async def test_replay_validation_and_disabled_endpoint(
    world: Any, api: Client, acme: TenantKeys
) -> None:
    endpoint = await dead_delivery(world, acme)
    path = f"/v1/webhooks/{endpoint.id}/replay"
    for body, fields in (
        ({"since": "yesterday"}, {"since"}),
        ({"since": 1747000000}, {"since"}),
        ({"since": "2026-05-11T08:00:00"}, {"since"}),  # no zone: ambiguous
        ({"since": "2026-05-11T09:00:00Z", "until": "2026-05-11T08:00:00Z"}, {"until"}),
        ({"status": "everything", "extra": 1}, {"status", "extra"}),
    ):
        answer = await post_json(api, path, acme, body, status=422)
        assert {e["field"] for e in answer["error"]["errors"]} == fields, body
    async with world.pool.acquire() as conn:
        await conn.execute("UPDATE endpoints SET enabled = false WHERE id = $1", endpoint.id)
    answer = await post_json(api, path, acme, {}, status=409)
    assert answer["error"]["type"] == "conflict"
    assert await world.statuses(endpoint) == ["dead"]


async def test_replayed_delivery_gets_a_fresh_retry_window(
    world: Any, api: Client, acme: TenantKeys
) -> None:
    endpoint = await world.endpoint(acme, "/down")
    world.receiver.script("/down", 500)
    await world.emit(acme, "ml_1", "created")
    await world.drain(max_age_seconds=100)
    world.clock.advance(200)
    await world.drain(max_age_seconds=100)
    assert await world.statuses(endpoint) == ["dead"]
    assert await post_json(api, f"/v1/webhooks/{endpoint.id}/replay", acme) == {"replayed": 1}
    await world.drain(max_age_seconds=100)  # attempt 2 fails, 200 s after the event
    (delivery,) = (await get_json(api, log_path(endpoint), acme))["data"]
    assert delivery["attempt_count"] == 2  # it died by the clock, not by an attempt
    assert delivery["status"] == "pending"
    wait = datetime.fromisoformat(delivery["next_attempt_at"]) - world.clock.now()
    assert wait <= timedelta(seconds=30)  # the first backoff step again


# ---- retry --------------------------------------------------------------------------------


async def test_retry_one_delivery(world: Any, api: Client, acme: TenantKeys) -> None:
    endpoint = await dead_delivery(world, acme)
    (delivery_id,) = await world.delivery_ids(endpoint)
    path = f"/v1/deliveries/dlv_{delivery_id}/retry"

    shown = await post_json(api, path, acme)
    assert shown["id"] == f"dlv_{delivery_id}"
    assert shown["status"] == "pending"
    assert shown["attempt_count"] == 1
    assert len(shown["attempts"]) == 1
    assert datetime.fromisoformat(shown["next_attempt_at"]) == world.clock.now()

    world.receiver.script("/dead", 200)
    assert await world.drain() == 1
    first, second = world.receiver.at("/dead")
    assert second.body == first.body
    assert second.headers["X-Event-Id"] == first.headers["X-Event-Id"]
    assert second.headers["X-Delivery-Attempt"] == "2"

    # succeeded: sent again on request (at-least-once, same event id)
    assert (await post_json(api, path, acme))["status"] == "pending"
    assert await world.drain() == 1
    assert world.receiver.at("/dead")[-1].body == first.body


async def test_retry_refusals(world: Any, api: Client, acme: TenantKeys) -> None:
    endpoint = await dead_delivery(world, acme)
    (delivery_id,) = await world.delivery_ids(endpoint)
    path = f"/v1/deliveries/dlv_{delivery_id}/retry"
    async with world.pool.acquire() as conn:
        await force_status(conn, [delivery_id], "in_flight", world.clock.now())
    assert (await post_json(api, path, acme, status=409))["error"]["type"] == "conflict"
    async with world.pool.acquire() as conn:
        await force_status(conn, [delivery_id], "dead", world.clock.now())
        await conn.execute("UPDATE endpoints SET enabled = false WHERE id = $1", endpoint.id)
    answer = await post_json(api, path, acme, status=409)
    assert "disabled" in answer["error"]["message"]
    assert await world.statuses(endpoint) == ["dead"]
    for bad in ("dlv_abc", "dlv_99999999999999999999", "42", "dlv_0", f"dlv_{delivery_id + 1}"):
        answer = await post_json(api, f"/v1/deliveries/{bad}/retry", acme, status=404)
        assert answer["error"]["type"] == "not_found"


# ---- isolation ----------------------------------------------------------------------------


async def test_other_tenants_and_environments_get_404_everywhere(
    world: Any, api: Client, acme: TenantKeys, make_tenant: MakeTenant
) -> None:
    endpoint = await dead_delivery(world, acme)
    (delivery_id,) = await world.delivery_ids(endpoint)
    intruder = await make_tenant("Intruder")
    production = {"Authorization": f"Bearer {acme.production}"}
    for headers in (intruder.headers(), intruder.headers("production"), production):
        for method, path in (
            ("GET", log_path(endpoint)),
            ("POST", f"/v1/webhooks/{endpoint.id}/replay"),
            ("POST", f"/v1/webhooks/{endpoint.id}/test"),
            ("POST", f"/v1/deliveries/dlv_{delivery_id}/retry"),
        ):
            response = await api.request(method, path, headers=headers)
            assert response.status == 404, (method, path, await response.text())
            assert (await response.json())["error"]["type"] == "not_found"
    assert await world.statuses(endpoint) == ["dead"]
    assert len(world.receiver.at("/dead")) == 1
    response = await api.get(log_path(endpoint))
    assert response.status == 401


# ---- filters by event type and time, replay dry run (the portal's log and replay) ------------


async def test_event_type_and_time_range_filters(world: Any, api: Client, acme: TenantKeys) -> None:
    endpoint = await world.endpoint(acme, "/filtered")
    await world.emit(acme, "ml_1", "created")
    world.clock.advance(3600)
    middle = world.clock.now()
    await world.emit(acme, "ml_2", "created")
    await world.emit(acme, "ml_1", "paid")
    world.clock.advance(3600)
    late = world.clock.now()
    await world.emit(acme, "ml_2", "paid")
    ids = [f"dlv_{i}" for i in await world.delivery_ids(endpoint)]

    def shown(page: Any) -> list[str]:
        return [d["id"] for d in page["data"]]

    paid = await get_json(api, log_path(endpoint, "?event_type=mailing.paid"), acme)
    assert shown(paid) == [ids[3], ids[2]]
    since = middle.isoformat().replace("+00:00", "Z")
    until = late.isoformat().replace("+00:00", "Z")
    window = await get_json(api, log_path(endpoint, f"?since={since}&until={until}"), acme)
    assert shown(window) == [ids[2], ids[1]]
    both = await get_json(
        api, log_path(endpoint, f"?event_type=mailing.created&since={since}"), acme
    )
    assert shown(both) == [ids[1]]
    paged = await get_json(api, log_path(endpoint, f"?since={since}&limit=1"), acme)
    assert shown(paged) == [ids[3]] and paged["has_more"]
    rest = await get_json(
        api, log_path(endpoint, f"?since={since}&limit=5&starting_after={ids[3]}"), acme
    )
    assert shown(rest) == [ids[2], ids[1]]
    backwards = await api.get(
        log_path(endpoint, f"?since={until}&until={since}"), headers=acme.headers()
    )
    assert backwards.status == 422
    assert (await backwards.json())["error"]["errors"][0]["field"] == "until"


async def test_replay_dry_run_counts_and_changes_nothing(
    world: Any, api: Client, acme: TenantKeys
) -> None:
    endpoint = await dead_delivery(world, acme)
    path = f"/v1/webhooks/{endpoint.id}/replay"
    preview = await post_json(api, path, acme, {"dry_run": True}, status=200)
    assert preview == {"matching": 1}
    assert await world.statuses(endpoint) == ["dead"]
    future = (world.clock.now() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    empty = await post_json(api, path, acme, {"dry_run": True, "since": future}, status=200)
    assert empty == {"matching": 0}
    assert await post_json(api, path, acme, {}) == {"replayed": 1}
    assert await post_json(api, path, acme, {"dry_run": True}, status=200) == {"matching": 0}


async def test_the_catalog_shows_an_example_body_per_type(api: Client, acme: TenantKeys) -> None:
    catalog = (await get_json(api, "/v1/event-types", acme))["data"]
    assert len(catalog) == 10
    for entry in catalog:
        example = entry["example"]
        assert example["event_type"] == entry["name"]
        assert set(example) == {"data", "event_id", "event_type", "occurred_at"}
    delivered = next(e for e in catalog if e["name"] == "mailing.delivered")["example"]
    assert delivered["data"]["status"] == "delivered"
