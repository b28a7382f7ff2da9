"""From a mailing transition to a signed POST at a real receiver, through the real database."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import UTC, datetime
from typing import Any

import asyncpg
import stripe

from dispatcher.clock import FakeClock
from dispatcher.events import Transition, record_transitions
from dispatcher.models import Principal
from dispatcher.sender import delivery_session
from dispatcher.store import endpoints as endpoint_store
from dispatcher.transitions import Accept, MailingStatus
from dispatcher.worker import Worker, WorkerConfig


async def _endpoint(
    pool: asyncpg.Pool,
    tenant: Any,
    url: str,
    clock: FakeClock,
    events: list[str] | None = None,
    env: str = "sandbox",
) -> Any:
    from dispatcher.models import Environment

    owner = Principal(tenant.tenant_id, Environment(env), "key")  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        return await endpoint_store.create_endpoint(
            conn,
            owner,
            url=url,
            event_types=events or ["*"],
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            now=clock.now(),
        )


async def test_transition_reaches_receiver_signed(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock
) -> None:
    tenant = await make_tenant()
    await _endpoint(pool, tenant, receiver.url("/a"), clock)
    await _endpoint(pool, tenant, receiver.url("/b"), clock, events=["mailing.delivered"])
    async with pool.acquire() as conn, conn.transaction():
        results = await record_transitions(
            conn,
            [
                Transition(tenant.tenant_id, "sandbox", "ml_1", MailingStatus.CREATED),
                Transition(tenant.tenant_id, "sandbox", "ml_1", MailingStatus.DELIVERED),
            ],
            clock.now(),
        )
    assert [r.verdict for r in results] == [Accept(), Accept()]
    config = WorkerConfig(allow_private_targets=True)
    async with delivery_session(allow_private=True, max_connections=10) as session:
        worker = Worker(pool, session, config, clock=clock, rng=random.Random(1))
        assert await worker.drain() == 3
    assert len(receiver.at("/a")) == 2
    (b,) = receiver.at("/b")
    assert b.headers["X-Event-Type"] == "mailing.delivered"
    assert b.headers["X-Delivery-Attempt"] == "1"
    same = [r for r in receiver.at("/a") if r.headers["X-Event-Id"] == b.headers["X-Event-Id"]]
    assert same[0].body == b.body
    stripe.WebhookSignature.verify_header(
        b.body.decode(),
        b.headers["X-Bjet24-Signature"],
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        tolerance=None,
    )
    async with pool.acquire() as conn:
        statuses = await conn.fetch("SELECT status FROM deliveries")
        in_flight = await conn.fetchval("SELECT sum(in_flight) FROM endpoint_state")
    assert {r["status"] for r in statuses} == {"succeeded"}
    assert in_flight == 0


async def test_standard_webhooks_opt_in_and_rotation_verify_with_real_libraries(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock
) -> None:
    import standardwebhooks

    from dispatcher.models import Environment

    clock.set(datetime.now(UTC))  # the standardwebhooks verifier checks the timestamp's age
    tenant = await make_tenant()
    owner = Principal(tenant.tenant_id, Environment.SANDBOX, "key")  # type: ignore[arg-type]
    old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    new = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
    async with pool.acquire() as conn:
        ep = await endpoint_store.create_endpoint(
            conn,
            owner,
            url=receiver.url("/std"),
            event_types=["*"],
            secret=old,
            now=clock.now(),
            standard_webhooks=True,
        )
        await endpoint_store.rotate_secret(conn, owner, ep.id, new, 3600, clock.now())
    async with pool.acquire() as conn, conn.transaction():
        await record_transitions(
            conn,
            [Transition(tenant.tenant_id, "sandbox", "ml_9", MailingStatus.CREATED)],
            clock.now(),
        )
    async with delivery_session(allow_private=True, max_connections=10) as session:
        worker = Worker(pool, session, WorkerConfig(allow_private_targets=True), clock=clock)
        await worker.drain()
    (got,) = receiver.requests
    header = got.headers["X-Bjet24-Signature"]
    assert header.count("v1=") == 2, "one signature per active secret during the overlap"
    for secret in (old, new):  # a receiver on either secret accepts it
        stripe.WebhookSignature.verify_header(got.body.decode(), header, secret, tolerance=None)
        standardwebhooks.Webhook(secret).verify(
            got.body,
            {k: got.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")},
        )
    # Newest last: a parser keeping only the last v1= (the Bjet24 article's) holds the new one.
    last_v1 = header.rsplit("v1=", 1)[1]
    timestamp = header.split(",")[0].removeprefix("t=")
    signed = f"{timestamp}.".encode() + got.body
    assert last_v1 == hmac.new(new.encode(), signed, hashlib.sha256).hexdigest()
    assert got.headers["webhook-id"] == got.headers["X-Event-Id"]
