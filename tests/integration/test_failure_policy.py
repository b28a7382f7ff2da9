"""Receivers that fail, redirect, throttle, vanish or stall, against the real worker and DB."""

from __future__ import annotations

import asyncio
import base64
import random
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from dispatcher.clock import FakeClock
from dispatcher.events import Transition, record_transitions
from dispatcher.models import Environment, Principal
from dispatcher.policy import RetryPolicy
from dispatcher.queue import QueueLimits, claim, next_due
from dispatcher.sender import delivery_session
from dispatcher.store import endpoints as endpoint_store
from dispatcher.store.endpoints import EndpointChanges
from dispatcher.transitions import MailingStatus
from dispatcher.worker import Worker, WorkerConfig

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with delivery_session(allow_private=True, max_connections=50) as s:
        yield s


def worker(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, clock: FakeClock, **kw: Any
) -> Worker:
    config = WorkerConfig(allow_private_targets=True, **kw)
    return Worker(pool, session, config, clock=clock, rng=random.Random(7))


async def endpoint(pool: asyncpg.Pool, tenant: Any, url: str, clock: FakeClock) -> str:
    owner = Principal(tenant.tenant_id, Environment.SANDBOX, "key")  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        created = await endpoint_store.create_endpoint(
            conn, owner, url=url, event_types=["*"], secret=SECRET, now=clock.now()
        )
    return created.id


async def emit(pool: asyncpg.Pool, tenant: Any, clock: FakeClock, count: int = 1) -> list[str]:
    items = [
        Transition(tenant.tenant_id, "sandbox", f"ml_{i}", MailingStatus.CREATED)
        for i in range(count)
    ]
    async with pool.acquire() as conn, conn.transaction():
        return [str(r.event_id) for r in await record_transitions(conn, items, clock.now())]


async def delivery(pool: asyncpg.Pool) -> asyncpg.Record:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM deliveries")
    assert row is not None
    return row


