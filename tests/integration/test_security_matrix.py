"""No way across a tenant, an environment or a credential boundary, on any route.

Routes are enumerated from the app's router, so a new route is covered the day it is
added (and a route with an id this file cannot fill in fails until it is taught). Every
tenant route is called with another tenant's key, with the other environment's key, with
a revoked key, with malformed credentials and with the platform token; every platform
route with tenant keys. Then the SSRF matrix through the API (literal addresses at
registration, resolved names at delivery), a static check that secrets are compared in
constant time, and a check that the log scanner of tests/secret_scan.py finds what it must.
"""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.openapi import DocumentedRoute, documented_routes
from dispatcher.clock import FakeClock
from dispatcher.events import Transition, record_transitions
from dispatcher.models import Environment, Principal
from dispatcher.sender import delivery_session
from dispatcher.settings import Settings
from dispatcher.store import endpoints as endpoint_store
from dispatcher.store import tenants
from dispatcher.transitions import MailingStatus
from dispatcher.worker import Worker, WorkerConfig
from tests import secret_scan
from tests.conftest import PLATFORM_TOKEN, TenantKeys, make_settings
from tests.faults.conftest import error_shape_problem
from tests.figures import Recorder
from tests.integration.test_failure_policy import StubResolver

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[2]
URL_PASSWORD = "Matrix-Url-Pw-5rT8"  # registered with the log scanner (module constant)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json"}

# Bodies that pass validation, so a foreign id is judged by the lookup, not the validator.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/webhooks"): {"url": "https://hooks.example.com/x", "events": ["*"]},
    ("PATCH", "/v1/webhooks/{id}"): {"url": "https://evil.example.com/", "description": "mine"},
    ("PUT", "/v1/webhooks/{id}"): {"url": "https://evil.example.com/", "enabled": False},
    ("POST", "/v1/webhooks/{id}/replay"): {"status": "failed"},
    ("POST", "/v1/webhooks/{id}/test"): {"event_type": "mailing.delivered"},
    ("POST", "/v1/webhooks/{id}/rotate-secret"): {"secret": "x" * 32},
}
MALFORMED = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Basic c2tfc2FuZGJveF86eA==",
    "Token sk_sandbox_abc",
    "Bearer sk_sandbox_",
    "Bearer sk_sandbox_" + "A" * 32,
    "Bearer sk_production_" + "A" * 32,
    "Bearer " + "A" * 300,
    "Bearer sk_sandbox_\u00e9\u00e8",
    "Bearer null",
    "Bearer undefined",
    "Bearer ' OR '1'='1",
]


@dataclass
class Objects:
    """One tenant environment's endpoint, event and delivery."""

    endpoint_id: str
    event_id: str
    delivery_id: str
    mailing_id: str

    def ids(self) -> set[str]:
        return {self.endpoint_id, self.event_id, self.delivery_id}


async def _objects(
    pool: asyncpg.Pool, clock: FakeClock, tenant: TenantKeys, env: str, name: str
) -> Objects:
    owner = Principal(tenant.tenant_id, Environment(env), "key_matrix")  # type: ignore[arg-type]
    async with pool.acquire() as conn, conn.transaction():
        endpoint = await endpoint_store.create_endpoint(
            conn,
            owner,
            url=f"http://127.0.0.1:9/{name}",  # a test send is refused before any traffic
            event_types=["*"],
            secret=SECRET,
            now=clock.now(),
            description=name,
        )
        mailing = f"ml_{name}"
        item = Transition(tenant.tenant_id, env, mailing, MailingStatus.CREATED)
        (result,) = await record_transitions(conn, [item], clock.now())
        delivery = await conn.fetchval(
            "SELECT id FROM deliveries WHERE endpoint_id = $1", endpoint.id
        )
    return Objects(endpoint.id, str(result.event_id), f"dlv_{delivery}", mailing)


def _fill(route: DocumentedRoute, objects: Objects) -> str:
    """The route's path with this environment's ids; fails for a parameter it cannot fill."""
    ids = {
        "/v1/webhooks/{id}": objects.endpoint_id,
        "/v1/deliveries/{id}": objects.delivery_id,
        "/v1/events/{event_id}": objects.event_id,
    }
    path = route.path
    for prefix, value in ids.items():
        if path.startswith(prefix):
            path = prefix.rsplit("/", 1)[0] + "/" + value + path[len(prefix) :]
    assert "{" not in path, f"teach test_security_matrix.py the ids of {route.path}"
    if path == "/v1/events":
        path += f"?mailing_id={objects.mailing_id}"
    return path


