"""Platform administration over HTTP: tenants, their keys and their usage, against a real
database, a real worker and a real receiver."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from api.routes import tenants_admin
from dispatcher.db import queries
from dispatcher.tenant_purge import purge_tenant
from tests.conftest import PLATFORM_TOKEN
from tests.integration.conftest import Client, World
from tests.queue_state import force_status

AUTH = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
TENANTS = "/internal/v1/tenants"


async def call(
    client: Client, method: str, path: str, status: int, body: Any = None, **kw: Any
) -> Any:
    response = await client.request(method, path, json=body, headers=kw.pop("headers", AUTH))
    text = await response.text()
    assert response.status == status, text
    return await response.json() if text else None


async def new_tenant(client: Client, name: str = "ACME", uid: str | None = None) -> Any:
    body = {"name": name} | ({"uid": uid} if uid else {})
    return await call(client, "POST", TENANTS, 201, body)


async def new_key(client: Client, tenant_id: str, environment: str = "sandbox") -> Any:
    body = {"environment": environment, "name": "backend"}
    return await call(client, "POST", f"{TENANTS}/{tenant_id}/keys", 201, body)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    async with pool.acquire() as conn:
        found: int = await conn.fetchval(sql, *args)
    return found


# ---- tenants -------------------------------------------------------------------------------


async def test_create_is_idempotent_on_uid(client: Client) -> None:
    first = await new_tenant(client, "ACME", uid="cust_1")
    assert first["object"] == "tenant" and first["id"].startswith("ten_")
    assert (first["uid"], first["name"], first["suspended"]) == ("cust_1", "ACME", False)
    again = await call(client, "POST", TENANTS, 200, {"name": "ACME", "uid": "cust_1"})
    assert again == first
    clash = await call(client, "POST", TENANTS, 409, {"name": "Other", "uid": "cust_1"})
    assert clash["error"]["type"] == "conflict"
    assert [e["field"] for e in clash["error"]["errors"]] == ["uid"]
    # without a uid, every POST is a new tenant
    a, b = await new_tenant(client, "Same"), await new_tenant(client, "Same")
    assert a["id"] != b["id"] and a["uid"] is None


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"name"}),
        ({"name": ""}, {"name"}),
        ({"name": "   "}, {"name"}),
        ({"name": "x" * 201}, {"name"}),
        ({"name": "a\x00b"}, {"name"}),
        ({"name": 5}, {"name"}),
        ({"name": "ok", "uid": "with space"}, {"uid"}),
        ({"name": "ok", "uid": ""}, {"uid"}),
        ({"name": "ok", "uid": "é"}, {"uid"}),
        ({"name": "ok", "plan": "gold"}, {"plan"}),
    ],
)
async def test_create_refuses_bad_input_by_field(
    client: Client, body: Any, fields: set[str]
) -> None:
    answer = await call(client, "POST", TENANTS, 422, body)
    assert {e["field"] for e in answer["error"]["errors"]} == fields


async def test_list_pages_newest_first_and_filters_by_uid(client: Client, clock: Any) -> None:
    made = []
    for n in range(5):
        made.append(await new_tenant(client, f"T{n}", uid=f"u{n}"))
        clock.advance(1)
    first = await call(client, "GET", f"{TENANTS}?limit=2", 200)
    assert [t["id"] for t in first["data"]] == [made[4]["id"], made[3]["id"]]
    assert first["has_more"] and first["next_cursor"] == made[3]["id"]
    rest = await call(client, "GET", f"{TENANTS}?limit=10&starting_after={made[3]['id']}", 200)
    assert [t["id"] for t in rest["data"]] == [m["id"] for m in reversed(made[:3])]
    assert not rest["has_more"] and rest["next_cursor"] is None
    only = await call(client, "GET", f"{TENANTS}?uid=u2", 200)
    assert [t["id"] for t in only["data"]] == [made[2]["id"]]
    assert (await call(client, "GET", f"{TENANTS}?uid=nobody", 200))["data"] == []
    bad = await call(client, "GET", f"{TENANTS}?limit=0&starting_after=ten_nope", 422)
    assert {e["field"] for e in bad["error"]["errors"]} == {"limit"}
    bad = await call(client, "GET", f"{TENANTS}?starting_after=ten_nope", 422)
    assert [e["field"] for e in bad["error"]["errors"]] == ["starting_after"]


async def test_get_patch_and_unknown_tenants(client: Client) -> None:
    tenant = await new_tenant(client, "Old name", uid="c9")
    path = f"{TENANTS}/{tenant['id']}"
    assert await call(client, "GET", path, 200) == tenant
    renamed = await call(client, "PATCH", path, 200, {"name": "New name"})
    assert renamed["name"] == "New name" and renamed["uid"] == "c9"
    assert (await call(client, "PATCH", path, 422, {"suspended": "yes"}))["error"]["errors"][0][
        "field"
    ] == "suspended"
    for method, suffix, body in (
        ("GET", "", None),
        ("PATCH", "", {"name": "x"}),
        ("DELETE", "", None),
        ("POST", "/keys", {"environment": "sandbox"}),
        ("GET", "/keys", None),
        ("DELETE", "/keys/key_nope", None),
        ("GET", "/usage", None),
    ):
        answer = await call(client, method, f"{TENANTS}/ten_nope{suffix}", 404, body)
        assert answer["error"]["type"] == "not_found"
    await call(client, "DELETE", f"{path}/keys/key_nope", 404)


# ---- keys ----------------------------------------------------------------------------------


async def test_keys_created_listed_used_and_revoked(client: Client, clock: Any) -> None:
    tenant = await new_tenant(client)
    sandbox = await new_key(client, tenant["id"], "sandbox")
    production = await new_key(client, tenant["id"], "production")
    assert sandbox["key"].startswith("sk_sandbox_") and sandbox["prefix"] == sandbox["key"][:16]
    assert (sandbox["name"], sandbox["environment"], sandbox["last_used_at"]) == (
        "backend",
        "sandbox",
        None,
    )
    # each key sees its own environment only
    await call(client, "GET", "/v1/webhooks", 200, headers=bearer(sandbox["key"]))
    created = await call(
        client,
        "POST",
        "/v1/webhooks",
        201,
        {"url": "https://hooks.example.com/p", "events": ["*"]},
        headers=bearer(production["key"]),
    )
    listed_sandbox = await call(client, "GET", "/v1/webhooks", 200, headers=bearer(sandbox["key"]))
    assert created["id"] not in {e["id"] for e in listed_sandbox["data"]}

    listed = await call(client, "GET", f"{TENANTS}/{tenant['id']}/keys", 200)
    assert [k["id"] for k in listed["data"]] == [production["id"], sandbox["id"]]
    for shown in listed["data"]:
        assert "key" not in shown and set(shown) == {
            "id",
            "object",
            "name",
            "environment",
            "prefix",
            "created_at",
            "last_used_at",
        }
    raw = await (await client.get(f"{TENANTS}/{tenant['id']}/keys", headers=AUTH)).text()
    assert sandbox["key"] not in raw and production["key"] not in raw
    by_id = {k["id"]: k for k in listed["data"]}
    assert by_id[sandbox["id"]]["last_used_at"] is not None  # used above
    assert by_id[sandbox["id"]]["last_used_at"] == clock.now().isoformat().replace("+00:00", "Z")

    await call(client, "DELETE", f"{TENANTS}/{tenant['id']}/keys/{sandbox['id']}", 204)
    await call(client, "GET", "/v1/webhooks", 401, headers=bearer(sandbox["key"]))
    await call(client, "GET", "/v1/webhooks", 200, headers=bearer(production["key"]))
    await call(client, "DELETE", f"{TENANTS}/{tenant['id']}/keys/{sandbox['id']}", 404)
    listed = await call(client, "GET", f"{TENANTS}/{tenant['id']}/keys", 200)
    assert [k["id"] for k in listed["data"]] == [production["id"]]
    # another tenant's key id is not this tenant's
    other = await new_tenant(client, "Other")
    await call(client, "DELETE", f"{TENANTS}/{other['id']}/keys/{production['id']}", 404)


async def test_key_environment_must_be_sandbox_or_production(client: Client) -> None:
    tenant = await new_tenant(client)
    for body in ({"environment": "staging"}, {}, {"environment": "sandbox", "name": ""}):
        answer = await call(client, "POST", f"{TENANTS}/{tenant['id']}/keys", 422, body)
        fields = {e["field"] for e in answer["error"]["errors"]}
        assert fields == ({"name"} if "name" in body else {"environment"})


async def test_last_used_is_written_at_most_once_a_minute(
    client: Client, clock: Any, pool: asyncpg.Pool
) -> None:
    tenant = await new_tenant(client)
    key = await new_key(client, tenant["id"])
    first_use = clock.now()

    async def last_used() -> Any:
        async with pool.acquire() as conn:
            return await conn.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key["id"])

    await call(client, "GET", "/v1/webhooks", 200, headers=bearer(key["key"]))
    assert await last_used() == first_use
    clock.advance(59)
    for _ in range(3):
        await call(client, "GET", "/v1/webhooks", 200, headers=bearer(key["key"]))
    assert await last_used() == first_use  # no write within the minute
    clock.advance(2)
    await call(client, "GET", "/v1/webhooks", 200, headers=bearer(key["key"]))
    assert await last_used() == clock.now()


# ---- suspension ----------------------------------------------------------------------------


async def _tenant_with_endpoint(client: Client, world: World, path: str) -> tuple[Any, Any]:
    tenant = await new_tenant(client)
    key = await new_key(client, tenant["id"])
    body = {"url": world.receiver.url(path), "events": ["*"]}
    app_client = client
    await call(app_client, "POST", "/v1/webhooks", 201, body, headers=bearer(key["key"]))
    return tenant, key


async def _report(client: Client, tenant_id: str, mailing_id: str, status: str) -> None:
    body = {"tenant_id": tenant_id, "environment": "sandbox", "status": status}
    await call(client, "POST", f"/internal/v1/mailings/{mailing_id}/transitions", 202, body)


@pytest.fixture
async def api(app_client: Any) -> Client:
    client: Client = await app_client(allow_private_targets=True, require_https=False)
    return client


async def test_suspended_tenant_waits_and_resumes_at_once(api: Client, world: World) -> None:
    tenant, key = await _tenant_with_endpoint(api, world, "/suspended")
    other, _ = await _tenant_with_endpoint(api, world, "/other")
    path = f"{TENANTS}/{tenant['id']}"
    shown = await call(api, "PATCH", path, 200, {"suspended": True})
    assert shown["suspended"] and shown["suspended_at"] is not None
    refused = await call(api, "GET", "/v1/webhooks", 403, headers=bearer(key["key"]))
    assert refused["error"]["type"] == "forbidden"
    # its events are still accepted (nothing is lost) but wait unsent; others go on
    await _report(api, tenant["id"], "ml_s1", "created")
    await _report(api, other["id"], "ml_o1", "created")
    await world.drain()
    assert len(world.receiver.at("/suspended")) == 0
    assert len(world.receiver.at("/other")) == 1
    world.clock.advance(3600)
    await world.drain()
    assert len(world.receiver.at("/suspended")) == 0
    resumed = await call(api, "PATCH", path, 200, {"suspended": False})
    assert not resumed["suspended"] and resumed["suspended_at"] is None
    await call(api, "GET", "/v1/webhooks", 200, headers=bearer(key["key"]))
    await world.drain()
    assert len(world.receiver.at("/suspended")) == 1


async def test_suspension_does_not_stop_the_max_age(api: Client, world: World) -> None:
    """What expires while suspended is dead-lettered as usual, and replayable afterwards."""
    tenant, _ = await _tenant_with_endpoint(api, world, "/late")
    await call(api, "PATCH", f"{TENANTS}/{tenant['id']}", 200, {"suspended": True})
    await _report(api, tenant["id"], "ml_late", "created")
    world.clock.advance(86400 + 1)  # the default max age
    await world.drain()
    async with world.pool.acquire() as conn:  # dead while still suspended: the clock decides
        assert await conn.fetchval("SELECT status FROM deliveries") == "dead"
    await call(api, "PATCH", f"{TENANTS}/{tenant['id']}", 200, {"suspended": False})
    await world.drain()
    assert world.receiver.at("/late") == []
    async with world.pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM deliveries") == "dead"
    usage = await call(api, "GET", f"{TENANTS}/{tenant['id']}/usage", 200)
    assert sum(d["dead_letters"] for d in usage["data"]) == 1


# ---- deletion ------------------------------------------------------------------------------

TENANT_ROWS = {
    "tenants": "SELECT count(*) FROM tenants WHERE id = $1",
    "api_keys": "SELECT count(*) FROM api_keys WHERE tenant_id = $1",
    "endpoints": "SELECT count(*) FROM endpoints WHERE tenant_id = $1",
    "endpoint_secrets": "SELECT count(*) FROM endpoint_secrets s JOIN endpoints e"
    " ON e.id = s.endpoint_id WHERE e.tenant_id = $1",
    "events": "SELECT count(*) FROM events WHERE tenant_id = $1",
    "mailings": "SELECT count(*) FROM mailings WHERE tenant_id = $1",
    "deliveries": "SELECT count(*) FROM deliveries d JOIN events e ON e.id = d.event_id"
    " WHERE e.tenant_id = $1",
    "attempts": "SELECT count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
    " JOIN events e ON e.id = d.event_id WHERE e.tenant_id = $1",
    "usage_daily": "SELECT count(*) FROM usage_daily WHERE tenant_id = $1",
}


async def rows_of(pool: asyncpg.Pool, tenant_id: str) -> dict[str, int]:
    return {table: await count(pool, sql, tenant_id) for table, sql in TENANT_ROWS.items()}


async def test_delete_removes_everything_and_keys_stop_at_once(
    api: Client, world: World, pool: asyncpg.Pool
) -> None:
    tenant, key = await _tenant_with_endpoint(api, world, "/doomed")
    keep, keep_key = await _tenant_with_endpoint(api, world, "/kept")
    world.receiver.script("/doomed", 500)
    ok = {"url": world.receiver.url("/doomed-ok"), "events": ["*"]}  # its history, too
    await call(api, "POST", "/v1/webhooks", 201, ok, headers=bearer(key["key"]))
    for n in range(3):
        await _report(api, tenant["id"], f"ml_{n}", "created")
        await _report(api, keep["id"], f"ml_{n}", "created")
    await world.drain()
    before = await rows_of(pool, tenant["id"])
    assert all(before.values()), before  # every kind of row exists before
    kept_before = await rows_of(pool, keep["id"])

    await call(api, "DELETE", f"{TENANTS}/{tenant['id']}", 204)
    assert set((await rows_of(pool, tenant["id"])).values()) == {0}
    assert await rows_of(pool, keep["id"]) == kept_before
    await call(api, "GET", "/v1/webhooks", 401, headers=bearer(key["key"]))
    await call(api, "GET", "/v1/webhooks", 200, headers=bearer(keep_key["key"]))
    await call(api, "GET", f"{TENANTS}/{tenant['id']}", 404)
    await call(api, "DELETE", f"{TENANTS}/{tenant['id']}", 404)
    # its ingest is refused like any unknown tenant's
    body = {"tenant_id": tenant["id"], "environment": "sandbox", "status": "created"}
    refused = await call(api, "POST", "/internal/v1/mailings/ml_x/transitions", 422, body)
    assert refused["error"]["errors"][0]["field"] == "tenant_id"


async def test_a_large_tenant_is_removed_in_the_background(
    api: Client, world: World, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More than the request's few batches: 202 at once, keys refused at once, the rest goes
    in the background; the uid is free again for a new tenant."""
    monkeypatch.setattr(tenants_admin, "QUICK_PURGE_BATCHES", 1)
    tenant = await call(api, "POST", TENANTS, 201, {"name": "Big", "uid": "big"})
    key = await new_key(api, tenant["id"])
    for n in range(3):
        body = {"url": world.receiver.url(f"/big{n}"), "events": ["*"]}
        await call(api, "POST", "/v1/webhooks", 201, body, headers=bearer(key["key"]))
    batch = [
        {"tenant_id": tenant["id"], "environment": "sandbox", "status": "created",
         "mailing_id": f"ml_{n}"}
        for n in range(1000)
    ]  # fmt: skip
    await call(api, "POST", "/internal/v1/transitions", 200, {"transitions": batch})
    assert (await rows_of(pool, tenant["id"]))["deliveries"] == 3000
    answer = await call(api, "DELETE", f"{TENANTS}/{tenant['id']}", 202)
    assert answer == {"id": tenant["id"], "object": "tenant_deletion", "status": "in_progress"}
    await call(api, "GET", "/v1/webhooks", 401, headers=bearer(key["key"]))
    await call(api, "GET", f"{TENANTS}/{tenant['id']}", 404)
    assert await world.drain() == 0  # nothing of it is sent meanwhile
    again = await call(api, "POST", TENANTS, 201, {"name": "Big", "uid": "big"})
    assert again["id"] != tenant["id"]
    tasks = list(api.app[tenants_admin.PURGES])
    for task in tasks:
        await task
    assert set((await rows_of(pool, tenant["id"])).values()) == {0}


