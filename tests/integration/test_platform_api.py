"""The platform API over HTTP against a real database: status codes, events, fan-out.

The pure state machine has its full matrix in tests/unit/test_transitions.py; here we
prove how its decisions map to HTTP, that refusals emit nothing, that concurrency loses
nothing, and that the event body reaches receivers byte-identical.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from api.app import create_app
from dispatcher.clock import FakeClock
from dispatcher.db import queries
from dispatcher.events import Transition, record_transitions
from dispatcher.models import Environment, Principal
from dispatcher.partitions import ensure_day
from dispatcher.sender import delivery_session
from dispatcher.store import endpoints as endpoint_store
from dispatcher.transitions import FORWARD_ORDER, Accept, MailingStatus, MailType, decide
from dispatcher.worker import Worker, WorkerConfig
from tests.conftest import PLATFORM_TOKEN, make_settings

Client = TestClient[Any, Any]

AUTH = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BATCH = "/internal/v1/transitions"


def path(mailing_id: str) -> str:
    return f"/internal/v1/mailings/{mailing_id}/transitions"


async def report(
    client: Client,
    tenant_id: str,
    mailing_id: str,
    status: str,
    environment: str = "sandbox",
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> tuple[int, dict[str, Any]]:
    body = {"tenant_id": tenant_id, "environment": environment, "status": status, **fields}
    resp = await client.post(path(mailing_id), json=body, headers={**AUTH, **(headers or {})})
    return resp.status, await resp.json()


async def endpoint(
    pool: asyncpg.Pool,
    tenant_id: str,
    url: str,
    clock: FakeClock,
    events: list[str] | None = None,
    environment: str = "sandbox",
) -> str:
    owner = Principal(tenant_id, Environment(environment), "key")  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        created = await endpoint_store.create_endpoint(
            conn, owner, url=url, event_types=events or ["*"], secret=SECRET, now=clock.now()
        )
    return str(created.id)


async def scalar(pool: asyncpg.Pool, sql: str, *args: Any) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchval(sql, *args)


async def counts(pool: asyncpg.Pool) -> tuple[int, int]:
    """(events, deliveries): what a refusal must leave unchanged."""
    return (
        await scalar(pool, "SELECT count(*) FROM events"),
        await scalar(pool, "SELECT count(*) FROM deliveries"),
    )


async def drain(pool: asyncpg.Pool, clock: FakeClock) -> int:
    config = WorkerConfig(allow_private_targets=True)
    async with delivery_session(allow_private=True, max_connections=10) as session:
        worker = Worker(pool, session, config, clock=clock, rng=random.Random(1))
        return await worker.drain()


# ---- authentication ---------------------------------------------------------------------


async def test_platform_routes_require_the_platform_token(client: Client, make_tenant: Any) -> None:
    tenant = await make_tenant()
    body = {"tenant_id": tenant.tenant_id, "environment": "sandbox", "status": "created"}
    batch = {"transitions": [{**body, "mailing_id": "ml_1"}]}
    for headers in ({}, tenant.headers("sandbox"), tenant.headers("production")):
        for url, payload in ((path("ml_1"), body), (BATCH, batch)):
            resp = await client.post(url, json=payload, headers=headers)
            assert resp.status == 401, (url, headers)
            assert (await resp.json())["error"]["type"] == "unauthorized"
    resp = await client.post(path("ml_1"), json=body, headers={"Authorization": "Bearer nope"})
    assert resp.status == 401


async def test_platform_token_does_not_open_tenant_routes(client: Client) -> None:
    resp = await client.get("/v1/webhooks", headers=AUTH)
    assert resp.status == 401
    resp = await client.post(
        "/v1/webhooks", json={"url": "https://example.com/h", "events": ["*"]}, headers=AUTH
    )
    assert resp.status == 401
    assert (await resp.json())["error"]["type"] == "unauthorized"


# ---- the state machine over HTTP --------------------------------------------------------

# (reported statuses in order, mail_type of the mailing, expected HTTP status of each)
MATRIX = [
    pytest.param(["created", "paid", "queued", "printed"], "standard", [202] * 4, id="forward"),
    pytest.param(["created", "handed_over", "delivered"], "standard", [202] * 3, id="skip"),
    pytest.param(["printed", "paid"], "standard", [202, 409], id="backward"),
    pytest.param(["in_delivery", "failed"], "standard", [202, 202], id="failed-before"),
    pytest.param(["delivered", "failed"], "standard", [202, 409], id="failed-after-delivered"),
    pytest.param(["failed", "printed"], "standard", [202, 409], id="nothing-after-failed"),
    pytest.param(["delivered", "return_receipt"], "registered", [202, 202], id="receipt"),
    pytest.param(["delivered", "return_receipt"], "standard", [202, 409], id="receipt-std"),
    pytest.param(["in_delivery", "return_receipt"], "registered", [202, 409], id="receipt-early"),
    pytest.param(["return_receipt"], "registered", [409], id="receipt-unknown-mailing"),
    pytest.param(["paid", "paid"], "standard", [202, 200], id="repeat"),
]


@pytest.mark.parametrize(("statuses", "mail_type", "expected"), MATRIX)
async def test_transition_maps_to_http(
    client: Client,
    pool: asyncpg.Pool,
    make_tenant: Any,
    clock: FakeClock,
    statuses: list[str],
    mail_type: str,
    expected: list[int],
) -> None:
    tenant = await make_tenant()
    await endpoint(pool, tenant.tenant_id, "https://example.com/all", clock)
    current: str | None = None
    first_event: str | None = None
    for status, want in zip(statuses, expected, strict=True):
        before = await counts(pool)
        code, body = await report(client, tenant.tenant_id, "ml_1", status, mail_type=mail_type)
        assert code == want, (status, body)
        after = await counts(pool)
        if code == 202:
            assert body == {
                "event_id": body["event_id"],
                "event_type": f"mailing.{status}",
                "status": "accepted",
            }
            assert body["event_id"].startswith("evt_")
            assert after == (before[0] + 1, before[1] + 1)
            current, first_event = status, body["event_id"]
        elif code == 200:
            assert body == {
                "event_id": first_event,
                "event_type": f"mailing.{status}",
                "status": "repeated",
            }
            assert after == before
        else:
            error = body["error"]
            assert error["type"] == "invalid_transition"
            assert error["current_status"] == current
            named = f"'{current}'" if current else "unknown"
            assert named in error["message"], "the message names the current status"
            assert after == before, "a refused transition emits no event and no delivery"
    stored = await scalar(pool, "SELECT status FROM mailings WHERE mailing_id = 'ml_1'")
    assert stored == current


async def test_repeat_returns_the_original_event(
    client: Client, pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = await make_tenant()
    code, first = await report(client, tenant.tenant_id, "ml_1", "printed")
    assert code == 202
    await report(client, tenant.tenant_id, "ml_2", "printed")  # another mailing, same status
    clock.advance(3600)
    code, again = await report(client, tenant.tenant_id, "ml_1", "printed", tracking_number="X")
    assert code == 200
    assert again == {**first, "status": "repeated"}
    assert await scalar(pool, "SELECT count(*) FROM events WHERE mailing_id = 'ml_1'") == 1


async def test_mailings_are_separate_per_tenant_and_environment(
    client: Client, make_tenant: Any
) -> None:
    one, two = await make_tenant("one"), await make_tenant("two")
    assert (await report(client, one.tenant_id, "ml_1", "delivered"))[0] == 202
    assert (await report(client, two.tenant_id, "ml_1", "created"))[0] == 202
    assert (await report(client, one.tenant_id, "ml_1", "created", "production"))[0] == 202


# ---- Idempotency-Key --------------------------------------------------------------------


async def test_idempotency_key_replays_the_first_answer(
    client: Client, pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = await make_tenant()
    key = {"Idempotency-Key": "transition-1"}
    body = {"tenant_id": tenant.tenant_id, "environment": "sandbox", "status": "created"}
    first = await client.post(path("ml_1"), json=body, headers={**AUTH, **key})
    assert first.status == 202
    await report(client, tenant.tenant_id, "ml_1", "paid")
    clock.advance(60)
    again = await client.post(path("ml_1"), json=body, headers={**AUTH, **key})
    assert again.status == 202, "the stored answer, not a 409 against the newer status"
    assert await again.read() == await first.read()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (
        await scalar(pool, "SELECT count(*) FROM events WHERE event_type = 'mailing.created'") == 1
    )

    reused = await client.post(
        path("ml_1"), json={**body, "status": "queued"}, headers={**AUTH, **key}
    )
    assert reused.status == 422
    assert (await reused.json())["error"]["type"] == "idempotency_key_reused"


async def test_idempotency_key_on_a_batch(
    client: Client, pool: asyncpg.Pool, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    item = {"tenant_id": tenant.tenant_id, "environment": "sandbox", "mailing_id": "ml_1"}
    body = {"transitions": [{**item, "status": "created"}, {**item, "status": "paid"}]}
    headers = {**AUTH, "Idempotency-Key": "batch-1"}
    answers = await asyncio.gather(
        *(client.post(BATCH, json=body, headers=headers) for _ in range(5))
    )
    raw = {await r.read() for r in answers}
    assert [r.status for r in answers] == [200] * 5
    assert len(raw) == 1, "concurrent retries wait for the first and replay it"
    assert await scalar(pool, "SELECT count(*) FROM events") == 2


async def test_a_refusal_is_replayed_too(client: Client, make_tenant: Any) -> None:
    tenant = await make_tenant()
    await report(client, tenant.tenant_id, "ml_1", "delivered")
    key = {"Idempotency-Key": "late-failure"}
    first = await report(client, tenant.tenant_id, "ml_1", "failed", headers=key)
    again = await report(client, tenant.tenant_id, "ml_1", "failed", headers=key)
    assert first[0] == again[0] == 409
    assert first[1] == again[1]


# ---- concurrency ------------------------------------------------------------------------


async def test_concurrent_identical_transitions_make_one_event(
    client: Client, pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = await make_tenant()
    await endpoint(pool, tenant.tenant_id, "https://example.com/all", clock)
    answers = await asyncio.gather(
        *(report(client, tenant.tenant_id, "ml_1", "printed") for _ in range(10))
    )
    codes = sorted(code for code, _ in answers)
    assert codes == [200] * 9 + [202]
    assert len({body["event_id"] for _, body in answers}) == 1
    assert await counts(pool) == (1, 1)


def _rank(status: MailingStatus) -> int:
    return len(FORWARD_ORDER) if status is MailingStatus.FAILED else FORWARD_ORDER.index(status)


async def test_concurrent_different_statuses_lose_no_update(
    client: Client, pool: asyncpg.Pool, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    statuses = [s for s in MailingStatus if s is not MailingStatus.RETURN_RECEIPT] * 2
    answers = await asyncio.gather(
        *(report(client, tenant.tenant_id, "ml_1", s.value) for s in statuses)
    )
    assert {code for code, _ in answers} <= {200, 202, 409}
    accepted = {body["event_id"]: body["event_type"] for code, body in answers if code == 202}
    async with pool.acquire() as conn:
        events = dict(await conn.fetch("SELECT id, event_type FROM events"))
        mailing = await conn.fetchrow("SELECT status, last_event_id FROM mailings")
    assert events == accepted, "every 202 has its event, and no event lacks a 202"
    assert events[mailing["last_event_id"]] == f"mailing.{mailing['status']}"
    # Serialized writers accept an increasing chain; the mailing ends at its top.
    chain = sorted((MailingStatus(t.removeprefix("mailing.")) for t in events.values()), key=_rank)
    previous: MailingStatus | None = None
    for status in chain:
        assert decide(previous, status, MailType.STANDARD) == Accept(), (previous, status)
        previous = status
    assert previous == mailing["status"]


# ---- batches ----------------------------------------------------------------------------


async def test_batch_applies_valid_items_and_refuses_the_rest(
    client: Client, pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = await make_tenant()
    await endpoint(pool, tenant.tenant_id, "https://example.com/all", clock)
    base = {"tenant_id": tenant.tenant_id, "environment": "sandbox"}
    items = [
        {**base, "mailing_id": "ml_1", "status": "created"},
        {**base, "mailing_id": "ml_1", "status": "printed"},
        {**base, "mailing_id": "ml_1", "status": "paid"},
        {**base, "mailing_id": "ml_2", "status": "delivered", "mail_type": "registered"},
        {**base, "mailing_id": "ml_2", "status": "delivered"},
        {**base, "mailing_id": "ml_3", "status": "return_receipt"},
        {**base, "mailing_id": "ml_2", "status": "return_receipt"},
    ]
    resp = await client.post(BATCH, json={"transitions": items}, headers=AUTH)
    assert resp.status == 200
    results = (await resp.json())["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["mailing_id"] for r in results] == [i["mailing_id"] for i in items]
    assert [r["status"] for r in results] == [
        "accepted",
        "accepted",
        "refused",
        "accepted",
        "repeated",
        "refused",
        "accepted",
    ]
    assert results[2]["error"] == {
        "type": "invalid_transition",
        "message": "mailing is 'printed'; cannot go back to 'paid'",
        "current_status": "printed",
    }
    assert "event_id" not in results[2] and "event_type" not in results[2]
    assert results[5]["error"]["current_status"] is None
    assert results[4]["event_id"] == results[3]["event_id"]
    assert results[6]["event_type"] == "mailing.return_receipt"
    async with pool.acquire() as conn:
        events = await conn.fetch("SELECT id, event_type FROM events")
        transactions = await conn.fetchval(
            "SELECT count(DISTINCT tx) FROM (SELECT xmin::text AS tx FROM events"
            " UNION ALL SELECT xmin::text FROM mailings"
            " UNION ALL SELECT xmin::text FROM delivery_queue) AS written"
        )
        deliveries = await conn.fetchval("SELECT count(*) FROM deliveries")
        statuses = dict(await conn.fetch("SELECT mailing_id, status FROM mailings"))
    accepted = {r["event_id"] for r in results if r["status"] == "accepted"}
    assert {e["id"] for e in events} == accepted
    assert transactions == 1, "the whole batch is written in one transaction"
    assert deliveries == 4
    assert statuses == {"ml_1": "printed", "ml_2": "return_receipt"}


async def test_batch_is_rejected_whole_when_an_item_is_invalid(
    client: Client, pool: asyncpg.Pool, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    base = {"tenant_id": tenant.tenant_id, "environment": "sandbox", "status": "created"}
    items = [
        {**base, "mailing_id": "ml_1"},
        {**base, "mailing_id": "ml_2", "status": "shipped"},
        {**base, "mailing_id": "ml/3"},
        {**base, "mailing_id": "ml_4", "tenant_id": "ten_nobody"},
    ]
    resp = await client.post(BATCH, json={"transitions": items}, headers=AUTH)
    assert resp.status == 422
    fields = {e["field"] for e in (await resp.json())["error"]["errors"]}
    assert fields == {"transitions.1.status", "transitions.2.mailing_id"}
    # Schema errors first; an unknown tenant alone is named by its index, nothing applied.
    resp = await client.post(BATCH, json={"transitions": [items[0], items[3]]}, headers=AUTH)
    assert resp.status == 422
    errors = (await resp.json())["error"]["errors"]
    assert errors == [{"field": "transitions.1.tenant_id", "message": "no such tenant"}]
    assert await scalar(pool, "SELECT count(*) FROM events") == 0


async def test_batch_size_limits(client: Client, pool: asyncpg.Pool, make_tenant: Any) -> None:
    tenant = await make_tenant()
    base = {"tenant_id": tenant.tenant_id, "environment": "sandbox", "status": "created"}
    items = [{**base, "mailing_id": f"ml_{i}"} for i in range(1001)]
    resp = await client.post(BATCH, json={"transitions": items}, headers=AUTH)
    assert resp.status == 422
    assert [e["field"] for e in (await resp.json())["error"]["errors"]] == ["transitions"]
    resp = await client.post(BATCH, json={"transitions": []}, headers=AUTH)
    assert resp.status == 422
    resp = await client.post(BATCH, json={"transitions": items[:1000]}, headers=AUTH)
    assert resp.status == 200
    results = (await resp.json())["results"]
    assert len(results) == 1000 and {r["status"] for r in results} == {"accepted"}
    assert await scalar(pool, "SELECT count(*) FROM events") == 1000


# ---- validation -------------------------------------------------------------------------


async def _errors(resp: Any) -> dict[str, str]:
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert body["error"]["type"] == "validation_error"
    return {e["field"]: e["message"] for e in body["error"]["errors"]}


async def test_every_invalid_field_is_listed(client: Client, make_tenant: Any) -> None:
    tenant = await make_tenant()
    body = {
        "tenant_id": tenant.tenant_id,
        "environment": "staging",
        "status": "shipped",
        "occurred_at": "2026-05-11T08:42:13",
        "mail_type": "express",
        "tracking_number": "x" * 101,
        "recipient": ["not", "an", "object"],
        "metadata": {"blob": "x" * (16 * 1024)},
        "colour": "red",
    }
    resp = await client.post(path("ml$1"), json=body, headers=AUTH)
    errors = await _errors(resp)
    assert set(errors) == {
        "mailing_id",
        "environment",
        "status",
        "occurred_at",
        "mail_type",
        "tracking_number",
        "recipient",
        "metadata",
        "colour",
    }
    assert "timezone" in errors["occurred_at"]
    assert "16384 bytes" in errors["metadata"]


@pytest.mark.parametrize(
    ("occurred_at", "ok"),
    [
        ("2026-05-11T10:42:13+02:00", True),
        ("2026-05-12T07:59:59Z", True),  # just under a day ahead of the clock
        ("2026-05-12T08:00:01Z", False),
        ("1999-12-31T23:59:59Z", False),
        ("2026-05-11", False),
        ("2026-02-30T08:00:00Z", False),
        (1778486533, False),
    ],
)
async def test_occurred_at_rules(
    client: Client, make_tenant: Any, occurred_at: Any, ok: bool
) -> None:
    tenant = await make_tenant()
    code, body = await report(client, tenant.tenant_id, "ml_1", "created", occurred_at=occurred_at)
    assert code == (202 if ok else 422), body
    if not ok:
        assert [e["field"] for e in body["error"]["errors"]] == ["occurred_at"]


@pytest.mark.parametrize("mailing_id", ["ml_1", "A-z.0~9:x", "m" * 128])
async def test_mailing_id_charset_accepts(
    client: Client, make_tenant: Any, mailing_id: str
) -> None:
    tenant = await make_tenant()
    assert (await report(client, tenant.tenant_id, mailing_id, "created"))[0] == 202


@pytest.mark.parametrize("mailing_id", ["m" * 129, "ml%201", "ml%C3%A9", "ml@1", "ml;1"])
async def test_mailing_id_charset_refuses(
    client: Client, make_tenant: Any, mailing_id: str
) -> None:
    tenant = await make_tenant()
    body = {"tenant_id": tenant.tenant_id, "environment": "sandbox", "status": "created"}
    resp = await client.post(path(mailing_id), json=body, headers=AUTH)
    assert set(await _errors(resp)) == {"mailing_id"}


async def test_mailing_id_charset_in_a_batch(client: Client, make_tenant: Any) -> None:
    """What a path cannot carry (or a router would normalise away) is refused in a body."""
    tenant = await make_tenant()
    base = {"tenant_id": tenant.tenant_id, "environment": "sandbox", "status": "created"}
    bad = ["", ".", "..", "a/b", "a b", "é", "m" * 129, "a\x00b"]
    items = [{**base, "mailing_id": m} for m in bad]
    resp = await client.post(BATCH, json={"transitions": items}, headers=AUTH)
    assert set(await _errors(resp)) == {f"transitions.{i}.mailing_id" for i in range(len(bad))}


async def test_unknown_tenant_is_a_422_not_a_500(client: Client, pool: asyncpg.Pool) -> None:
    code, body = await report(client, "ten_nobody", "ml_1", "created")
    assert code == 422
    assert body["error"]["errors"] == [{"field": "tenant_id", "message": "no such tenant"}]
    assert await scalar(pool, "SELECT count(*) FROM events") == 0


async def test_body_must_be_a_json_object(client: Client) -> None:
    resp = await client.post(path("ml_1"), data=b"{nope", headers=AUTH)
    assert resp.status == 400
    resp = await client.post(path("ml_1"), json=[1, 2], headers=AUTH)
    assert set(await _errors(resp)) == {"body"}
    resp = await client.post(path("ml_1"), json={"environment": 1}, headers=AUTH)
    assert set(await _errors(resp)) == {"tenant_id", "environment", "status"}


# ---- the event body ---------------------------------------------------------------------

METADATA = {
    "zeta": [3, 2.5, None, True, {"b": 1, "a": "é ✓ 🚀"}],
    "alpha": {"nested": {"deep": []}},
    "big": 9007199254740993,
    "quote": '"</script>\n',
}
RECIPIENT = {"name": "Jan Kowalski", "address": {"city": "Kraków", "zip": "30-001"}}
OCCURRED = re.compile(rb'"occurred_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"')


async def test_metadata_is_echoed_verbatim_in_the_event_body(
    client: Client, pool: asyncpg.Pool, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    code, out = await report(
        client,
        tenant.tenant_id,
        "ml_1",
        "delivered",
        occurred_at="2026-05-11T10:42:13+02:00",
        mail_type="registered",
        tracking_number="RR123456789PL",
        recipient=RECIPIENT,
        metadata=METADATA,
    )
    assert code == 202
    raw = bytes(await scalar(pool, "SELECT body FROM events WHERE id = $1", out["event_id"]))
    event = orjson.loads(raw)
    assert raw == orjson.dumps(event, option=orjson.OPT_SORT_KEYS), "canonical JSON"
    assert event == {
        "data": {
            "mailing_id": "ml_1",
            "mail_type": "registered",
            "metadata": METADATA,
            "recipient": RECIPIENT,
            "status": "delivered",
            "tracking_number": "RR123456789PL",
        },
        "event_id": out["event_id"],
        "event_type": "mailing.delivered",
        "occurred_at": "2026-05-11T08:42:13Z",
    }
    assert b'"big":9007199254740993' in raw


async def test_event_body_is_byte_identical_at_every_endpoint(
    client: Client, pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock, receiver: Any
) -> None:
    tenant = await make_tenant()
    await endpoint(pool, tenant.tenant_id, receiver.url("/a"), clock)
    await endpoint(pool, tenant.tenant_id, receiver.url("/b"), clock, ["mailing.delivered"])
    code, out = await report(
        client, tenant.tenant_id, "ml_1", "delivered", recipient=RECIPIENT, metadata=METADATA
    )
    assert code == 202
    assert await drain(pool, clock) == 2
    (a,), (b,) = receiver.at("/a"), receiver.at("/b")
    stored = bytes(await scalar(pool, "SELECT body FROM events"))
    assert a.body == b.body == stored
    assert a.headers["X-Event-Id"] == b.headers["X-Event-Id"] == out["event_id"]
    assert a.body == orjson.dumps(orjson.loads(a.body), option=orjson.OPT_SORT_KEYS)
    assert OCCURRED.search(a.body)
    assert orjson.loads(a.body)["occurred_at"] == "2026-05-11T08:00:00Z"  # the clock's now
    assert orjson.loads(a.body)["data"]["metadata"] == METADATA


# ---- fan-out ----------------------------------------------------------------------------


async def test_fan_out_follows_subscriptions_and_environment(
    client: Client, pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock, receiver: Any
) -> None:
    tenant, other = await make_tenant("acme"), await make_tenant("other")
    for name, events in (
        ("all", ["*"]),
        ("family", ["mailing.*"]),
        ("delivered", ["mailing.delivered"]),
        ("failed", ["mailing.failed"]),
    ):
        await endpoint(pool, tenant.tenant_id, receiver.url(f"/{name}"), clock, events)
    await endpoint(pool, tenant.tenant_id, receiver.url("/prod"), clock, ["*"], "production")
    await endpoint(pool, other.tenant_id, receiver.url("/other"), clock, ["*"])
    for status in ("created", "delivered"):
        assert (await report(client, tenant.tenant_id, "ml_1", status))[0] == 202
    assert await drain(pool, clock) == 5
    got = {
        p: [r.headers["X-Event-Type"] for r in receiver.at(p)]
        for p in ("/all", "/family", "/delivered", "/failed", "/prod", "/other")
    }
    assert sorted(got["/all"]) == sorted(got["/family"]) == ["mailing.created", "mailing.delivered"]
    assert got["/delivered"] == ["mailing.delivered"]
    assert got["/failed"] == [] and got["/other"] == []
    assert got["/prod"] == [], "a sandbox transition never reaches a production endpoint"

    assert (await report(client, tenant.tenant_id, "ml_1", "printed", "production"))[0] == 202
    assert await drain(pool, clock) == 1
    assert [r.headers["X-Event-Type"] for r in receiver.at("/prod")] == ["mailing.printed"]
    assert len(receiver.at("/all")) == 2


async def test_disabled_endpoint_receives_nothing(
    client: Client, pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock, receiver: Any
) -> None:
    tenant = await make_tenant()
    await endpoint(pool, tenant.tenant_id, receiver.url("/on"), clock)
    off = await endpoint(pool, tenant.tenant_id, receiver.url("/off"), clock)
    owner = Principal(tenant.tenant_id, Environment.SANDBOX, "key")  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        changes = endpoint_store.EndpointChanges(enabled=False)
        assert await endpoint_store.update_endpoint(conn, owner, off, changes, clock.now())
    assert (await report(client, tenant.tenant_id, "ml_1", "paid"))[0] == 202
    assert await drain(pool, clock) == 1
    assert len(receiver.at("/on")) == 1
    assert receiver.at("/off") == []
    assert await scalar(pool, "SELECT count(*) FROM deliveries WHERE endpoint_id = $1", off) == 0


# ---- metrics and documentation ----------------------------------------------------------


def _ingested() -> float:
    return REGISTRY.get_sample_value("webhook_events_ingested_total") or 0.0


async def test_accepted_events_are_counted(client: Client, make_tenant: Any) -> None:
    tenant = await make_tenant()
    start = _ingested()
    await report(client, tenant.tenant_id, "ml_1", "created")
    await report(client, tenant.tenant_id, "ml_1", "created")  # repeat: not counted
    await report(client, tenant.tenant_id, "ml_1", "return_receipt")  # refused: not counted
    item = {"tenant_id": tenant.tenant_id, "environment": "sandbox", "status": "paid"}
    batch = {"transitions": [{**item, "mailing_id": "ml_1"}, {**item, "mailing_id": "ml_2"}]}
    assert (await client.post(BATCH, json=batch, headers=AUTH)).status == 200
    assert _ingested() - start == 3


async def test_platform_routes_are_documented(client: Client) -> None:
    resp = await client.get("/openapi.json")
    doc = await resp.json()
    single = doc["paths"]["/internal/v1/mailings/{mailing_id}/transitions"]["post"]
    batch = doc["paths"]["/internal/v1/transitions"]["post"]
    assert single["security"] == batch["security"] == [{"platformToken": []}]
    assert {"200", "202", "409", "401", "422"} <= set(single["responses"])
    assert "Idempotency-Key" in {p["name"] for p in single["parameters"]}
    assert {"200", "401", "422"} <= set(batch["responses"])


async def _statements_of(
    database_url: str, clock: FakeClock, requests: list[tuple[str, Any, dict[str, str]]]
) -> list[str]:
    """The app's own statements for these requests, in order, and any BEGIN or COMMIT
    (not asyncpg's type introspection, nor the pool's RESET on release), once the day's
    partitions are known (a process makes sure of them once a day, not once a write)."""
    statements: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: statements.append(record.query))

    counting = await asyncpg.create_pool(database_url, min_size=1, max_size=1, init=log_queries)
    try:
        async with counting.acquire() as conn:
            await ensure_day(conn, clock.now())
        statements.clear()
        async with TestClient(TestServer(create_app(make_settings(), counting, clock))) as api:
            for path, body, headers in requests:
                response = await api.post(path, json=body, headers={**AUTH, **headers})
                assert response.status in (200, 202), await response.text()
    finally:
        await counting.close()
    ours = {v for v in vars(queries).values() if isinstance(v, str)}  # the named statements
    framing = ("BEGIN", "COMMIT", "ROLLBACK")
    return [s for s in statements if s in ours or s.strip().upper().startswith(framing)]


async def test_one_transition_is_one_read_and_one_write(
    database_url: str, clock: FakeClock, make_tenant: Any
) -> None:
    """Without an Idempotency-Key: no transaction, no key lookup, two statements."""
    tenant = await make_tenant()
    body = {"tenant_id": tenant.tenant_id, "environment": "sandbox", "status": "created"}
    path = "/internal/v1/mailings/ml_1/transitions"
    assert await _statements_of(database_url, clock, [(path, body, {})]) == [
        queries.READ_INGEST,
        queries.WRITE_EVENTS,
    ]
    keyed = await _statements_of(database_url, clock, [(path, body, {"Idempotency-Key": "k1"})])
    assert keyed == [
        "BEGIN;",
        queries.LOCK_IDEMPOTENCY_KEY,
        queries.GET_IDEMPOTENT_RESPONSE,
        queries.LOCK_MAILINGS,
        queries.READ_INGEST,
        queries.SAVE_IDEMPOTENT_RESPONSE,
        "COMMIT;",
    ], "a repeat writes nothing; the answer is kept in the same transaction"


async def test_a_batch_of_one_takes_the_same_path(
    database_url: str, clock: FakeClock, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    item = {"tenant_id": tenant.tenant_id, "environment": "sandbox", "mailing_id": "ml_1"}
    batch = {"transitions": [{**item, "status": "created"}, {**item, "status": "paid"}]}
    assert await _statements_of(database_url, clock, [(BATCH, batch, {})]) == [
        queries.READ_INGEST,
        queries.WRITE_EVENTS,
    ]


async def test_outbox_events_are_counted_where_written(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = await make_tenant()
    start = _ingested()
    async with pool.acquire() as conn, conn.transaction():
        item = Transition(tenant.tenant_id, "sandbox", "ml_1", MailingStatus.PRINTED)
        await record_transitions(conn, [item, item], clock.now())  # the repeat is not counted
    assert _ingested() - start == 1
