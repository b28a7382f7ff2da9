"""Issue 16's SSRF findings, each against the real worker, API, receiver and database.

A hosts file is stood in for by patching ``socket.getaddrinfo`` (what the operating system's
resolver is called through): it answers every name of ``HOSTS``, including the colon host
``x:vm`` that aiohttp took for an IP literal and handed to the OS unvetted, with loopback in
both spellings. Nothing may reach the receiver behind it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from dispatcher.clock import FakeClock
from dispatcher.events import Transition, record_transitions
from dispatcher.models import Environment, Principal
from dispatcher.netguard import BlockedAddress
from dispatcher.sender import GuardedConnector, delivery_session
from dispatcher.store import endpoints as endpoint_store
from dispatcher.transitions import MailingStatus
from dispatcher.worker import Worker, WorkerConfig
from tests.conftest import TenantKeys, make_settings
from tests.figures import Recorder

Client = TestClient[Any, Any]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOSTS = ("x:vm", "vm", "vm.example.test")
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1")


@pytest.fixture
def hosts_file(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every name of HOSTS resolves to loopback, v4 and v4-mapped v6; the rest as before."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: Any, port: Any, family: int = 0, *args: Any, **kw: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in HOSTS:
            return real(host, port, family, *args, **kw)
        asked.append(name)
        answers = []
        if family in (socket.AF_UNSPEC, socket.AF_INET):
            answers.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (LOOPBACK[0], port)))
        if family in (socket.AF_UNSPEC, socket.AF_INET6):
            answers.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (LOOPBACK[1], port, 0, 0)))
        return answers

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked


class PlainResolver(AbstractResolver):
    """A resolver that vets nothing: whatever answers DNS, the connector must still hold."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in LOOPBACK
        ]

    async def close(self) -> None:
        return None


@pytest.fixture
async def guarded() -> AsyncIterator[aiohttp.ClientSession]:
    """The delivery client as production runs it: no private targets."""
    async with delivery_session(allow_private=False, max_connections=5) as session:
        yield session


@pytest.fixture
async def api(
    pool: asyncpg.Pool, clock: FakeClock, guarded: aiohttp.ClientSession
) -> AsyncIterator[Client]:
    app = create_app(make_settings(), pool, clock=clock, services={"test_session": guarded})
    async with TestClient(TestServer(app)) as client:
        yield client


async def stored_endpoint(pool: asyncpg.Pool, tenant: TenantKeys, url: str, now: Any) -> str:
    """Written straight to the database, as a URL accepted before today's rules would be."""
    owner = Principal(tenant.tenant_id, Environment.SANDBOX, "key")  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        created = await endpoint_store.create_endpoint(
            conn, owner, url=url, event_types=["*"], secret=SECRET, now=now
        )
    return created.id


async def deliver_one_event(
    pool: asyncpg.Pool, tenant: TenantKeys, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    item = Transition(tenant.tenant_id, "sandbox", "ml_ssrf", MailingStatus.CREATED)
    async with pool.acquire() as conn, conn.transaction():
        await record_transitions(conn, [item], clock.now())
    config = WorkerConfig(allow_private_targets=False)
    await Worker(pool, session, config, clock=clock).drain()


async def attempts_by_endpoint(pool: asyncpg.Pool) -> dict[str, list[tuple[str, str]]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT d.endpoint_id, a.outcome, a.error FROM attempts a"
            " JOIN deliveries d ON d.id = a.delivery_id ORDER BY a.delivery_id, a.attempt"
        )
    found: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        found.setdefault(row["endpoint_id"], []).append((row["outcome"], row["error"] or ""))
    return found


@pytest.mark.parametrize(
    "host", ["[x:vm]", "[vm]", "[::1%25]", "[::1%25eth0]", "[fe80::1%25lo]", "[127.0.0.1]"]
)
async def test_bracketed_hosts_that_are_no_ipv6_address_are_422(
    api: Client, make_tenant: Any, host: str
) -> None:
    tenant: TenantKeys = await make_tenant()
    url = f"http://{host}:19001/hook"
    created = await api.post(
        "/v1/webhooks", json={"url": url, "events": ["*"]}, headers=tenant.headers()
    )
    assert created.status == 422, await created.text()
    assert [e["field"] for e in (await created.json())["error"]["errors"]] == ["url"]
    good = await api.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/", "events": ["*"]},
        headers=tenant.headers(),
    )
    endpoint_id = (await good.json())["id"]
    patched = await api.patch(
        f"/v1/webhooks/{endpoint_id}", json={"url": url}, headers=tenant.headers()
    )
    assert patched.status == 422, await patched.text()
    assert [e["field"] for e in (await patched.json())["error"]["errors"]] == ["url"]


