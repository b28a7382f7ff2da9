"""Endpoints that sign with ed25519 key pairs, through the API and the worker (issue 13).

What a tenant sees: a public key (``whpk_``) instead of a secret, Standard Webhooks
``v1a`` signatures that verify with it, both keys signing during a rotation (newest last),
and clear 422s for what cannot be done with such an endpoint.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from api.app import create_app
from dispatcher.clock import FakeClock
from dispatcher.events import Transition, record_transitions
from dispatcher.sender import delivery_session
from dispatcher.store import endpoints as store
from dispatcher.transitions import MailingStatus
from dispatcher.worker import Worker, WorkerConfig
from tests.conftest import TenantKeys, make_settings

Client = TestClient[Any, Any]
ED = {"url": "https://example.com/hooks", "events": ["*"], "signing": "ed25519"}


@pytest.fixture
async def local_client(pool: asyncpg.Pool, clock: FakeClock) -> AsyncIterator[Client]:
    """A client whose endpoints may point at the test's own receiver."""
    app = create_app(
        make_settings(allow_private_targets=True, require_https=False), pool, clock=clock
    )
    test_client: Client = TestClient(TestServer(app))
    await test_client.start_server()
    yield test_client
    await test_client.close()


def public_key(whpk: str) -> Ed25519PublicKey:
    assert whpk.startswith("whpk_")
    raw = base64.b64decode(whpk.removeprefix("whpk_"), validate=True)
    assert len(raw) == 32
    return Ed25519PublicKey.from_public_bytes(raw)


async def create(client: Client, keys: TenantKeys, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json={**ED, **fields}, headers=keys.headers())
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def errors_of(response: Any) -> dict[str, str]:
    assert response.status == 422, await response.text()
    body = await response.json()
    return {e["field"]: e["message"] for e in body["error"]["errors"]}


