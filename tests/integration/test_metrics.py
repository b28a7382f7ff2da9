"""`/metrics` read back through prometheus_client's parser moves as deliveries succeed, fail
and dead-letter; the backlog gauges follow the database; no label carries an id.

The registry is the process's global one, so every assertion is on a difference between two
scrapes around the action, never on an absolute value.
"""

from __future__ import annotations

import random
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from dispatcher.clock import FakeClock
from dispatcher.errors import ConfigError
from dispatcher.events import Transition, record_transitions
from dispatcher.gauges import refresh_gauges
from dispatcher.models import Environment, Principal
from dispatcher.policy import Outcome, RetryPolicy
from dispatcher.queue import QueueLimits, claim
from dispatcher.retention import BOUNDED_TABLES
from dispatcher.sender import delivery_session
from dispatcher.store import endpoints as endpoint_store
from dispatcher.transitions import MailingStatus
from dispatcher.worker import Worker, WorkerConfig
from run.metrics_server import create_metrics_app, metrics_listener
from tests.conftest import PLATFORM_TOKEN, TenantKeys, make_settings
from tests.tooling import free_port

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ATTEMPTS = "webhook_delivery_attempts_total"
DURATION = "webhook_delivery_attempt_duration_seconds"
LATENCY = "webhook_event_delivery_latency_seconds"
DEAD = "webhook_dead_letters_total"
INGESTED = "webhook_events_ingested_total"

Key = tuple[str, frozenset[tuple[str, str]]]
Scrape = Callable[[], Awaitable["Samples"]]


class Samples:
    """One scrape: every sample by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.values: dict[Key, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.values[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def delta(self, before: Samples, name: str, **labels: str) -> float:
        return self.get(name, **labels) - before.get(name, **labels)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with delivery_session(allow_private=True, max_connections=20) as s:
        yield s


@pytest.fixture
async def scrape(pool: asyncpg.Pool) -> AsyncIterator[Scrape]:
    """GET /metrics from the worker role's listener, as Prometheus would."""
    async with TestClient(TestServer(create_metrics_app(pool))) as client:

        async def read() -> Samples:
            response = await client.get("/metrics")
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            return Samples(await response.text())

        yield read


async def endpoint(pool: asyncpg.Pool, tenant: TenantKeys, url: str, clock: FakeClock) -> str:
    owner = Principal(tenant.tenant_id, Environment.SANDBOX, "key")  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        created = await endpoint_store.create_endpoint(
            conn, owner, url=url, event_types=["*"], secret=SECRET, now=clock.now()
        )
    return created.id


async def emit(
    pool: asyncpg.Pool, tenant: TenantKeys, clock: FakeClock, count: int = 1, first: int = 0
) -> None:
    items = [
        Transition(tenant.tenant_id, "sandbox", f"ml_{i}", MailingStatus.CREATED)
        for i in range(first, first + count)
    ]
    async with pool.acquire() as conn, conn.transaction():
        await record_transitions(conn, items, clock.now())


def worker(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, clock: FakeClock, **kw: Any
) -> Worker:
    kw.setdefault("allow_private_targets", True)
    return Worker(pool, session, WorkerConfig(**kw), clock=clock, rng=random.Random(7))