async def test_purge_works_in_bounded_batches_and_waits_for_in_flight(
    api: Client, world: World, pool: asyncpg.Pool
) -> None:
    tenant, _ = await _tenant_with_endpoint(api, world, "/b")
    for n in range(25):
        await _report(api, tenant["id"], f"ml_{n}", "created")
    async with pool.acquire() as conn:
        held = await conn.fetchval("SELECT min(id) FROM deliveries")
        await force_status(conn, [held], "in_flight", datetime.now(UTC))
        await conn.execute("UPDATE tenants SET deleted_at = now() WHERE id = $1", tenant["id"])
        assert not await purge_tenant(conn, tenant["id"], batch=10, max_batches=1)
        assert (await rows_of(pool, tenant["id"]))["deliveries"] == 15  # one batch of 10
        assert not await purge_tenant(conn, tenant["id"], batch=10)
        # only the held one is left: its worker's settle comes first
        assert (await rows_of(pool, tenant["id"]))["deliveries"] == 1
        assert (await rows_of(pool, tenant["id"]))["tenants"] == 1
        await force_status(conn, [held], "succeeded", datetime.now(UTC))
        assert await purge_tenant(conn, tenant["id"], batch=10)
    assert set((await rows_of(pool, tenant["id"])).values()) == {0}