async def test_create_shows_a_public_key_and_no_secret(
    client: Client, make_tenant: Any, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    acme = await make_tenant()
    created = await create(client, acme)
    assert created["signing"] == "ed25519"
    assert created["secret"] is None
    public_key(created["public_key"])
    got = await (await client.get(f"/v1/webhooks/{created['id']}", headers=acme.headers())).json()
    assert got["public_key"] == created["public_key"] and got["signing"] == "ed25519"
    async with pool.acquire() as conn:
        (private,) = (await store.active_secrets(conn, [created["id"]], clock.now()))[created["id"]]
    assert private.startswith("whsk_")
    listed = await client.get("/v1/webhooks", headers=acme.headers())
    for text in (await listed.text(), str(created), str(got)):
        assert private not in text and "whsk_" not in text


async def test_hmac_is_the_default_and_shows_no_public_key(
    client: Client, make_tenant: Any
) -> None:
    acme = await make_tenant()
    created = await create(client, acme, signing="hmac")
    assert created["secret"].startswith("whsec_") and created["public_key"] is None
    response = await client.post(
        "/v1/webhooks", json={"url": ED["url"], "events": ["*"]}, headers=acme.headers()
    )
    assert (await response.json())["signing"] == "hmac"


@pytest.mark.parametrize("bad", ["rsa", "HMAC", "", None, 1, ["ed25519"]])
async def test_unknown_signing_is_a_422_naming_the_field(
    client: Client, make_tenant: Any, bad: Any
) -> None:
    acme = await make_tenant()
    response = await client.post(
        "/v1/webhooks", json={**ED, "signing": bad}, headers=acme.headers()
    )
    assert list(await errors_of(response)) == ["signing"]


async def test_an_ed25519_endpoint_takes_no_secret(client: Client, make_tenant: Any) -> None:
    acme = await make_tenant()
    response = await client.post(
        "/v1/webhooks", json={**ED, "secret": "whsec_" + "A" * 32}, headers=acme.headers()
    )
    assert "generated" in (await errors_of(response))["secret"]
    listed = await (await client.get("/v1/webhooks", headers=acme.headers())).json()
    assert listed["data"] == []


@pytest.mark.parametrize("value", ["hmac", "ed25519"])
async def test_signing_cannot_be_changed_later(
    client: Client, make_tenant: Any, value: str
) -> None:
    acme = await make_tenant()
    created = await create(client, acme)
    for method in ("PATCH", "PUT"):
        response = await client.request(
            method, f"/v1/webhooks/{created['id']}", json={"signing": value}, headers=acme.headers()
        )
        assert "fixed at creation" in (await errors_of(response))["signing"]


async def test_rotation_adds_a_key_and_both_sign_until_the_overlap_ends(
    client: Client, make_tenant: Any, pool: asyncpg.Pool, clock: FakeClock
) -> None:
    acme = await make_tenant()
    created = await create(client, acme)
    clock.advance(10)
    response = await client.post(
        f"/v1/webhooks/{created['id']}/rotate-secret",
        json={"overlap_seconds": 3600},
        headers=acme.headers(),
    )
    assert response.status == 200
    rotated = await response.json()
    assert rotated["secret"] is None
    assert rotated["public_key"] != created["public_key"]
    public_key(rotated["public_key"])
    got = await (await client.get(f"/v1/webhooks/{created['id']}", headers=acme.headers())).json()
    assert got["public_key"] == rotated["public_key"]
    async with pool.acquire() as conn:
        active = (await store.active_secrets(conn, [created["id"]], clock.now()))[created["id"]]
        later = clock.now() + timedelta(seconds=3601)
        after = (await store.active_secrets(conn, [created["id"]], later))[created["id"]]
    assert len(active) == 2 and all(k.startswith("whsk_") for k in active)
    assert after == active[1:], "the newest key is last, and the only one after the overlap"


async def test_rotation_refuses_a_secret_for_an_ed25519_endpoint(
    client: Client, make_tenant: Any
) -> None:
    acme = await make_tenant()
    created = await create(client, acme)
    response = await client.post(
        f"/v1/webhooks/{created['id']}/rotate-secret",
        json={"secret": "whsec_" + "A" * 32},
        headers=acme.headers(),
    )
    assert "secret" in await errors_of(response)
    got = await (await client.get(f"/v1/webhooks/{created['id']}", headers=acme.headers())).json()
    assert got["public_key"] == created["public_key"], "nothing changed"


async def test_deliveries_carry_v1a_signatures_of_every_active_key(
    local_client: Client, make_tenant: Any, pool: asyncpg.Pool, clock: FakeClock, receiver: Any
) -> None:
    clock.set(datetime.now(UTC))
    client = local_client
    acme = await make_tenant()
    created = await create(client, acme, url=receiver.url("/ed"))
    rotated = await (
        await client.post(f"/v1/webhooks/{created['id']}/rotate-secret", headers=acme.headers())
    ).json()
    async with pool.acquire() as conn, conn.transaction():
        await record_transitions(
            conn,
            [Transition(acme.tenant_id, "sandbox", "ml_ed", MailingStatus.CREATED)],
            clock.now(),
        )
    async with delivery_session(allow_private=True, max_connections=10) as session:
        await Worker(pool, session, WorkerConfig(allow_private_targets=True), clock=clock).drain()
    (got,) = receiver.requests
    assert "X-Bjet24-Signature" not in got.headers and "X-Signature" not in got.headers
    assert got.headers["webhook-id"] == got.headers["X-Event-Id"]
    signed = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode() + got.body
    entries = got.headers["webhook-signature"].split(" ")
    assert [e.split(",")[0] for e in entries] == ["v1a", "v1a"]
    old_sig, new_sig = (base64.b64decode(e.split(",")[1]) for e in entries)
    public_key(created["public_key"]).verify(old_sig, signed)
    public_key(rotated["public_key"]).verify(new_sig, signed)  # newest last
    with pytest.raises(InvalidSignature):
        public_key(rotated["public_key"]).verify(new_sig, signed.replace(b"ml_ed", b"ml_xx"))


async def test_test_send_signs_with_the_key_pair(
    local_client: Client, make_tenant: Any, receiver: Any
) -> None:
    client = local_client
    acme = await make_tenant()
    created = await create(client, acme, url=receiver.url("/ed-test"))
    response = await client.post(
        f"/v1/webhooks/{created['id']}/test",
        json={"event_type": "mailing.delivered"},
        headers=acme.headers(),
    )
    assert response.status == 200 and (await response.json())["success"] is True
    (got,) = receiver.requests
    signed = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode() + got.body
    signature = base64.b64decode(got.headers["webhook-signature"].removeprefix("v1a,"))
    public_key(created["public_key"]).verify(signature, signed)