@dataclass
class Matrix:
    client: Client
    figures: Recorder
    crossings: list[str]
    sent: int = 0

    async def call(
        self, route: DocumentedRoute, path: str, authorization: str | None
    ) -> tuple[int, bytes]:
        headers = {} if authorization is None else {"Authorization": authorization}
        body = BODIES.get((route.method, route.path), {} if route.method != "GET" else None)
        data = None if body is None else orjson.dumps(body)
        headers["Content-Type"] = "application/json"
        response = await self.client.request(route.method, path, data=data, headers=headers)
        raw = await response.read()
        self.sent += 1
        if response.status >= 400:
            problem = error_shape_problem(response.status, response.content_type, raw)
            if problem:
                self.crossings.append(f"{route.method} {path}: {problem}")
        return response.status, raw

    def crossing(self, text: str) -> None:
        self.crossings.append(text)

    def verdict(self) -> None:
        self.figures.add(security_checks=self.sent, boundary_crossings=len(self.crossings))
        assert not self.crossings, "\n".join(self.crossings)


@pytest.fixture
def settings() -> Settings:
    """The matrix sends hundreds of bad credentials from one address: past the throttle,
    they would be 429s; the throttle has tests of its own (test_auth_hardening.py)."""
    return make_settings(auth_failures_per_minute=100_000)


@pytest.fixture
async def matrix(client: Client, figures: Recorder) -> Matrix:
    return Matrix(client, figures, [])


def _routes(client: Client, security: str) -> list[DocumentedRoute]:
    found = [
        r for r in documented_routes(client.app) if r.operation and r.operation.security == security
    ]
    assert found, f"no {security} routes?"
    return found


async def test_every_route_declares_who_may_call_it(client: Client) -> None:
    for route in documented_routes(client.app):
        assert route.operation is not None, f"{route.method} {route.path} is undocumented"
        security = route.operation.security
        if route.path.startswith("/v1/"):
            assert security == "tenant", f"{route.method} {route.path} is {security}"
        elif route.path.startswith("/internal/"):
            assert security == "platform", f"{route.method} {route.path} is {security}"
        elif route.path.startswith("/portal"):
            # the page and its assets, and the link-token exchange (its own credential);
            # the portal's data comes through the tenant routes above
            assert security == "public", f"{route.method} {route.path} is {security}"
        else:
            assert route.path in PUBLIC and security == "public", route.path


async def test_no_tenant_route_reaches_another_tenant_or_environment(
    pool: asyncpg.Pool, clock: FakeClock, make_tenant: Any, matrix: Matrix, client: Client
) -> None:
    alice: TenantKeys = await make_tenant("Alice")
    mallory: TenantKeys = await make_tenant("Mallory")
    target = await _objects(pool, clock, alice, "sandbox", "alice_sandbox")
    await _objects(pool, clock, alice, "production", "alice_production")
    await _objects(pool, clock, mallory, "sandbox", "mallory_sandbox")
    before = await _snapshot(pool, target)
    intruders = {
        "another tenant's key": f"Bearer {mallory.sandbox}",
        "another tenant's production key": f"Bearer {mallory.production}",
        "the other environment's key": f"Bearer {alice.production}",
    }
    for route in _routes(client, "tenant"):
        path = _fill(route, target)
        for who, authorization in intruders.items():
            status, raw = await matrix.call(route, path, authorization)
            leaked = sorted(i for i in target.ids() if i.encode() in raw)
            if "{" in route.path and status != 404:
                matrix.crossing(f"{route.method} {path} with {who}: {status} {raw[:200]!r}")
            elif leaked:
                matrix.crossing(f"{route.method} {path} with {who} shows {leaked}")
    assert await _snapshot(pool, target) == before, "a foreign request changed the target"
    # the control: the owner's own key finds every object (so the ids above were right)
    for route in sorted(_routes(client, "tenant"), key=lambda r: r.method == "DELETE"):
        status, raw = await matrix.call(route, _fill(route, target), f"Bearer {alice.sandbox}")
        assert status < 400 or status == 409, (route.method, route.path, status, raw[:300])
    matrix.verdict()


async def _snapshot(pool: asyncpg.Pool, objects: Objects) -> dict[str, Any]:
    async with pool.acquire() as conn:
        endpoint = await conn.fetchrow(
            "SELECT url, description, enabled, deleted_at, event_types FROM endpoints"
            " WHERE id = $1",
            objects.endpoint_id,
        )
        secrets = await conn.fetch(
            "SELECT secret, expires_at FROM endpoint_secrets WHERE endpoint_id = $1 ORDER BY id",
            objects.endpoint_id,
        )
        delivery = await conn.fetchrow(
            "SELECT status, attempts, next_attempt_at FROM deliveries WHERE id = $1",
            int(objects.delivery_id.removeprefix("dlv_")),
        )
    assert endpoint is not None and delivery is not None
    return {
        "endpoint": dict(endpoint),
        "secrets": [dict(s) for s in secrets],
        "delivery": dict(delivery),
    }