# ---- usage ---------------------------------------------------------------------------------


async def test_usage_per_day_and_environment(api: Client, world: World) -> None:
    tenant = await new_tenant(api)
    sandbox = await new_key(api, tenant["id"], "sandbox")
    production = await new_key(api, tenant["id"], "production")
    for key, path in ((sandbox, "/ok"), (production, "/flaky")):
        body = {"url": world.receiver.url(path), "events": ["*"]}
        await call(api, "POST", "/v1/webhooks", 201, body, headers=bearer(key["key"]))
    world.receiver.script("/flaky", 500, 500, 200)
    day1 = world.clock.now().date()
    for n in range(3):
        await _report(api, tenant["id"], f"ml_{n}", "created")
    prod = {"tenant_id": tenant["id"], "environment": "production", "status": "created"}
    await call(api, "POST", "/internal/v1/mailings/ml_p/transitions", 202, prod)
    await world.drain()  # sandbox: 3 successes; production: one failure
    world.clock.advance(16 * 3600 + 1)  # past midnight UTC (the clock starts at 08:00)
    day2 = world.clock.now().date()
    await world.drain()  # second failure
    world.clock.advance(3600)
    await world.drain()  # success
    usage = await call(api, "GET", f"{TENANTS}/{tenant['id']}/usage?from={day1}&to={day2}", 200)
    assert usage["tenant_id"] == tenant["id"]
    assert (usage["from"], usage["to"]) == (str(day1), str(day2))
    rows = {(d["day"], d["environment"]): d for d in usage["data"]}

    def figures(day: Any, env: str) -> tuple[int, int, int, int]:
        d = rows[(str(day), env)]
        return (d["events_accepted"], d["deliveries_succeeded"], d["failed_attempts"],
                d["dead_letters"])  # fmt: skip

    assert figures(day1, "sandbox") == (3, 3, 0, 0)
    assert figures(day1, "production") == (1, 0, 1, 0)
    assert figures(day2, "production") == (0, 1, 1, 0)
    assert set(rows) == {(str(day1), "sandbox"), (str(day1), "production"),
                         (str(day2), "production")}  # fmt: skip
    # the default range ends today and holds both days
    default = await call(api, "GET", f"{TENANTS}/{tenant['id']}/usage", 200)
    assert default["to"] == str(day2) and default["data"] == usage["data"]
    # another tenant's usage is its own
    other = await new_tenant(api, "Other")
    assert (await call(api, "GET", f"{TENANTS}/{other['id']}/usage", 200))["data"] == []


