"""The tenant webhook-endpoint API against a real database, as a client sees it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from dispatcher.clock import FakeClock
from dispatcher.models import Environment, Principal
from dispatcher.store import endpoints as store
from dispatcher.store import secrets as secret_store
from dispatcher.store import tenants
from tests.conftest import TenantKeys, make_settings

Client = TestClient[Any, Any]
MakeTenant = Callable[..., Awaitable[TenantKeys]]

VALID = {"url": "https://example.com/hooks", "events": ["mailing.delivered"]}
OWN_SECRET = "whsec_" + "A" * 32  # base64 of 24 bytes


@pytest.fixture
async def make_client(
    pool: asyncpg.Pool, clock: FakeClock
) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """A client over an app with different settings (private targets, https, body size)."""
    started: list[Client] = []

    async def factory(**overrides: Any) -> Client:
        app = create_app(make_settings(**overrides), pool, clock=clock)
        test_client: Client = TestClient(TestServer(app))
        await test_client.start_server()
        started.append(test_client)
        return test_client

    yield factory
    for test_client in started:
        await test_client.close()


@pytest.fixture
async def acme(make_tenant: MakeTenant) -> TenantKeys:
    return await make_tenant("ACME")


async def create(
    client: Client, keys: TenantKeys, env: str = "sandbox", **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhooks", json={**VALID, **fields}, headers=keys.headers(env)
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def assert_error(response: Any, status: int, type_: str) -> dict[str, Any]:
    """Every failure has the same shape, never a 500."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert body["error"]["type"] == type_
    assert isinstance(body["error"]["message"], str)
    return body


def without_state(shown: dict[str, Any]) -> dict[str, Any]:
    """GET of one endpoint adds its live delivery state to the object create and PATCH show."""
    return {k: v for k, v in shown.items() if k != "delivery_state"}


def error_fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body["error"]["errors"]]


def principal(keys: TenantKeys, env: Environment = Environment.SANDBOX) -> Principal:
    return Principal(keys.tenant_id, env, "key_test")  # type: ignore[arg-type]


# ---- create, get, list ---------------------------------------------------------------


async def test_create_returns_the_endpoint_and_its_secret_once(
    client: Client, acme: TenantKeys
) -> None:
    created = await create(
        client,
        acme,
        description="orders",
        metadata={"team": "billing", "n": 1},
        events=["mailing.delivered", "*", "mailing.delivered"],
    )
    assert created["id"].startswith("ep_")
    assert created["object"] == "webhook_endpoint"
    assert created["url"] == VALID["url"]
    assert created["events"] == ["mailing.delivered", "*"]  # duplicates gone, order kept
    assert created["description"] == "orders"
    assert created["enabled"] is True
    assert created["disabled_reason"] is None
    assert created["metadata"] == {"team": "billing", "n": 1}
    assert created["standard_webhooks"] is False
    assert created["created_at"] == created["updated_at"] == "2026-05-11T08:00:00Z"
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 32

    got = await client.get(f"/v1/webhooks/{created['id']}", headers=acme.headers())
    assert got.status == 200
    shown = await got.json()
    assert shown["delivery_state"]["pending"] == 0  # see test_endpoint_state.py
    assert without_state(shown) == {k: v for k, v in created.items() if k != "secret"}
    listed = await client.get("/v1/webhooks", headers=acme.headers())
    for text in (await got.text(), await listed.text()):
        assert secret not in text
        assert '"secret"' not in text


