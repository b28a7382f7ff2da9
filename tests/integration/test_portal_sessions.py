"""Portal sessions through the API: links, the one-time exchange, the cookie on the tenant
routes (same authorization as API keys), CSRF, expiry, revocation, and the page's headers."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from dispatcher.clock import FakeClock
from tests.conftest import PLATFORM_TOKEN, TenantKeys, make_settings

Client = TestClient[Any, Any]
PLATFORM = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
COOKIE = "dispatcher_portal"


async def new_link(client: Client, tenant_id: str, **extra: Any) -> dict[str, Any]:
    body = {"tenant_id": tenant_id, "environment": "sandbox", **extra}
    response = await client.post("/internal/v1/portal-sessions", json=body, headers=PLATFORM)
    assert response.status == 201, await response.text()
    found: dict[str, Any] = await response.json()
    return found


def token_of(link: dict[str, Any]) -> str:
    fragment = urlsplit(link["url"]).fragment
    assert fragment.startswith("token=pst_")
    return fragment.removeprefix("token=")


async def exchange(client: Client, token: str) -> tuple[str, str]:
    """The cookie and CSRF token a browser gets; the client's own jar is emptied."""
    response = await client.post("/portal/session", json={"token": token})
    assert response.status == 200, await response.text()
    cookie = response.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain http here; see the https test below
    client.session.cookie_jar.clear()
    return cookie.value, (await response.json())["csrf_token"]


def as_portal(cookie: str, csrf: str | None = None) -> dict[str, str]:
    headers = {"Cookie": f"{COOKIE}={cookie}"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return headers


async def test_a_link_opens_the_tenant_api_for_its_tenant_and_environment_only(
    client: Client, make_tenant: Any
) -> None:
    acme: TenantKeys = await make_tenant("ACME")
    other: TenantKeys = await make_tenant("Other")
    theirs = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.other.example/x", "events": ["*"]},
        headers=other.headers(),
    )
    their_id = (await theirs.json())["id"]
    production = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.acme.example/prod", "events": ["*"]},
        headers=acme.headers("production"),
    )
    production_id = (await production.json())["id"]

    link = await new_link(client, acme.tenant_id)
    assert link["url"].startswith(f"http://{client.host}:{client.port}/portal/#token=pst_")
    cookie, csrf = await exchange(client, token_of(link))

    created = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.acme.example/x", "events": ["*"]},
        headers=as_portal(cookie, csrf),
    )
    assert created.status == 201
    mine = (await created.json())["id"]
    listed = await client.get("/v1/webhooks", headers=as_portal(cookie))
    assert [e["id"] for e in (await listed.json())["data"]] == [mine]
    # the same 404 as for a key: another tenant's, or the other environment's
    for foreign in (their_id, production_id):
        response = await client.get(f"/v1/webhooks/{foreign}", headers=as_portal(cookie))
        assert response.status == 404
        response = await client.delete(f"/v1/webhooks/{foreign}", headers=as_portal(cookie, csrf))
        assert response.status == 404


async def test_a_link_works_once_and_the_token_is_no_api_key_nor_the_reverse(
    client: Client, make_tenant: Any
) -> None:
    acme: TenantKeys = await make_tenant()
    token = token_of(await new_link(client, acme.tenant_id))
    cookie, _ = await exchange(client, token)
    again = await client.post("/portal/session", json={"token": token})
    assert again.status == 401
    assert "already used" in (await again.json())["error"]["message"]
    # an API key is no portal token, and no portal cookie
    refused = await client.post("/portal/session", json={"token": acme.sandbox})
    assert refused.status == 401
    response = await client.get("/v1/webhooks", headers={"Cookie": f"{COOKIE}={acme.sandbox}"})
    assert response.status == 401
    # the portal token and cookie are no API keys
    for secret in (token, cookie):
        response = await client.get("/v1/webhooks", headers={"Authorization": f"Bearer {secret}"})
        assert response.status == 401
    # an Authorization header decides alone: a wrong key with a good cookie is refused
    response = await client.get(
        "/v1/webhooks", headers={**as_portal(cookie), "Authorization": "Bearer sk_sandbox_x"}
    )
    assert response.status == 401


