"""POST /v1/webhooks/{id}/test: a signed event sent now, verified by off-the-shelf libraries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import standardwebhooks
import stripe
from aiohttp.test_utils import TestClient

from tests.conftest import TenantKeys

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # what `world.endpoint` signs with

Client = TestClient[Any, Any]
AppClient = Callable[..., Awaitable[Client]]
MakeTenant = Callable[..., Awaitable[TenantKeys]]


@pytest.fixture
async def api(app_client: AppClient) -> Client:
    """Private targets allowed: the receiver listens on 127.0.0.1."""
    return await app_client(allow_private_targets=True)


@pytest.fixture
async def acme(make_tenant: MakeTenant) -> TenantKeys:
    return await make_tenant("ACME")


async def send_test(
    client: Client, endpoint: Any, keys: TenantKeys, body: Any = None, status: int = 200
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/webhooks/{endpoint.id}/test", json=body, headers=keys.headers()
    )
    assert response.status == status, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def stored_counts(world: Any) -> tuple[int, int, int]:
    async with world.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM events) AS e, (SELECT count(*) FROM deliveries) AS d,"
            " (SELECT count(*) FROM attempts) AS a"
        )
    return row["e"], row["d"], row["a"]


async def test_signed_test_event_verifies_at_the_receiver(
    world: Any, api: Client, acme: TenantKeys
) -> None:
    world.clock.set(datetime.now(UTC))  # receivers check the signature's age
    endpoint = await world.endpoint(acme, "/t", standard_webhooks=True)
    world.receiver.script("/t", 200, body=b"thanks")
    answer = await send_test(api, endpoint, acme)

    assert answer["success"] is True
    assert answer["status_code"] == 200
    assert answer["outcome"] == "success"
    assert answer["error"] is None
    assert answer["response_body"] == "thanks"
    assert answer["duration_ms"] >= 0
    assert answer["event_type"] == "webhook.test"
    (got,) = world.receiver.at("/t")
    payload = orjson.loads(got.body)
    assert payload["event_id"] == answer["event_id"] == got.headers["X-Event-Id"]
    assert payload["event_id"].startswith("evt_")
    assert payload["event_type"] == got.headers["X-Event-Type"] == "webhook.test"
    assert payload["data"]["endpoint_id"] == endpoint.id
    assert got.headers["X-Delivery-Attempt"] == "1"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"].startswith("bjet24-dispatcher/")
    stripe.WebhookSignature.verify_header(
        got.body.decode(), got.headers["X-Bjet24-Signature"], SECRET, tolerance=300
    )
    assert standardwebhooks.Webhook(SECRET).verify(got.body, got.headers) == payload
    assert await stored_counts(world) == (0, 0, 0)  # not stored, nothing to retry


async def test_any_known_event_type_with_given_data(
    world: Any, api: Client, acme: TenantKeys
) -> None:
    endpoint = await world.endpoint(acme, "/t")
    data = {"mailing_id": "ml_9", "status": "delivered", "recipient": {"name": "Zoë"}}
    answer = await send_test(api, endpoint, acme, {"event_type": "mailing.delivered", "data": data})
    assert answer["success"] is True
    (got,) = world.receiver.at("/t")
    assert orjson.loads(got.body)["data"] == data
    assert got.headers["X-Event-Type"] == "mailing.delivered"

    answer = await send_test(api, endpoint, acme, {"event_type": "mailing.printed"})
    assert orjson.loads(world.receiver.at("/t")[-1].body)["data"] == {
        "mailing_id": "ml_test",
        "status": "printed",
    }


async def test_failing_receiver_is_reported_not_raised(
    world: Any, api: Client, acme: TenantKeys
) -> None:
    endpoint = await world.endpoint(acme, "/broken")
    world.receiver.script("/broken", 500, body=b"stack trace")
    answer = await send_test(api, endpoint, acme)
    assert answer["success"] is False
    assert answer["status_code"] == 500
    assert answer["outcome"] == "http_5xx"
    assert answer["error"] == "HTTP 500"
    assert answer["response_body"] == "stack trace"
    assert len(world.receiver.at("/broken")) == 1  # not retried
    assert await stored_counts(world) == (0, 0, 0)


async def test_private_address_is_blocked_unless_allowed(
    world: Any, app_client: AppClient, acme: TenantKeys
) -> None:
    strict = await app_client(allow_private_targets=False)
    endpoint = await world.endpoint(acme, "/private")
    answer = await send_test(strict, endpoint, acme)
    assert answer["success"] is False
    assert answer["outcome"] == "blocked_address"
    assert answer["status_code"] is None
    assert "BlockedAddress" in answer["error"]
    assert world.receiver.at("/private") == []


async def test_disabled_endpoint_can_be_tested(world: Any, api: Client, acme: TenantKeys) -> None:
    endpoint = await world.endpoint(acme, "/off", enabled=False)
    assert (await send_test(api, endpoint, acme))["success"] is True
    assert len(world.receiver.at("/off")) == 1


async def test_invalid_bodies_and_isolation(
    world: Any, api: Client, acme: TenantKeys, make_tenant: MakeTenant
) -> None:
    endpoint = await world.endpoint(acme, "/t")
    for body, fields in (
        ({"event_type": "mailing.exploded"}, {"event_type"}),
        ({"event_type": 5}, {"event_type"}),
        ({"data": [1, 2]}, {"data"}),
        ({"data": {"blob": "x" * 20000}}, {"data"}),
        ({"unknown": True}, {"unknown"}),
    ):
        answer = await send_test(api, endpoint, acme, body, status=422)
        assert {e["field"] for e in answer["error"]["errors"]} == fields, body
    intruder = await make_tenant("Intruder")
    for keys in (intruder, TenantKeys(acme.tenant_id, acme.production, acme.production)):
        answer = await send_test(api, endpoint, keys, status=404)
        assert answer["error"]["type"] == "not_found"
    assert world.receiver.at("/t") == []