async def test_create_with_own_secret_signs_with_it(
    client: Client, acme: TenantKeys, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    created = await create(client, acme, secret=OWN_SECRET, standard_webhooks=True)
    assert created["secret"] == OWN_SECRET
    assert created["standard_webhooks"] is True
    async with pool.acquire() as conn:
        assert await store.active_secrets(conn, [created["id"]], clock.now()) == {
            created["id"]: [OWN_SECRET]
        }


async def test_create_disabled(client: Client, acme: TenantKeys) -> None:
    created = await create(client, acme, enabled=False)
    assert created["enabled"] is False


BAD_BODIES: list[tuple[dict[str, Any], list[str]]] = [
    ({"events": ["*"]}, ["url"]),
    ({"url": "https://example.com/"}, ["events"]),
    ({**VALID, "events": []}, ["events"]),
    ({**VALID, "events": "mailing.delivered"}, ["events"]),
    ({**VALID, "events": ["mailing.delivered", "mailing.nope"]}, ["events.1"]),
    ({**VALID, "events": ["order.*"]}, ["events.0"]),
    ({**VALID, "url": "ftp://example.com/x"}, ["url"]),
    ({**VALID, "url": "javascript:alert(1)"}, ["url"]),
    ({**VALID, "url": "/relative"}, ["url"]),
    ({**VALID, "url": 42}, ["url"]),
    ({**VALID, "enabled": "yes"}, ["enabled"]),
    ({**VALID, "description": "x" * 501}, ["description"]),
    ({**VALID, "metadata": ["not", "an", "object"]}, ["metadata"]),
    ({**VALID, "metadata": {"blob": "x" * 17000}}, ["metadata"]),
    ({**VALID, "secret": "too-short"}, ["secret"]),
    ({**VALID, "secret": "whsec_!!!!not-base64!!!!!!!!!!!!"}, ["secret"]),
    ({**VALID, "secret": "whsec_" + "A" * 8}, ["secret"]),
    ({**VALID, "secret": "has spaces in it, not allowed here"}, ["secret"]),
    ({**VALID, "colour": "blue"}, ["colour"]),
    ({"url": "ftp://x", "events": ["nope"], "enabled": 1}, ["url", "events.0", "enabled"]),
]


@pytest.mark.parametrize(("body", "fields"), BAD_BODIES)
async def test_create_validation_lists_every_bad_field(
    client: Client, acme: TenantKeys, body: dict[str, Any], fields: list[str]
) -> None:
    response = await client.post("/v1/webhooks", json=body, headers=acme.headers())
    error = await assert_error(response, 422, "validation_error")
    assert sorted(error_fields(error)) == sorted(fields)
    listed = await (await client.get("/v1/webhooks", headers=acme.headers())).json()
    assert listed["data"] == []


PRIVATE_URLS = [
    "https://127.0.0.1/hooks",
    "https://10.0.0.7/hooks",
    "https://[::1]/hooks",
    "http://169.254.169.254/latest/meta-data",
    "https://localhost:8443/",
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
async def test_private_targets_refused_by_default(
    client: Client, acme: TenantKeys, url: str
) -> None:
    response = await client.post("/v1/webhooks", json={**VALID, "url": url}, headers=acme.headers())
    error = await assert_error(response, 422, "validation_error")
    assert error_fields(error) == ["url"]
    assert "private" in error["error"]["errors"][0]["message"]


@pytest.mark.parametrize("url", PRIVATE_URLS)
async def test_private_targets_accepted_when_allowed(
    make_client: Callable[..., Awaitable[Client]], acme: TenantKeys, url: str
) -> None:
    client = await make_client(allow_private_targets=True)
    created = await create(client, acme, url=url)
    assert created["url"] == url


async def test_production_requires_https(
    client: Client, make_client: Callable[..., Awaitable[Client]], acme: TenantKeys
) -> None:
    plain = {**VALID, "url": "http://example.com/hooks"}
    response = await client.post("/v1/webhooks", json=plain, headers=acme.headers("production"))
    error = await assert_error(response, 422, "validation_error")
    assert error["error"]["errors"] == [
        {"field": "url", "message": "must use https for production endpoints"}
    ]
    assert (await create(client, acme, "sandbox", url=plain["url"]))["url"] == plain["url"]
    relaxed = await make_client(require_https=False)
    assert (await create(relaxed, acme, "production", url=plain["url"]))["url"] == plain["url"]


async def test_body_problems_have_the_error_shape(
    make_client: Callable[..., Awaitable[Client]], acme: TenantKeys
) -> None:
    client = await make_client(max_body_bytes=1024)
    headers = {**acme.headers(), "Content-Type": "application/json"}
    big = {**VALID, "description": "x" * 2000}
    await assert_error(
        await client.post("/v1/webhooks", json=big, headers=acme.headers()),
        413,
        "payload_too_large",
    )
    for raw in (b"{not json", b"", b"   "):
        response = await client.post("/v1/webhooks", data=raw, headers=headers)
        await assert_error(response, 400, "bad_request")
    for raw in (b"[1, 2]", b'"url"', b"null", b"42"):
        response = await client.post("/v1/webhooks", data=raw, headers=headers)
        error = await assert_error(response, 422, "validation_error")
        assert error_fields(error) == ["body"]


async def test_get_unknown_endpoint_is_404(client: Client, acme: TenantKeys) -> None:
    for endpoint_id in ("ep_01J0000000000000000000000", "nope", "x" * 300):
        response = await client.get(f"/v1/webhooks/{endpoint_id}", headers=acme.headers())
        await assert_error(response, 404, "not_found")


async def test_url_credentials_are_redacted_but_kept(
    client: Client, acme: TenantKeys, pool: asyncpg.Pool
) -> None:
    url = "https://alice:s3cr3t-pw@example.com/hooks?x=1"
    created = await create(client, acme, url=url)
    assert created["url"] == "https://***:***@example.com/hooks?x=1"
    got = await client.get(f"/v1/webhooks/{created['id']}", headers=acme.headers())
    listed = await client.get("/v1/webhooks", headers=acme.headers())
    for response in (got, listed):
        text = await response.text()
        assert "s3cr3t-pw" not in text and "alice" not in text
        assert "https://***:***@example.com/hooks?x=1" in text
    async with pool.acquire() as conn:
        stored = await store.get_endpoint(conn, principal(acme), created["id"])
    assert stored is not None and stored.url == url
    # Sending the redacted form back would overwrite the real credentials: refused.
    patch = await client.patch(
        f"/v1/webhooks/{created['id']}",
        json={"url": created["url"]},
        headers=acme.headers(),
    )
    await assert_error(patch, 422, "validation_error")


# ---- auth and isolation --------------------------------------------------------------


async def test_event_types_catalog(client: Client, acme: TenantKeys) -> None:
    response = await client.get("/v1/event-types", headers=acme.headers())
    assert response.status == 200
    body = await response.json()
    assert body["object"] == "list" and body["has_more"] is False
    names = [t["name"] for t in body["data"]]
    assert "mailing.delivered" in names and "mailing.return_receipt" in names
    assert all(t["description"] for t in body["data"])
    await assert_error(await client.get("/v1/event-types"), 401, "unauthorized")


ROUTES = [
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("GET", "/v1/webhooks/{id}"),
    ("PATCH", "/v1/webhooks/{id}"),
    ("PUT", "/v1/webhooks/{id}"),
    ("DELETE", "/v1/webhooks/{id}"),
    ("POST", "/v1/webhooks/{id}/rotate-secret"),
    ("GET", "/v1/event-types"),
]
BAD_AUTH = [
    {},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer   "},
    {"Authorization": "Bearer sk_sandbox_not-a-real-key"},
    {"Authorization": "Bearer " + "x" * 500},
    {"Authorization": "Bearer ключ"},
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_needs_a_valid_key(
    client: Client, acme: TenantKeys, method: str, path: str
) -> None:
    created = await create(client, acme)
    url = path.format(id=created["id"])
    for headers in BAD_AUTH:
        response = await client.request(method, url, json={"enabled": False}, headers=headers)
        await assert_error(response, 401, "unauthorized")
    got = await client.get(f"/v1/webhooks/{created['id']}", headers=acme.headers())
    assert (await got.json())["enabled"] is True  # nothing happened


async def test_revoked_key_is_refused_on_the_next_request(
    client: Client, acme: TenantKeys, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    assert (await client.get("/v1/webhooks", headers=acme.headers())).status == 200
    async with pool.acquire() as conn:
        keys = await tenants.list_keys(conn, acme.tenant_id)
        sandbox = next(k for k in keys if k.environment == Environment.SANDBOX)
        assert await tenants.revoke_key(conn, sandbox.id, clock.now())
    await assert_error(
        await client.get("/v1/webhooks", headers=acme.headers()), 401, "unauthorized"
    )
    # The production key of the same tenant still works.
    assert (await client.get("/v1/webhooks", headers=acme.headers("production"))).status == 200


async def test_other_tenant_and_environment_get_404(
    client: Client, acme: TenantKeys, make_tenant: MakeTenant, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    other = await make_tenant("Globex")
    created = await create(client, acme, secret=OWN_SECRET)
    path = f"/v1/webhooks/{created['id']}"
    for headers in (
        other.headers("sandbox"),
        other.headers("production"),
        acme.headers("production"),
    ):
        await assert_error(await client.get(path, headers=headers), 404, "not_found")
        for method in ("PATCH", "PUT"):
            response = await client.request(method, path, json={"enabled": False}, headers=headers)
            await assert_error(response, 404, "not_found")
        await assert_error(await client.delete(path, headers=headers), 404, "not_found")
        rotate = await client.post(f"{path}/rotate-secret", json={}, headers=headers)
        await assert_error(rotate, 404, "not_found")
        listed = await (await client.get("/v1/webhooks", headers=headers)).json()
        assert listed["data"] == []
    got = await (await client.get(path, headers=acme.headers())).json()
    assert got["enabled"] is True  # untouched
    async with pool.acquire() as conn:
        secrets = await store.active_secrets(conn, [created["id"]], clock.now())
    assert secrets == {created["id"]: [OWN_SECRET]}


# ---- update and delete ---------------------------------------------------------------


async def test_patch_changes_only_what_is_given(
    client: Client, acme: TenantKeys, clock: FakeClock
) -> None:
    created = await create(client, acme, description="first", metadata={"a": 1})
    path = f"/v1/webhooks/{created['id']}"
    clock.advance(60)
    response = await client.patch(
        path, json={"events": ["mailing.*", "mailing.*"], "enabled": False}, headers=acme.headers()
    )
    assert response.status == 200
    patched = await response.json()
    assert patched["events"] == ["mailing.*"]
    assert patched["enabled"] is False
    assert patched["disabled_reason"] == "disabled by tenant"
    assert patched["description"] == "first" and patched["metadata"] == {"a": 1}
    assert patched["url"] == created["url"]
    assert patched["updated_at"] == "2026-05-11T08:01:00Z"
    assert patched["created_at"] == created["created_at"]
    again = await (await client.get(path, headers=acme.headers())).json()
    assert without_state(again) == patched

    enabled = await client.patch(path, json={"enabled": True}, headers=acme.headers())
    body = await enabled.json()
    assert body["enabled"] is True and body["disabled_reason"] is None


async def test_patch_description_null_clears_it(client: Client, acme: TenantKeys) -> None:
    created = await create(client, acme, description="to be removed")
    path = f"/v1/webhooks/{created['id']}"
    kept = await client.patch(path, json={"metadata": {}}, headers=acme.headers())
    assert (await kept.json())["description"] == "to be removed"
    cleared = await client.patch(path, json={"description": None}, headers=acme.headers())
    assert (await cleared.json())["description"] is None


async def test_put_has_patch_semantics(client: Client, acme: TenantKeys) -> None:
    created = await create(client, acme, description="kept", events=["mailing.failed"])
    path = f"/v1/webhooks/{created['id']}"
    response = await client.put(
        path, json={"url": "https://other.example.com/new"}, headers=acme.headers()
    )
    assert response.status == 200
    body = await response.json()
    assert body["url"] == "https://other.example.com/new"
    assert body["events"] == ["mailing.failed"] and body["description"] == "kept"


async def test_empty_patch_changes_nothing(
    client: Client, acme: TenantKeys, clock: FakeClock
) -> None:
    created = await create(client, acme)
    clock.advance(60)
    response = await client.patch(f"/v1/webhooks/{created['id']}", json={}, headers=acme.headers())
    assert response.status == 200
    assert (await response.json())["updated_at"] == created["updated_at"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"url": None}, ["url"]),
        ({"events": None}, ["events"]),
        ({"enabled": None}, ["enabled"]),
        ({"events": []}, ["events"]),
        ({"events": ["mailing.nope"]}, ["events.0"]),
        ({"url": "https://10.0.0.1/"}, ["url"]),
        ({"secret": OWN_SECRET}, ["secret"]),
        ({"url": "ftp://x", "enabled": "no"}, ["url", "enabled"]),
    ],
)
async def test_patch_validation(
    client: Client, acme: TenantKeys, body: dict[str, Any], fields: list[str]
) -> None:
    created = await create(client, acme)
    path = f"/v1/webhooks/{created['id']}"
    for method in ("PATCH", "PUT"):
        response = await client.request(method, path, json=body, headers=acme.headers())
        error = await assert_error(response, 422, "validation_error")
        assert sorted(error_fields(error)) == sorted(fields)
    unchanged = await (await client.get(path, headers=acme.headers())).json()
    assert without_state(unchanged) == {k: v for k, v in created.items() if k != "secret"}


async def test_patch_production_endpoint_to_http_is_refused(
    client: Client, acme: TenantKeys
) -> None:
    created = await create(client, acme, "production")
    response = await client.patch(
        f"/v1/webhooks/{created['id']}",
        json={"url": "http://example.com/"},
        headers=acme.headers("production"),
    )
    await assert_error(response, 422, "validation_error")


async def test_delete(client: Client, acme: TenantKeys) -> None:
    keep = await create(client, acme)
    gone = await create(client, acme)
    path = f"/v1/webhooks/{gone['id']}"
    response = await client.delete(path, headers=acme.headers())
    assert response.status == 204
    assert await response.read() == b""
    await assert_error(await client.get(path, headers=acme.headers()), 404, "not_found")
    await assert_error(await client.delete(path, headers=acme.headers()), 404, "not_found")
    patch = await client.patch(path, json={"enabled": True}, headers=acme.headers())
    await assert_error(patch, 404, "not_found")
    listed = await (await client.get("/v1/webhooks", headers=acme.headers())).json()
    assert [e["id"] for e in listed["data"]] == [keep["id"]]


async def test_delete_wipes_secrets_and_url_credentials(
    client: Client, acme: TenantKeys, pool: asyncpg.Pool
) -> None:
    url = "https://hook-user:hunter2-pw@example.com/hooks?x=1"
    gone = await create(client, acme, url=url)
    keep = await create(client, acme, url=url)
    rotated = await client.post(f"/v1/webhooks/{gone['id']}/rotate-secret", headers=acme.headers())
    assert rotated.status == 200
    response = await client.delete(f"/v1/webhooks/{gone['id']}", headers=acme.headers())
    assert response.status == 204
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, url, url_credentials, deleted_at FROM endpoints ORDER BY created_at"
        )
        secrets = await conn.fetch("SELECT endpoint_id FROM endpoint_secrets")
    by_id = {r["id"]: r for r in rows}
    assert by_id[gone["id"]]["deleted_at"] is not None, "the row stays, for the history"
    assert by_id[gone["id"]]["url"] == "https://example.com/hooks?x=1"
    assert by_id[gone["id"]]["url_credentials"] is None
    # other endpoints keep theirs (stored apart from the URL, encrypted)
    assert by_id[keep["id"]]["url"] == "https://example.com/hooks?x=1"
    sealed = by_id[keep["id"]]["url_credentials"]
    assert secret_store.open_credentials(keep["id"], sealed) == "hook-user:hunter2-pw"
    assert {r["endpoint_id"] for r in secrets} == {keep["id"]}


async def test_delete_and_disable_cancel_pending_deliveries(
    client: Client, acme: TenantKeys, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    first = await create(client, acme)
    second = await create(client, acme)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO events (id, tenant_id, environment, event_type, occurred_at,"
            " created_at, body) VALUES ('evt_1', $1, 'sandbox', 'mailing.delivered', $2, $2,"
            " '{}')",
            acme.tenant_id,
            clock.now(),
        )
        await conn.executemany(
            "INSERT INTO delivery_queue (event_id, endpoint_id, tenant_id, event_created_at,"
            " created_at, next_attempt_at, age_origin) VALUES ('evt_1', $1, $2, $3, $3, $3, $3)",
            [
                (first["id"], acme.tenant_id, clock.now()),
                (second["id"], acme.tenant_id, clock.now()),
            ],
        )
    assert (
        await client.delete(f"/v1/webhooks/{first['id']}", headers=acme.headers())
    ).status == 204
    disable = await client.patch(
        f"/v1/webhooks/{second['id']}", json={"enabled": False}, headers=acme.headers()
    )
    assert disable.status == 200
    async with pool.acquire() as conn:
        statuses = {
            r["endpoint_id"]: r["status"]
            for r in await conn.fetch("SELECT endpoint_id, status FROM deliveries")
        }
    assert statuses == {first["id"]: "cancelled", second["id"]: "cancelled"}


# ---- rotate-secret -------------------------------------------------------------------


async def test_rotate_secret_keeps_the_old_one_for_the_overlap(
    client: Client, acme: TenantKeys, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    created = await create(client, acme, secret=OWN_SECRET)
    clock.advance(10)
    response = await client.post(
        f"/v1/webhooks/{created['id']}/rotate-secret", headers=acme.headers()
    )
    assert response.status == 200
    rotated = await response.json()
    new = rotated["secret"]
    assert new.startswith("whsec_") and new != OWN_SECRET
    assert rotated["id"] == created["id"] and rotated["object"] == "webhook_endpoint"
    async with pool.acquire() as conn:
        assert await store.active_secrets(conn, [created["id"]], clock.now()) == {
            created["id"]: [OWN_SECRET, new]
        }
        later = clock.now() + timedelta(seconds=86400)  # the default overlap, ended
        assert await store.active_secrets(conn, [created["id"]], later) == {created["id"]: [new]}
    got = await client.get(f"/v1/webhooks/{created['id']}", headers=acme.headers())
    assert new not in await got.text()


async def test_rotate_secret_with_no_overlap_and_own_secret(
    client: Client, acme: TenantKeys, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    created = await create(client, acme)
    mine = "a-tenant-chosen-secret-0123456789"
    response = await client.post(
        f"/v1/webhooks/{created['id']}/rotate-secret",
        json={"overlap_seconds": 0, "secret": mine},
        headers=acme.headers(),
    )
    assert response.status == 200
    assert (await response.json())["secret"] == mine
    async with pool.acquire() as conn:
        assert await store.active_secrets(conn, [created["id"]], clock.now()) == {
            created["id"]: [mine]
        }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"overlap_seconds": -1}, "overlap_seconds"),
        ({"overlap_seconds": 604801}, "overlap_seconds"),
        ({"overlap_seconds": "60"}, "overlap_seconds"),
        ({"overlap_seconds": 1.5}, "overlap_seconds"),
        ({"secret": "short"}, "secret"),
        ({"overlapSeconds": 60}, "overlapSeconds"),
    ],
)
async def test_rotate_secret_validation(
    client: Client, acme: TenantKeys, body: dict[str, Any], field: str
) -> None:
    created = await create(client, acme)
    response = await client.post(
        f"/v1/webhooks/{created['id']}/rotate-secret", json=body, headers=acme.headers()
    )
    error = await assert_error(response, 422, "validation_error")
    assert error_fields(error) == [field]