async def test_cookie_writes_need_the_session_csrf_token(client: Client, make_tenant: Any) -> None:
    acme: TenantKeys = await make_tenant()
    cookie, csrf = await exchange(client, token_of(await new_link(client, acme.tenant_id)))
    body = {"url": "https://hooks.acme.example/x", "events": ["*"]}
    for headers in (as_portal(cookie), as_portal(cookie, "0" * 64), as_portal(cookie, csrf[:-1])):
        response = await client.post("/v1/webhooks", json=body, headers=headers)
        assert response.status == 403
        assert (await response.json())["error"]["type"] == "csrf_failed"
    listed = await client.get("/v1/webhooks", headers=as_portal(cookie))
    assert (await listed.json())["data"] == []
    assert (await client.post("/v1/webhooks", json=body, headers=as_portal(cookie, csrf))).ok


async def test_links_and_sessions_expire(
    client: Client, make_tenant: Any, clock: FakeClock
) -> None:
    acme: TenantKeys = await make_tenant()
    link = await new_link(client, acme.tenant_id, expires_in_seconds=600)
    unused = await new_link(client, acme.tenant_id, expires_in_seconds=600)
    cookie, _ = await exchange(client, token_of(link))
    clock.advance(599)
    assert (await client.get("/v1/webhooks", headers=as_portal(cookie))).status == 200
    clock.advance(2)
    expired = await client.get("/v1/webhooks", headers=as_portal(cookie))
    assert expired.status == 401
    assert "expired" in (await expired.json())["error"]["message"]
    late = await client.post("/portal/session", json={"token": token_of(unused)})
    assert late.status == 401


async def test_default_lifetime_and_its_limits(client: Client, make_tenant: Any) -> None:
    acme: TenantKeys = await make_tenant()
    link = await new_link(client, acme.tenant_id)
    created = await new_link(client, acme.tenant_id, expires_in_seconds=86400)
    assert link["expires_at"] < created["expires_at"]
    for bad in (86401, 0, "60", 1.5):
        body = {"tenant_id": acme.tenant_id, "environment": "sandbox", "expires_in_seconds": bad}
        response = await client.post("/internal/v1/portal-sessions", json=body, headers=PLATFORM)
        assert response.status == 422
        assert (await response.json())["error"]["errors"][0]["field"] == "expires_in_seconds"
    unknown = {"tenant_id": "ten_nobody", "environment": "sandbox"}
    response = await client.post("/internal/v1/portal-sessions", json=unknown, headers=PLATFORM)
    assert response.status == 422
    assert (await response.json())["error"]["errors"] == [
        {"field": "tenant_id", "message": "no such tenant"}
    ]
    response = await client.post(
        "/internal/v1/portal-sessions",
        json={"tenant_id": acme.tenant_id, "environment": "sandbox"},
        headers=acme.headers(),
    )
    assert response.status == 401  # a tenant key cannot make links


async def test_revocation_ends_the_session_at_once(
    client: Client, make_tenant: Any, pool: asyncpg.Pool
) -> None:
    acme: TenantKeys = await make_tenant()
    link = await new_link(client, acme.tenant_id)
    cookie, csrf = await exchange(client, token_of(link))
    assert (await client.get("/v1/webhooks", headers=as_portal(cookie))).status == 200
    path = f"/internal/v1/portal-sessions/{link['id']}"
    assert (await client.delete(path, headers=PLATFORM)).status == 204
    assert (await client.get("/v1/webhooks", headers=as_portal(cookie))).status == 401
    assert (await client.delete(path, headers=PLATFORM)).status == 404
    # revoking a link before it is opened refuses it
    unopened = await new_link(client, acme.tenant_id)
    await client.delete(f"/internal/v1/portal-sessions/{unopened['id']}", headers=PLATFORM)
    assert (await client.post("/portal/session", json={"token": token_of(unopened)})).status == 401
    # signing out revokes too (and needs the CSRF token)
    cookie, csrf = await exchange(client, token_of(await new_link(client, acme.tenant_id)))
    assert (await client.delete("/portal/session", headers=as_portal(cookie))).status == 403
    assert (await client.delete("/portal/session", headers=as_portal(cookie, csrf))).status == 204
    assert (await client.get("/portal/session", headers=as_portal(cookie))).status == 401
    # the tenant's removal removes its sessions
    cookie, _ = await exchange(client, token_of(await new_link(client, acme.tenant_id)))
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM tenants WHERE id = $1", acme.tenant_id)
    assert (await client.get("/v1/webhooks", headers=as_portal(cookie))).status == 401