@pytest.mark.parametrize(
    ("outcome", "status", "extra"),
    [
        (Outcome.SUCCESS, 200, {}),
        (Outcome.HTTP_4XX, 400, {}),
        (Outcome.HTTP_5XX, 503, {}),
        (Outcome.REDIRECT, 302, {"headers": {"Location": "http://127.0.0.1:1/elsewhere"}}),
        (Outcome.TIMEOUT, 200, {"delay": 2.0}),
    ],
)
async def test_each_answer_moves_its_outcome_and_the_duration_histogram(
    pool: asyncpg.Pool,
    make_tenant: Any,
    receiver: Any,
    clock: FakeClock,
    session: aiohttp.ClientSession,
    scrape: Scrape,
    outcome: Outcome,
    status: int,
    extra: dict[str, Any],
) -> None:
    tenant = await make_tenant()
    receiver.script("/hook", status, **extra)
    await endpoint(pool, tenant, receiver.url("/hook"), clock)
    await emit(pool, tenant, clock)
    before = await scrape()
    clock.advance(3)  # the event waits 3 s before its attempt: the latency histogram sees it
    await worker(pool, session, clock, attempt_timeout_seconds=0.3).drain(max_rounds=1)
    after = await scrape()

    for other in Outcome:
        expected = 1 if other == outcome else 0
        assert after.delta(before, ATTEMPTS, outcome=other.value) == expected, other
    assert after.delta(before, f"{DURATION}_count") == 1
    assert after.delta(before, f"{DURATION}_bucket", le="+Inf") == 1
    assert after.delta(before, f"{DURATION}_sum") > 0
    succeeded = outcome == Outcome.SUCCESS
    assert after.delta(before, f"{LATENCY}_count") == int(succeeded)
    if succeeded:
        assert after.delta(before, f"{LATENCY}_sum") == pytest.approx(3.0)
        assert after.delta(before, f"{LATENCY}_bucket", le="2.5") == 0
        assert after.delta(before, f"{LATENCY}_bucket", le="5.0") == 1
    assert after.delta(before, DEAD) == 0, "the first failure is retried, not dead"


async def test_a_closed_port_counts_as_connection_error(
    pool: asyncpg.Pool,
    make_tenant: Any,
    clock: FakeClock,
    session: aiohttp.ClientSession,
    scrape: Scrape,
) -> None:
    tenant = await make_tenant()
    await endpoint(pool, tenant, f"http://127.0.0.1:{free_port()}/hook", clock)
    await emit(pool, tenant, clock)
    before = await scrape()
    await worker(pool, session, clock).drain(max_rounds=1)
    after = await scrape()
    assert after.delta(before, ATTEMPTS, outcome="connection_error") == 1
    assert after.delta(before, f"{DURATION}_count") == 1


async def test_a_private_address_counts_as_blocked_address(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, scrape: Scrape
) -> None:
    tenant = await make_tenant()
    await endpoint(pool, tenant, receiver.url("/hook"), clock)
    await emit(pool, tenant, clock)
    before = await scrape()
    async with delivery_session(allow_private=False, max_connections=5) as guarded:
        await worker(pool, guarded, clock, allow_private_targets=False).drain(max_rounds=1)
    after = await scrape()
    assert after.delta(before, ATTEMPTS, outcome="blocked_address") == 1
    assert receiver.requests == []


async def test_dead_letters_move_when_retries_run_out_and_when_claimed_too_late(
    pool: asyncpg.Pool,
    make_tenant: Any,
    receiver: Any,
    clock: FakeClock,
    session: aiohttp.ClientSession,
    scrape: Scrape,
) -> None:
    tenant = await make_tenant()
    receiver.script("/hook", 500)
    await endpoint(pool, tenant, receiver.url("/hook"), clock)
    await emit(pool, tenant, clock, count=2)
    # a 10 s retry window cannot fit the first 30 s backoff: one attempt each, then dead
    policy = RetryPolicy(max_age_seconds=10)
    before = await scrape()
    await worker(pool, session, clock, policy=policy).drain()
    after = await scrape()
    assert after.delta(before, ATTEMPTS, outcome="http_5xx") == 2
    assert after.delta(before, DEAD) == 2

    await emit(pool, tenant, clock, first=2)
    clock.advance(11)  # claimed after its max age (as behind an open circuit): not sent
    before = await scrape()
    await worker(pool, session, clock, policy=policy).drain()
    after = await scrape()
    assert after.delta(before, DEAD) == 1
    assert after.delta(before, f"{DURATION}_count") == 0, "an expired delivery is not sent"