# ---- idempotency ---------------------------------------------------------------------


async def test_idempotent_create_replays_the_first_answer(
    client: Client, acme: TenantKeys, pool: asyncpg.Pool
) -> None:
    headers = {**acme.headers(), "Idempotency-Key": "create-1"}
    first = await client.post("/v1/webhooks", json=VALID, headers=headers)
    assert first.status == 201
    assert "Idempotent-Replayed" not in first.headers
    # The same data with other key order and spacing is the same request.
    raw = b'{ "events": ["mailing.delivered"],  "url": "https://example.com/hooks" }'
    again = await client.post(
        "/v1/webhooks", data=raw, headers={**headers, "Content-Type": "application/json"}
    )
    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    shown = await first.json()
    secret = shown.pop("secret")
    assert await again.json() == shown, "the same answer, without the secret (shown once)"
    listed = await (await client.get("/v1/webhooks", headers=acme.headers())).json()
    assert len(listed["data"]) == 1
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT response_body FROM idempotency_keys")
    assert secret.encode() not in stored and b'"secret"' not in stored


async def test_idempotency_key_reused_for_another_request_is_refused(
    client: Client, acme: TenantKeys
) -> None:
    headers = {**acme.headers(), "Idempotency-Key": "create-2"}
    assert (await client.post("/v1/webhooks", json=VALID, headers=headers)).status == 201
    other = {**VALID, "url": "https://example.com/other"}
    response = await client.post("/v1/webhooks", json=other, headers=headers)
    await assert_error(response, 422, "idempotency_key_reused")
    listed = await (await client.get("/v1/webhooks", headers=acme.headers())).json()
    assert [e["url"] for e in listed["data"]] == [VALID["url"]]