async def test_secrets_are_stored_only_as_hashes(
    client: Client, make_tenant: Any, pool: asyncpg.Pool
) -> None:
    acme: TenantKeys = await make_tenant()
    token = token_of(await new_link(client, acme.tenant_id))
    cookie, _ = await exchange(client, token)
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM portal_sessions")
    dump = repr([dict(r) for r in rows])
    assert token not in dump and cookie not in dump
    assert token.removeprefix("pst_") not in dump and cookie.removeprefix("psc_") not in dump


async def test_public_url_and_https_cookie(
    pool: asyncpg.Pool, clock: FakeClock, make_tenant: Any
) -> None:
    settings = make_settings(public_url="https://hooks.example.com/")
    acme: TenantKeys = await make_tenant()
    async with TestClient(TestServer(create_app(settings, pool, clock=clock))) as client:
        link = await new_link(client, acme.tenant_id)
        assert link["url"].startswith("https://hooks.example.com/portal/#token=pst_")
        response = await client.post("/portal/session", json={"token": token_of(link)})
        cookie = response.cookies["__Host-dispatcher_portal"]
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"


async def test_the_page_is_served_with_a_strict_policy(
    pool: asyncpg.Pool, clock: FakeClock
) -> None:
    settings = make_settings(portal_frame_ancestors="https://platform.example.com")
    async with TestClient(TestServer(create_app(settings, pool, clock=clock))) as client:
        redirect = await client.get("/portal", allow_redirects=False)
        assert redirect.status == 308 and redirect.headers["Location"] == "/portal/"
        for path in ("/portal/", "/portal/static/portal.js", "/portal/static/portal.css"):
            response = await client.get(path)
            assert response.status == 200, path
            policy = response.headers["Content-Security-Policy"]
            assert "default-src 'self'" in policy and "script-src 'self'" in policy
            assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
            assert "frame-ancestors https://platform.example.com" in policy
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "X-Frame-Options" not in response.headers
        page = await (await client.get("/portal/")).text()
        assert "<script>" not in page and "style=" not in page and "http" not in page.lower()
        assert (await client.get("/portal/static/nothing.js")).status == 404
        assert (await client.get("/portal/static/..%2Fpages.py")).status == 404
        tag = (await client.get("/portal/static/portal.js")).headers["ETag"]
        cached = await client.get("/portal/static/portal.js", headers={"If-None-Match": tag})
        assert cached.status == 304
    async with TestClient(TestServer(create_app(make_settings(), pool, clock=clock))) as client:
        response = await client.get("/portal/")
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"


async def test_guessed_tokens_and_cookies_are_throttled_like_keys(
    pool: asyncpg.Pool, clock: FakeClock
) -> None:
    settings = make_settings(auth_failures_per_minute=3)
    async with TestClient(TestServer(create_app(settings, pool, clock=clock))) as client:
        for n in range(3):
            guess = await client.post("/portal/session", json={"token": f"pst_guess{n}"})
            assert guess.status == 401
        throttled = await client.get("/v1/webhooks", headers=as_portal("psc_guess"))
        assert throttled.status == 429 and "Retry-After" in throttled.headers
        assert (await client.post("/portal/session", json={"token": "pst_x"})).status == 429


async def test_a_suspended_tenant_is_refused_and_a_deleted_one_signed_out(
    client: Client, make_tenant: Any
) -> None:
    acme: TenantKeys = await make_tenant()
    cookie, _ = await exchange(client, token_of(await new_link(client, acme.tenant_id)))
    unopened = await new_link(client, acme.tenant_id)
    tenant = f"/internal/v1/tenants/{acme.tenant_id}"
    assert (await client.patch(tenant, json={"suspended": True}, headers=PLATFORM)).ok
    suspended = await client.get("/v1/webhooks", headers=as_portal(cookie))
    assert suspended.status == 403  # as for its API keys
    assert (await client.patch(tenant, json={"suspended": False}, headers=PLATFORM)).ok
    assert (await client.get("/v1/webhooks", headers=as_portal(cookie))).status == 200
    assert (await client.delete(tenant, headers=PLATFORM)).status in (202, 204)
    assert (await client.get("/v1/webhooks", headers=as_portal(cookie))).status == 401
    late = await client.post("/portal/session", json={"token": token_of(unopened)})
    assert late.status == 401
