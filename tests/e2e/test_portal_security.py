"""Portal links and sessions in a real browser: expired, used and revoked links refused, the
session ending mid-use, another tenant's ids unreachable from the page's own origin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from dispatcher.models import Environment
from dispatcher.store import portal_sessions
from tests.e2e.portal_support import (  # noqa: F401 - portal_pool is the `pool` fixture
    Server,
    Watched,
    emit,
    new_endpoint,
    new_tenant,
    open_portal,
    platform,
    portal_link,
    portal_pool,
)

REFUSED = "This portal link is no longer valid"


async def fetch_status(watched: Watched, method: str, path: str, write: bool = False) -> int:
    """A request from the portal page itself, with its cookie and (for writes) CSRF token."""
    status: int = await watched.page.evaluate(
        """async ([method, path, write]) => {
            const headers = {"Content-Type": "application/json"};
            if (write) {
                const session = await (await fetch("/portal/session")).json();
                headers["X-CSRF-Token"] = session.csrf_token;
            }
            const body = method === "GET" ? undefined : "{}";
            return (await fetch(path, {method, headers, body})).status;
        }""",
        [method, path, write],
    )
    return status


@pytest.mark.timeout(60)
async def test_expired_used_and_revoked_links_are_refused(
    portal: Watched, portal_server: Server, pool: asyncpg.Pool
) -> None:
    page = portal.page
    tenant_id = await new_tenant(pool, "ACME")
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    async with pool.acquire() as conn:
        expired = await portal_sessions.create(
            conn, tenant_id, Environment.SANDBOX, 3599, an_hour_ago
        )
    await page.goto(f"/portal/#token={expired.token}")
    await page.get_by_role("heading", name=REFUSED).wait_for()
    assert await page.evaluate("window.location.hash") == ""
    assert await page.get_by_role("button", name="Add endpoint").count() == 0

    # a link works once: a second browser (or anyone who copied it) is refused
    link = await portal_link(portal_server, tenant_id)
    await open_portal(portal, link["url"])
    other = await portal.context.browser.new_context(base_url=portal_server.base)  # type: ignore[union-attr]
    try:
        second = await other.new_page()
        await second.goto(link["url"])
        await second.get_by_role("heading", name=REFUSED).wait_for()
    finally:
        await other.close()

    # revoked by the platform: the open page is signed out on its next request
    await platform(portal_server, "DELETE", f"/internal/v1/portal-sessions/{link['id']}")
    await page.get_by_role("button", name="Event catalog").click()
    await page.get_by_role("heading", name=REFUSED).wait_for()

    # a session that expires while the page is open ends the same way
    await open_portal(portal, (await portal_link(portal_server, tenant_id))["url"])
    async with pool.acquire() as conn:
        await conn.execute("UPDATE portal_sessions SET expires_at = $1", an_hour_ago)
    await page.get_by_role("button", name="Event catalog").click()
    await page.get_by_role("heading", name=REFUSED).wait_for()
    portal.assert_clean(refused_requests=True)


@pytest.mark.timeout(60)
async def test_another_tenants_ids_are_unreachable_from_the_portal(
    portal: Watched, portal_server: Server, pool: asyncpg.Pool, receiver: Any
) -> None:
    ours = await new_tenant(pool, "ACME")
    theirs = await new_tenant(pool, "Rival")
    mine = await new_endpoint(pool, ours, receiver.url("/ours"))
    foreign = await new_endpoint(pool, theirs, receiver.url("/theirs"))
    event_id = await emit(portal_server, theirs, "ml_rival", "created")
    await receiver.wait_for(1, "/theirs")
    async with pool.acquire() as conn:
        delivery = await conn.fetchval("SELECT id FROM deliveries WHERE endpoint_id = $1", foreign)
    await open_portal(portal, (await portal_link(portal_server, ours))["url"])
    await portal.page.get_by_role("button", name=receiver.url("/ours")).wait_for()
    assert await portal.page.get_by_text(receiver.url("/theirs")).count() == 0

    assert await fetch_status(portal, "GET", f"/v1/webhooks/{mine}") == 200
    for method, path in [
        ("GET", f"/v1/webhooks/{foreign}"),
        ("GET", f"/v1/webhooks/{foreign}/deliveries"),
        ("GET", f"/v1/events/{event_id}"),
        ("PATCH", f"/v1/webhooks/{foreign}"),
        ("DELETE", f"/v1/webhooks/{foreign}"),
        ("POST", f"/v1/webhooks/{foreign}/test"),
        ("POST", f"/v1/webhooks/{foreign}/rotate-secret"),
        ("POST", f"/v1/webhooks/{foreign}/replay"),
        ("POST", f"/v1/deliveries/dlv_{delivery}/retry"),
    ]:
        write = method != "GET"
        assert await fetch_status(portal, method, path, write) == 404, (method, path)
        if write:  # and without the CSRF token a write is refused before any lookup
            assert await fetch_status(portal, method, path) == 403, (method, path)
    assert len(receiver.at("/theirs")) == 1
    portal.assert_clean(refused_requests=True)