async def test_idempotency_keys_are_scoped_per_tenant_environment(
    client: Client, acme: TenantKeys, make_tenant: MakeTenant
) -> None:
    other = await make_tenant("Globex")
    ids = set()
    for headers in (acme.headers("sandbox"), acme.headers("production"), other.headers()):
        response = await client.post(
            "/v1/webhooks", json=VALID, headers={**headers, "Idempotency-Key": "shared"}
        )
        assert response.status == 201
        assert "Idempotent-Replayed" not in response.headers
        ids.add((await response.json())["id"])
    assert len(ids) == 3


async def test_failed_request_does_not_use_up_the_key(client: Client, acme: TenantKeys) -> None:
    headers = {**acme.headers(), "Idempotency-Key": "retry-after-fix"}
    bad = await client.post("/v1/webhooks", json={**VALID, "events": []}, headers=headers)
    await assert_error(bad, 422, "validation_error")
    good = await client.post("/v1/webhooks", json=VALID, headers=headers)
    assert good.status == 201
    assert "Idempotent-Replayed" not in good.headers


async def test_concurrent_requests_with_one_key_create_one_endpoint(
    client: Client, acme: TenantKeys
) -> None:
    headers = {**acme.headers(), "Idempotency-Key": "race"}
    responses = await asyncio.gather(
        *(client.post("/v1/webhooks", json=VALID, headers=headers) for _ in range(8))
    )
    assert [r.status for r in responses] == [201] * 8
    bodies = [await r.json() for r in responses]
    assert sum("secret" in body for body in bodies) == 1, "the secret is shown once"
    assert len({orjson.dumps({**b, "secret": None}) for b in bodies}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 7
    listed = await (await client.get("/v1/webhooks", headers=acme.headers())).json()
    assert len(listed["data"]) == 1


@pytest.mark.parametrize("key", ["k" * 256, "", "naïve-ключ"])
async def test_bad_idempotency_keys(client: Client, acme: TenantKeys, key: str) -> None:
    headers = {**acme.headers(), "Idempotency-Key": key}
    try:
        response = await client.post("/v1/webhooks", json=VALID, headers=headers)
    except UnicodeEncodeError:
        pytest.skip("the client cannot send this header")
    error = await assert_error(response, 422, "validation_error")
    assert error_fields(error) == ["Idempotency-Key"]


async def test_idempotent_rotate_rotates_once_and_keeps_no_secret(
    client: Client, acme: TenantKeys, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    created = await create(client, acme)
    path = f"/v1/webhooks/{created['id']}/rotate-secret"
    headers = {**acme.headers(), "Idempotency-Key": "rotate-1"}
    first = await (await client.post(path, headers=headers)).json()
    second = await client.post(path, headers=headers)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "secret" not in await second.json(), "a stored answer never keeps the secret"
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT response_body FROM idempotency_keys")
    assert first["secret"].encode() not in stored
    async with pool.acquire() as conn:
        active = await store.active_secrets(conn, [created["id"]], clock.now())
    assert active == {created["id"]: [created["secret"], first["secret"]]}


# ---- pagination ----------------------------------------------------------------------


async def test_pages_walk_every_endpoint_once_newest_first(
    client: Client, acme: TenantKeys, clock: FakeClock
) -> None:
    created = []
    for i in range(25):
        created.append((await create(client, acme, description=f"n{i}"))["id"])
        clock.advance(1)
    seen: list[str] = []
    pages = []
    cursor = None
    while True:
        params = {"limit": "10", **({"starting_after": cursor} if cursor else {})}
        response = await client.get("/v1/webhooks", params=params, headers=acme.headers())
        assert response.status == 200
        page = await response.json()
        assert page["object"] == "list"
        pages.append((len(page["data"]), page["has_more"]))
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            assert cursor is None
            break
        assert cursor == page["data"][-1]["id"]
    assert pages == [(10, True), (10, True), (5, False)]
    assert seen == list(reversed(created))

    default = await (await client.get("/v1/webhooks", headers=acme.headers())).json()
    assert len(default["data"]) == 20 and default["has_more"] is True


async def test_cursor_survives_deletion_of_its_endpoint(
    client: Client, acme: TenantKeys, clock: FakeClock
) -> None:
    ids = []
    for _ in range(3):
        ids.append((await create(client, acme))["id"])
        clock.advance(1)
    first = await (
        await client.get("/v1/webhooks", params={"limit": "1"}, headers=acme.headers())
    ).json()
    assert first["next_cursor"] == ids[2]
    await client.delete(f"/v1/webhooks/{ids[2]}", headers=acme.headers())
    rest = await (
        await client.get("/v1/webhooks", params={"starting_after": ids[2]}, headers=acme.headers())
    ).json()
    assert [e["id"] for e in rest["data"]] == [ids[1], ids[0]]


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"limit": "0"}, ["limit"]),
        ({"limit": "101"}, ["limit"]),
        ({"limit": "ten"}, ["limit"]),
        ({"limit": "-5"}, ["limit"]),
        ({"starting_after": "ep_unknown"}, ["starting_after"]),
        ({"starting_after": ""}, ["starting_after"]),
        ({"limit": "0", "starting_after": ""}, ["limit", "starting_after"]),
    ],
)
async def test_bad_page_parameters(
    client: Client, acme: TenantKeys, params: dict[str, str], fields: list[str]
) -> None:
    response = await client.get("/v1/webhooks", params=params, headers=acme.headers())
    error = await assert_error(response, 422, "validation_error")
    assert sorted(error_fields(error)) == sorted(fields)


async def test_cursor_of_another_tenant_is_refused(
    client: Client, acme: TenantKeys, make_tenant: MakeTenant
) -> None:
    other = await make_tenant("Globex")
    theirs = await create(client, other)
    response = await client.get(
        "/v1/webhooks", params={"starting_after": theirs["id"]}, headers=acme.headers()
    )
    await assert_error(response, 422, "validation_error")