async def test_ingested_counts_accepted_events_only(
    pool: asyncpg.Pool,
    make_tenant: Any,
    app_client: Callable[..., Awaitable[Any]],
    scrape: Scrape,
) -> None:
    tenant = await make_tenant()
    client = await app_client()
    auth = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
    one = {"tenant_id": tenant.tenant_id, "environment": "sandbox", "status": "created"}

    before = await scrape()
    response = await client.post("/internal/v1/mailings/ml_1/transitions", json=one, headers=auth)
    assert response.status == 202, await response.text()
    repeated = await client.post("/internal/v1/mailings/ml_1/transitions", json=one, headers=auth)
    assert repeated.status == 200, "a repeated status emits nothing"
    batch = {"transitions": [{**one, "mailing_id": f"ml_b{i}"} for i in range(3)]}
    answered = await client.post("/internal/v1/transitions", json=batch, headers=auth)
    assert answered.status == 200, await answered.text()
    after = await scrape()
    assert after.delta(before, INGESTED) == 4


async def _set_states(pool: asyncpg.Pool, disabled: str, tripped: str, until: Any) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE endpoints SET enabled = false, disabled_reason = 'test' WHERE id = $1",
            disabled,
        )
        await conn.execute(
            "UPDATE endpoint_state SET circuit_open_until = $2 WHERE endpoint_id = $1",
            tripped,
            until,
        )


async def test_gauges_reflect_the_backlog_after_a_refresh(
    pool: asyncpg.Pool,
    make_tenant: Any,
    receiver: Any,
    clock: FakeClock,
    session: aiohttp.ClientSession,
    scrape: Scrape,
) -> None:
    tenant = await make_tenant()
    await endpoint(pool, tenant, receiver.url("/a"), clock)
    disabled = await endpoint(pool, tenant, receiver.url("/off"), clock)
    tripped = await endpoint(pool, tenant, receiver.url("/tripped"), clock)
    await _set_states(pool, disabled, tripped, clock.now() + timedelta(hours=1))
    await emit(pool, tenant, clock, count=5)
    async with pool.acquire() as conn:
        pending = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'in_flight')"
        )
    assert pending >= 5

    await refresh_gauges(pool, now=clock.now() + timedelta(seconds=120))
    got = await scrape()
    assert got.get("webhook_deliveries_pending") == pending
    assert got.get("webhook_oldest_pending_age_seconds") == pytest.approx(120, abs=1)
    assert got.get("webhook_endpoints", state="enabled") == 1
    assert got.get("webhook_endpoints", state="disabled") == 1
    assert got.get("webhook_endpoints", state="circuit_open") == 1

    assert got.get("webhook_endpoints_limited", reason="concurrency") == 0
    assert got.get("webhook_endpoints_limited", reason="rate") == 0

    clock.advance(3601)  # past the open circuit, behind which its endpoint's backlog waited
    await worker(pool, session, clock).drain()
    await refresh_gauges(pool, now=clock.now())
    got = await scrape()
    assert got.get("webhook_deliveries_pending") == 0
    assert got.get("webhook_oldest_pending_age_seconds") == 0
    assert got.get("webhook_endpoints", state="circuit_open") == 0


_ID = re.compile(r"\b(ten|ep|evt|key|dlv|ml)_[0-9A-Za-z]+")
BOUNDED = {
    "outcome": {o.value for o in Outcome},
    "state": {"enabled", "disabled", "circuit_open"},
    "table": set(BOUNDED_TABLES),
    "reason": {"concurrency", "rate"},
    "signal": {"overload", "latency"},  # what cut an endpoint's adaptive concurrency limit
}