async def test_bad_credentials_open_no_route(
    pool: asyncpg.Pool, clock: FakeClock, make_tenant: Any, matrix: Matrix, client: Client
) -> None:
    alice: TenantKeys = await make_tenant("Alice")
    target = await _objects(pool, clock, alice, "sandbox", "alice")
    async with pool.acquire() as conn:
        revoked = await tenants.create_key(conn, alice.tenant_id, Environment.SANDBOX, clock.now())
        assert await tenants.revoke_key(conn, revoked.id, clock.now())
    tenant_refused = [
        *MALFORMED,
        f"Bearer {revoked.key}",
        f"Bearer {PLATFORM_TOKEN}",  # the platform token is no tenant key
        f"Bearer {alice.sandbox.upper()}",
        f"Bearer {alice.sandbox[:-1]}",
        f"Bearer {alice.sandbox}x",
    ]
    platform_refused = [
        *MALFORMED,
        f"Bearer {alice.sandbox}",  # a tenant key is no platform token
        f"Bearer {alice.production}",
        f"Bearer {PLATFORM_TOKEN[:-1]}",
        f"Bearer {PLATFORM_TOKEN}x",
        PLATFORM_TOKEN,
    ]
    for security, refused in (("tenant", tenant_refused), ("platform", platform_refused)):
        for route in _routes(client, security):
            path = (
                _fill(route, target)
                if security == "tenant"
                else _platform_path(route, alice.tenant_id, revoked.id)
            )
            for authorization in refused:
                status, raw = await matrix.call(route, path, authorization)
                if status != 401:
                    shown = (authorization or "none")[:30]
                    matrix.crossing(f"{route.method} {path} with {shown!r}: {status} {raw[:200]!r}")
    matrix.verdict()


def _platform_path(route: DocumentedRoute, tenant_id: str, key_id: str) -> str:
    path = (
        route.path.replace("{mailing_id}", "ml_matrix")
        .replace("{id}", tenant_id)
        .replace("{key_id}", key_id)
    )
    assert "{" not in path, f"teach test_security_matrix.py the ids of {route.path}"
    return path


async def test_suspended_and_deleted_tenants_keys_open_no_route(
    pool: asyncpg.Pool, clock: FakeClock, make_tenant: Any, matrix: Matrix, client: Client
) -> None:
    """A suspended tenant's live keys are 403 on every tenant route (nothing shown, nothing
    changed); a deleted tenant's are 401, like any unknown key."""
    alice: TenantKeys = await make_tenant("Alice")
    bob: TenantKeys = await make_tenant("Bob")
    target = await _objects(pool, clock, alice, "sandbox", "alice")
    bobs = await _objects(pool, clock, bob, "sandbox", "bob")
    before = await _snapshot(pool, target)
    platform = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
    response = await client.patch(
        f"/internal/v1/tenants/{alice.tenant_id}", json={"suspended": True}, headers=platform
    )
    assert response.status == 200
    response = await client.delete(f"/internal/v1/tenants/{bob.tenant_id}", headers=platform)
    assert response.status in (202, 204)
    for route in _routes(client, "tenant"):
        for objects, keys, expected in ((target, alice, 403), (bobs, bob, 401)):
            path = _fill(route, objects)
            for key in (keys.sandbox, keys.production):
                status, raw = await matrix.call(route, path, f"Bearer {key}")
                if status != expected or any(i.encode() in raw for i in objects.ids()):
                    matrix.crossing(f"{route.method} {path}: {status} {raw[:200]!r}")
    assert await _snapshot(pool, target) == before, "a suspended tenant's request changed data"
    matrix.verdict()


# ---- SSRF through the API -------------------------------------------------------------

BLOCKED_LITERALS = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "0x7f.1",
    "localhost",
    "LOCALHOST.",
    "0.0.0.0",
    "0",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "192.0.2.1",
    "198.18.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::ffff:169.254.169.254]",
    "[64:ff9b::a9fe:a9fe]",
    "[fe80::1]",
    "[fc00::1]",
    "[fd00::1]",
    "[ff02::1]",
    "[2001:db8::1]",
]