@pytest.mark.parametrize(
    "query",
    ["from=2026-05-12&to=2026-05-11", "from=2025-01-01&to=2026-05-11", "from=yesterday", "to=x"],
)
async def test_usage_range_is_checked(client: Client, query: str) -> None:
    tenant = await new_tenant(client)
    answer = await call(client, "GET", f"{TENANTS}/{tenant['id']}/usage?{query}", 422)
    assert answer["error"]["errors"][0]["field"] in ("from", "to")


async def test_usage_reads_its_counters_by_key_not_the_history(pool: asyncpg.Pool) -> None:
    """However long the history, a usage request reads counter rows by key (a closed day's are
    folded into one per environment)."""
    async with pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")
        plan = await conn.fetch(
            "EXPLAIN "
            + queries.USAGE.replace("$1", "'ten_x'")
            .replace("$2", "'2026-01-01'::date")
            .replace("$3", "'2026-03-31'::date")
        )
        await conn.execute("RESET enable_seqscan")
    text = "\n".join(r[0] for r in plan)
    assert "usage_daily_pkey" in text, text
    for history in ("events", "deliveries", "attempts", "delivery_queue", "delivery_outcomes"):
        assert f" on {history}" not in text, text


async def test_the_purge_finds_events_through_an_index(pool: asyncpg.Pool) -> None:
    """A deleted tenant's events are reached by mailing: no batch scans the whole history."""
    async with pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")
        plan = await conn.fetch(
            "EXPLAIN " + queries.PURGE_MAILINGS.replace("$1", "'ten_x'").replace("$2", "1000")
        )
        await conn.execute("RESET enable_seqscan")
    text = "\n".join(r[0] for r in plan)
    assert "Seq Scan on events" not in text, text
    assert "Index Cond: (mailing_id = " in text, text  # each mailing's events, by index