async def test_no_label_anywhere_carries_a_tenant_or_endpoint_id(
    pool: asyncpg.Pool,
    make_tenant: Any,
    receiver: Any,
    clock: FakeClock,
    session: aiohttp.ClientSession,
    scrape: Scrape,
) -> None:
    receiver.script("/fail", 500)
    tenants = [await make_tenant("A"), await make_tenant("B")]
    ids: set[str] = set()
    for tenant in tenants:
        ids.add(tenant.tenant_id)
        for path in ("/ok", "/fail"):
            ids.add(await endpoint(pool, tenant, receiver.url(path), clock))
        await emit(pool, tenant, clock, count=3)
    await worker(pool, session, clock).drain()
    await refresh_gauges(pool, now=clock.now())
    async with pool.acquire() as conn:
        ids |= {r["id"] for r in await conn.fetch("SELECT id FROM events")}
        ids |= {f"dlv_{r['id']}" for r in await conn.fetch("SELECT id FROM deliveries")}

    scraped = await scrape()
    assert scraped.values, "the scrape is not empty"
    for name, labels in scraped.values:
        for label, value in labels:
            assert value not in ids, f"{name} has an id in label {label}={value}"
            assert not _ID.search(value), f"{name} has an id-like label {label}={value}"
            if name.startswith("webhook_"):
                assert label in {"le", *BOUNDED}, f"{name}: unexpected label {label}"
                assert label == "le" or value in BOUNDED[label], f"{name}: {label}={value}"
    for tenant in tenants:
        assert tenant.tenant_id not in scraped.text


async def test_the_worker_listener_answers_probes(pool: asyncpg.Pool) -> None:
    async with TestClient(TestServer(create_metrics_app(pool))) as client:
        assert (await client.get("/healthz")).status == 200
        ready = await client.get("/readyz")
        assert ready.status == 200 and (await ready.json())["status"] == "ready"


async def test_both_ports_answer_readiness_with_one_handler(database_url: str) -> None:
    """A worker's metrics port and the API port say "not ready" in the same words and shape."""
    closed = await asyncpg.create_pool(database_url, min_size=0, max_size=1)
    await closed.close()  # every acquire now fails, as when the database is gone
    answers = []
    for app in (create_metrics_app(closed), create_app(make_settings(), closed)):
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/readyz")
            answers.append((response.status, await response.json()))
    assert answers[0] == answers[1]
    status, body = answers[0]
    assert status == 503
    assert body == {"error": {"type": "not_ready", "message": "database unreachable"}}


async def test_a_taken_metrics_port_fails_start_up_only_when_configured(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="DISPATCHER_METRICS_PORT"):
            async with metrics_listener("127.0.0.1", port, pool, required=True):
                pass
        async with metrics_listener("127.0.0.1", port, pool, required=False):
            pass  # the default port: a warning, and the worker runs on
    assert "running without /metrics" in caplog.text


async def test_endpoints_held_back_by_flow_control_are_counted(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, clock: FakeClock, scrape: Scrape
) -> None:
    """One endpoint at its concurrency limit, one waiting for its rate-limit slot, one free."""
    tenant = await make_tenant()
    busy = await endpoint(pool, tenant, receiver.url("/busy"), clock)
    limited = await endpoint(pool, tenant, receiver.url("/limited"), clock)
    await endpoint(pool, tenant, receiver.url("/idle"), clock)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE endpoints SET rate_limit_per_second = 1 WHERE id = $1", limited)
    await emit(pool, tenant, clock, count=20)
    async with pool.acquire() as conn:  # take only what the limits let through, send nothing
        await conn.execute(
            "DELETE FROM delivery_queue WHERE endpoint_id NOT IN ($1, $2)", busy, limited
        )
        claimed = await claim(conn, clock.now(), 64, QueueLimits(), worker_id=0)
    assert [j.endpoint_id for j in claimed].count(busy) == 8  # a new endpoint's initial limit
    assert [j.endpoint_id for j in claimed].count(limited) == 1  # one slot per second
    await refresh_gauges(pool, now=clock.now())
    got = await scrape()
    assert got.get("webhook_endpoints_limited", reason="concurrency") == 1
    assert got.get("webhook_endpoints_limited", reason="rate") == 1