async def test_registration_refuses_blocked_literal_addresses(
    make_tenant: Any, matrix: Matrix, client: Client
) -> None:
    alice: TenantKeys = await make_tenant()
    for host in BLOCKED_LITERALS:
        for scheme in ("http", "https"):
            url = f"{scheme}://{host}:8080/hook"
            body = {"url": url, "events": ["*"]}
            response = await client.post("/v1/webhooks", json=body, headers=alice.headers())
            matrix.sent += 1
            answer = await response.json()
            fields = [e["field"] for e in answer.get("error", {}).get("errors", [])]
            if response.status != 422 or fields != ["url"]:
                matrix.crossing(f"{url}: {response.status} {answer}")
    allowed = await client.post(
        "/v1/webhooks",
        json={"url": "https://93.184.216.34/hook", "events": ["*"]},
        headers=alice.headers(),
    )
    assert allowed.status == 201, "a public literal address is allowed"
    matrix.verdict()


BLOCKED_ANSWERS = {
    "loopback.example.test": ["127.0.0.1"],
    "private.example.test": ["10.1.2.3"],
    "metadata.example.test": ["169.254.169.254"],
    "mixed.example.test": ["93.184.216.34", "192.168.1.1"],
    "v6.example.test": ["::1"],
    "mapped.example.test": ["::ffff:127.0.0.1"],
}


@pytest.fixture
async def guarded_client(
    pool: asyncpg.Pool, clock: FakeClock
) -> AsyncIterator[tuple[Client, aiohttp.ClientSession]]:
    """The app as production runs it (no private targets), with DNS answered by a table."""
    resolver = StubResolver(BLOCKED_ANSWERS)
    async with delivery_session(allow_private=False, max_connections=5, resolver=resolver) as s:
        app = create_app(make_settings(), pool, clock=clock, services={"test_session": s})
        async with TestClient(TestServer(app)) as client:
            yield client, s


async def test_delivery_refuses_names_that_resolve_to_blocked_addresses(
    pool: asyncpg.Pool,
    clock: FakeClock,
    make_tenant: Any,
    receiver: Any,
    guarded_client: tuple[Client, aiohttp.ClientSession],
    figures: Recorder,
) -> None:
    client, session = guarded_client
    alice: TenantKeys = await make_tenant()
    auth = alice.headers()
    ids = {}
    for host in BLOCKED_ANSWERS:
        url = f"http://hook:{URL_PASSWORD}@{host}:{receiver.port}/hook"
        created = await client.post(
            "/v1/webhooks", json={"url": url, "events": ["*"]}, headers=auth
        )
        assert created.status == 201, await created.text()  # a name is judged at delivery
        ids[host] = (await created.json())["id"]
        tested = await client.post(f"/v1/webhooks/{ids[host]}/test", headers=auth)
        answer = await tested.json()
        assert (tested.status, answer["outcome"]) == (200, "blocked_address"), answer
        assert URL_PASSWORD not in orjson.dumps(answer).decode()
    async with pool.acquire() as conn, conn.transaction():
        item = Transition(alice.tenant_id, "sandbox", "ml_ssrf", MailingStatus.CREATED)
        await record_transitions(conn, [item], clock.now())
    config = WorkerConfig(allow_private_targets=False)
    await Worker(pool, session, config, clock=clock).drain()
    for host, endpoint_id in ids.items():
        log = await client.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=auth)
        (delivery,) = (await log.json())["data"]
        outcomes = [a["outcome"] for a in delivery["attempts"]]
        assert outcomes == ["blocked_address"], (host, delivery)
    assert receiver.requests == [], "nothing may reach a blocked address"
    figures.add(security_checks=2 * len(BLOCKED_ANSWERS))


# ---- constant-time comparisons and the log scanner ----------------------------------------

_SECRETISH = re.compile(r"token|digest|key_hash|secret|expected|password", re.IGNORECASE)


@pytest.mark.parametrize("module", ["api/auth.py", "dispatcher/store/tenants.py"])
def test_credentials_are_compared_in_constant_time(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("compare_digest")
    ]
    assert calls, f"{module} must compare credentials with hmac.compare_digest"
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
        ):
            text = ast.unparse(node)
            assert not _SECRETISH.search(text), f"{module}: '{text}' is not constant-time"


def test_the_log_scanner_finds_planted_secrets(tmp_path: Path) -> None:
    planted = tmp_path / "planted.txt"  # not *.log: the session's own scan must not see it
    planted.write_text(
        "clean line\n"
        '{"message": "secret whsec_AbCdEfGhIjKlMnOpQrStUvWx"}\n'
        "key sk_production_AbCdEfGhIjKlMnOp\n"
        f"url http://u:{URL_PASSWORD}@example.com/\n"
        f"token {PLATFORM_TOKEN}\n"
    )
    assert URL_PASSWORD in secret_scan.registered(), "module constants are registered"
    report = secret_scan.scan([planted], {PLATFORM_TOKEN, URL_PASSWORD})
    assert [f.line for f in report.findings] == [2, 3, 4, 5]
    assert all(f.secret not in str(f) for f in report.findings), "the report masks them"