async def test_nothing_reaches_loopback_through_odd_hosts_and_errors_hide_the_address(
    pool: asyncpg.Pool,
    clock: FakeClock,
    make_tenant: Any,
    receiver: Any,
    hosts_file: list[str],
    guarded: aiohttp.ClientSession,
    api: Client,
    caplog: pytest.LogCaptureFixture,
    figures: Recorder,
) -> None:
    tenant: TenantKeys = await make_tenant()
    port = receiver.port
    stored = {
        url: await stored_endpoint(pool, tenant, url, clock.now())
        for url in (
            f"http://[x:vm]:{port}/colon",  # the finding: a colon host the OS resolves
            f"http://[::1%25]:{port}/zone",  # a zone id, registered while private was allowed
            f"http://\uff56\uff4d:{port}/fullwidth",  # was a poison delivery (UnicodeError)
        )
    }
    registered = await api.post(
        "/v1/webhooks",
        json={"url": f"http://vm.example.test:{port}/name", "events": ["*"]},
        headers=tenant.headers(),
    )
    assert registered.status == 201, "a name is judged by what it resolves to, at delivery"
    stored["name"] = (await registered.json())["id"]
    caplog.set_level(logging.WARNING, logger="dispatcher.sender")

    for endpoint_id in stored.values():
        tested = await api.post(f"/v1/webhooks/{endpoint_id}/test", headers=tenant.headers())
        answer = await tested.json()
        assert (tested.status, answer["outcome"]) == (200, "blocked_address"), answer
        shown = orjson.dumps(answer).decode()
        assert "127.0.0.1" not in shown and "::ffff" not in shown, answer
    await deliver_one_event(pool, tenant, guarded, clock)

    found = await attempts_by_endpoint(pool)
    for url, endpoint_id in stored.items():
        assert [outcome for outcome, _ in found[endpoint_id]] == ["blocked_address"], url
        for _, error in found[endpoint_id]:
            assert "127.0.0.1" not in error and "::ffff" not in error, error
    assert receiver.requests == [], "nothing may reach a loopback receiver"
    assert hosts_file, "the stand-in hosts file was consulted: the test exercised it"
    logged = [getattr(r, "address", None) for r in caplog.records]
    assert set(logged) & {"127.0.0.1", "::ffff:127.0.0.1"}, "server logs keep the address"
    figures.add(security_checks=2 * len(stored))  # a test send and a delivery each


async def test_registration_stores_the_normalised_url(api: Client, make_tenant: Any) -> None:
    tenant: TenantKeys = await make_tenant()
    for given, stored in (
        ("http://b\u00fccher.de/h\u00e4", "http://xn--bcher-kva.de/h%C3%A4"),
        ("http://\uff56\uff4d.example.com:19001/", "http://vm.example.com:19001/"),
    ):
        created = await api.post(
            "/v1/webhooks", json={"url": given, "events": ["*"]}, headers=tenant.headers()
        )
        assert created.status == 201, await created.text()
        assert (await created.json())["url"] == stored


async def post_through(connector: aiohttp.TCPConnector, url: str) -> None:
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(url, data=b"{}") as response,
    ):
        await response.read()


@pytest.mark.parametrize("allow_private", [False, True])
async def test_the_connector_refuses_names_the_os_would_resolve(
    receiver: Any, hosts_file: list[str], allow_private: bool
) -> None:
    """aiohttp hands a host with a ':' to the socket as is; only IP addresses may go there."""
    connector = GuardedConnector(allow_private=allow_private)
    with pytest.raises(BlockedAddress):
        await post_through(connector, f"http://[x:vm]:{receiver.port}/colon")
    assert receiver.requests == []


async def test_the_connector_vets_whatever_a_resolver_answers(receiver: Any) -> None:
    connector = GuardedConnector(allow_private=False, resolver=PlainResolver())
    with pytest.raises(BlockedAddress):
        await post_through(connector, f"http://vm.example.test:{receiver.port}/name")
    assert receiver.requests == []
    allowed = GuardedConnector(allow_private=True, resolver=PlainResolver())
    await post_through(allowed, f"http://vm.example.test:{receiver.port}/name")
    assert [r.path for r in receiver.requests] == ["/name"], "the check is no blanket refusal"


class PeerCheckOnly(GuardedConnector):
    """The connector with its first check off, to prove the peer check holds by itself."""

    def _vet_addresses(self, host: str, addr_infos: Any) -> None:
        return None


async def test_the_connected_peer_is_vetted_before_the_request_is_written(
    receiver: Any, hosts_file: list[str]
) -> None:
    with pytest.raises(BlockedAddress):
        await post_through(PeerCheckOnly(allow_private=False), f"http://[x:vm]:{receiver.port}/")
    with pytest.raises(BlockedAddress):
        await post_through(
            PeerCheckOnly(allow_private=False, resolver=PlainResolver()),
            f"http://vm.example.test:{receiver.port}/",
        )
    assert hosts_file == ["x:vm"], "the connection was made, through the stand-in hosts file"
    assert receiver.requests == [], "and closed before a byte of the request was written"