async def attempts(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM attempts ORDER BY delivery_id, attempt")


async def drain_until_settled(w: Worker, pool: asyncpg.Pool, clock: FakeClock) -> None:
    """Jump the fake clock to each scheduled retry until nothing is pending."""
    for _ in range(50):
        await w.drain()
        row = await delivery(pool)
        if row["status"] != "pending":
            return
        clock.set(row["next_attempt_at"])
    raise AssertionError("delivery never settled")


async def test_500_500_200_is_three_attempts_then_success(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, session: Any
) -> None:
    tenant = await make_tenant()
    receiver.script("/hook", 500, 500, 200)
    await endpoint(pool, tenant, receiver.url("/hook"), clock)
    (event_id,) = await emit(pool, tenant, clock)
    await drain_until_settled(worker(pool, session, clock), pool, clock)
    got = receiver.at("/hook")
    assert [r.headers["X-Delivery-Attempt"] for r in got] == ["1", "2", "3"]
    assert {r.headers["X-Event-Id"] for r in got} == {event_id}
    assert len({r.body for r in got}) == 1, "every attempt carries the same bytes"
    assert [(a["outcome"], a["status_code"]) for a in await attempts(pool)] == [
        ("http_5xx", 500),
        ("http_5xx", 500),
        ("success", 200),
    ]
    assert (await delivery(pool))["status"] == "succeeded"


async def test_first_retry_comes_within_a_minute(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, session: Any
) -> None:
    tenant = await make_tenant()
    receiver.script("/hook", 503)
    await endpoint(pool, tenant, receiver.url("/hook"), clock)
    await emit(pool, tenant, clock)
    await worker(pool, session, clock).drain()
    row = await delivery(pool)
    wait = (row["next_attempt_at"] - clock.now()).total_seconds()
    assert row["status"] == "pending" and 0 < wait <= 60


async def test_redirect_is_not_followed_and_is_retried(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, session: Any
) -> None:
    tenant = await make_tenant()
    receiver.script("/hook", 302, 200, headers={"Location": receiver.url("/elsewhere")})
    await endpoint(pool, tenant, receiver.url("/hook"), clock)
    await emit(pool, tenant, clock)
    w = worker(pool, session, clock)
    await w.drain()
    assert receiver.at("/elsewhere") == [], "the Location target must receive nothing"
    assert [a["outcome"] for a in await attempts(pool)] == ["redirect"]
    assert (await delivery(pool))["status"] == "pending"
    await drain_until_settled(w, pool, clock)
    assert receiver.at("/elsewhere") == []
    assert (await delivery(pool))["status"] == "succeeded"


async def test_always_500_is_dead_at_the_max_age_never_after(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, session: Any
) -> None:
    tenant = await make_tenant()
    receiver.script("/hook", 500)
    await endpoint(pool, tenant, receiver.url("/hook"), clock)
    start = clock.now()
    await emit(pool, tenant, clock)
    policy = RetryPolicy(base_seconds=1, multiplier=2, max_delay_seconds=8, max_age_seconds=30)
    await drain_until_settled(worker(pool, session, clock, policy=policy), pool, clock)
    row = await delivery(pool)
    assert row["status"] == "dead"
    tried = await attempts(pool)
    assert len(tried) >= 4
    assert all(a["started_at"] <= start + timedelta(seconds=30) for a in tried)
    assert len(receiver.at("/hook")) == len(tried)


async def test_retry_after_on_429_is_respected(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, session: Any
) -> None:
    tenant = await make_tenant()
    receiver.script("/hook", 429, 200, headers={"Retry-After": "120"})
    await endpoint(pool, tenant, receiver.url("/hook"), clock)
    await emit(pool, tenant, clock)
    w = worker(pool, session, clock)
    await w.drain()
    row = await delivery(pool)
    assert row["next_attempt_at"] >= clock.now() + timedelta(seconds=120)
    clock.advance(119)
    await w.drain()
    assert len(receiver.at("/hook")) == 1, "nothing before Retry-After has passed"
    clock.advance(2)
    await w.drain()
    assert len(receiver.at("/hook")) == 2
    assert (await delivery(pool))["status"] == "succeeded"


async def test_410_disables_the_endpoint_and_cancels_its_pending_deliveries(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, session: Any
) -> None:
    tenant = await make_tenant()
    receiver.script("/gone", 410)
    endpoint_id = await endpoint(pool, tenant, receiver.url("/gone"), clock)
    await emit(pool, tenant, clock, count=30)
    await worker(pool, session, clock, concurrency=1).drain(max_rounds=1)
    async with pool.acquire() as conn:
        ep = await conn.fetchrow(
            "SELECT enabled, disabled_reason FROM endpoints WHERE id=$1", endpoint_id
        )
        statuses = {r["status"] for r in await conn.fetch("SELECT status FROM deliveries")}
    assert ep["enabled"] is False and "410" in ep["disabled_reason"]
    assert statuses == {"cancelled"}
    await emit(pool, tenant, clock, count=1)
    await worker(pool, session, clock).drain()
    assert len(receiver.at("/gone")) == 1, "a disabled endpoint receives nothing more"


class StubResolver(AbstractResolver):
    """Answers from a table, so host names can point anywhere without real DNS."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in self.table[host]
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("host", "answers"),
    [
        ("loopback.test", ["127.0.0.1"]),
        ("private.test", ["10.1.2.3"]),
        ("metadata.test", ["169.254.169.254"]),
        ("cgnat.test", ["100.64.0.1"]),
        ("mixed.test", ["8.8.8.8", "192.168.1.1"]),
        ("v6-loopback.test", ["::1"]),
        ("v6-ula.test", ["fd00::1"]),
        ("v6-mapped.test", ["::ffff:127.0.0.1"]),
    ],
)
async def test_host_names_resolving_to_blocked_addresses_are_refused(
    pool: asyncpg.Pool,
    make_tenant: Any,
    receiver: Any,
    clock: FakeClock,
    host: str,
    answers: list[str],
) -> None:
    tenant = await make_tenant()
    await endpoint(pool, tenant, f"http://{host}:{receiver.port}/hook", clock)
    await emit(pool, tenant, clock)
    resolver = StubResolver({host: answers})
    async with delivery_session(allow_private=False, max_connections=5, resolver=resolver) as s:
        await Worker(pool, s, WorkerConfig(allow_private_targets=False), clock=clock).drain()
    (attempt,) = await attempts(pool)
    assert attempt["outcome"] == "blocked_address"
    assert receiver.requests == []


@pytest.mark.parametrize("literal", ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "0x7f.1"])
async def test_literal_blocked_addresses_are_refused_at_delivery(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, literal: str
) -> None:
    tenant = await make_tenant()
    await endpoint(pool, tenant, f"http://{literal}:{receiver.port}/hook", clock)
    await emit(pool, tenant, clock)
    async with delivery_session(allow_private=False, max_connections=5) as s:
        await Worker(pool, s, WorkerConfig(allow_private_targets=False), clock=clock).drain()
    assert [a["outcome"] for a in await attempts(pool)] == ["blocked_address"]
    assert receiver.requests == []


async def test_connection_goes_to_the_vetted_address_with_the_original_host(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock
) -> None:
    tenant = await make_tenant()
    await endpoint(pool, tenant, f"http://hooks.example.test:{receiver.port}/hook", clock)
    await emit(pool, tenant, clock)
    resolver = StubResolver({"hooks.example.test": ["127.0.0.1"]})
    async with delivery_session(allow_private=True, max_connections=5, resolver=resolver) as s:
        await Worker(pool, s, WorkerConfig(allow_private_targets=True), clock=clock).drain()
    (got,) = receiver.requests
    assert got.headers["Host"] == f"hooks.example.test:{receiver.port}"


async def test_userinfo_is_sent_as_basic_auth_and_stripped_from_the_url(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, session: Any
) -> None:
    tenant = await make_tenant()
    url = receiver.url("/hook").replace("http://", "http://alice:s3cr%40t@")
    await endpoint(pool, tenant, url, clock)
    await emit(pool, tenant, clock)
    await worker(pool, session, clock).drain()
    (got,) = receiver.requests
    scheme, _, encoded = got.headers["Authorization"].partition(" ")
    assert (scheme, base64.b64decode(encoded)) == ("Basic", b"alice:s3cr@t")
    assert "alice" not in got.path


async def test_per_endpoint_cap_holds_across_claims(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock
) -> None:
    tenant = await make_tenant()
    await endpoint(pool, tenant, receiver.url("/hook"), clock)
    await emit(pool, tenant, clock, count=40)
    limits = QueueLimits(endpoint_concurrency=4)
    async with pool.acquire() as a, pool.acquire() as b:
        first, second = await asyncio.gather(
            claim(a, clock.now(), 64, limits, worker_id=1),
            claim(b, clock.now(), 64, limits, worker_id=2),
        )
    assert len(first) + len(second) == 4, "two claimers together never exceed the cap"


async def _open_circuit(
    pool: asyncpg.Pool,
    tenant: Any,
    receiver: Any,
    clock: FakeClock,
    session: Any,
    *,
    events: int,
    open_seconds: float,
) -> tuple[str, Worker, QueueLimits]:
    """An endpoint answering 500 with `events` queued; one round of 5 attempts opens its
    circuit for `open_seconds`. -> the endpoint, the worker and its limits."""
    receiver.script("/down", 500)
    down = await endpoint(pool, tenant, receiver.url("/down"), clock)
    await emit(pool, tenant, clock, count=events)
    limits = QueueLimits(
        endpoint_concurrency=5, breaker_threshold=5, breaker_open_seconds=open_seconds
    )
    w = worker(pool, session, clock, concurrency=5, limits=limits)
    await w.drain(max_rounds=1)
    return down, w, limits


async def test_failing_endpoint_opens_its_circuit_and_its_backlog_waits(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, session: Any
) -> None:
    tenant = await make_tenant()
    down, w, limits = await _open_circuit(
        pool, tenant, receiver, clock, session, events=20, open_seconds=60
    )
    opened_until = clock.now() + timedelta(seconds=60)
    async with pool.acquire() as conn:
        ep = await conn.fetchrow("SELECT * FROM endpoint_state WHERE endpoint_id=$1", down)
        shown = await conn.fetch(
            "SELECT next_attempt_at FROM deliveries WHERE status='pending' AND endpoint_id=$1",
            down,
        )
        due = await next_due(conn)
        # the circuit is read, not written into the backlog: a dead endpoint's thousands of
        # queued rows are not rewritten each time it re-opens (migration 013)
        rewritten = await conn.fetchval(
            "SELECT count(*) FROM delivery_queue WHERE endpoint_id=$1 AND next_attempt_at > $2",
            down,
            clock.now(),
        )
        taken = await claim(conn, clock.now(), 64, limits, worker_id=9)
    assert ep["consecutive_failures"] == 5
    assert ep["circuit_open_until"] == opened_until
    assert len(shown) == 20 and {r["next_attempt_at"] for r in shown} == {opened_until}, (
        "the delivery log shows each waiting delivery's next attempt when the circuit closes"
    )
    assert due == opened_until, "an idle worker sleeps until the circuit closes"
    assert rewritten == 5, "only the five attempted deliveries have a new due time (a retry)"
    assert taken == [], "nothing is claimed while the circuit is open"
    clock.advance(61)
    receiver.script("/down", 200)
    await w.drain(max_rounds=1)
    assert len(receiver.at("/down")) == 6, "half-open: a single probe goes first"
    await w.drain()
    async with pool.acquire() as conn:
        ep = await conn.fetchrow("SELECT * FROM endpoint_state WHERE endpoint_id=$1", down)
    assert ep["consecutive_failures"] == 0 and ep["circuit_open_until"] is None
    assert len(receiver.at("/down")) == 25, "the 5 retried and the 15 that waited, once each"


async def test_re_enabling_an_endpoint_sends_its_waiting_backlog_at_once(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, session: Any
) -> None:
    """The tenant fixed the receiver and said so: no 30 min wait for the circuit."""
    tenant = await make_tenant()
    down, w, _ = await _open_circuit(
        pool, tenant, receiver, clock, session, events=10, open_seconds=1800
    )
    owner = Principal(tenant.tenant_id, Environment.SANDBOX, "key")  # type: ignore[arg-type]
    receiver.script("/down", 200)
    clock.advance(1)
    async with pool.acquire() as conn:
        assert await next_due(conn) == clock.now() + timedelta(seconds=1799)
        # PATCH {"enabled": true} on an enabled endpoint closes its circuit (disabling would
        # cancel its backlog)
        await endpoint_store.update_endpoint(
            conn, owner, down, EndpointChanges(enabled=True), clock.now()
        )
        due = await next_due(conn)
    assert due is not None and due < clock.now(), "the waiting backlog is due again"
    await w.drain()
    assert len(receiver.at("/down")) == 10, "the five never tried, sent without waiting"


async def test_a_stalled_endpoint_does_not_hold_back_a_healthy_one(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, session: Any
) -> None:
    """Both endpoints get every event; the healthy one is served while the stalled one hangs."""
    tenant = await make_tenant()
    receiver.script("/stalled", 200, delay=30)
    await endpoint(pool, tenant, receiver.url("/stalled"), clock)
    await endpoint(pool, tenant, receiver.url("/healthy"), clock)
    await emit(pool, tenant, clock, count=60)
    limits = QueueLimits(endpoint_concurrency=4)
    w = worker(
        pool,
        session,
        clock,
        concurrency=16,
        attempt_timeout_seconds=20,
        limits=limits,
        shutdown_grace_seconds=0.1,
    )
    runner = asyncio.create_task(w.run())
    try:
        await receiver.wait_for(60, path="/healthy", timeout=15)
        # every stalled request is still hanging: the healthy endpoint never waited on them
        assert len(receiver.at("/stalled")) == 4, "the stalled endpoint holds at most its cap"
    finally:
        w.stop()
        await runner
