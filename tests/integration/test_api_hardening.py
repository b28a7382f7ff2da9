"""Issue 16's smaller findings against the real API: failed logins, parser errors, slow or
too many clients, integers beyond 64 bits, and the WWW-Authenticate header.

Connections are made with raw sockets where what is under test is HTTP framing itself, to
an API served exactly as `dispatcher serve` serves it (`http_server.api_runner`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import THROTTLE
from dispatcher.clock import FakeClock
from dispatcher.errors import ConfigError
from dispatcher.http_server import api_runner
from dispatcher.settings import MIN_PLATFORM_TOKEN_LENGTH, Settings, load_settings
from tests.conftest import PLATFORM_TOKEN, TenantKeys, make_settings

Client = TestClient[Any, Any]
Served = Callable[..., Awaitable[int]]
PLATFORM = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
WRONG_KEY = "sk_sandbox_WRONGwrongWRONGwrongWRONGwrong"


# ---- failed authentication: logged (sampled), throttled per client address ----------------


async def test_401_says_bearer(client: Client) -> None:
    for path, headers in (
        ("/v1/webhooks", {}),
        ("/v1/webhooks", {"Authorization": f"Bearer {WRONG_KEY}"}),
        ("/v1/webhooks", {"Authorization": "Basic eDp5"}),
        ("/internal/v1/transitions", {"Authorization": "Bearer nope"}),
    ):
        response = await client.post(path, json={}, headers=headers)
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert (await response.json())["error"]["type"] == "unauthorized"


async def test_failed_logins_are_throttled_per_address_and_logged_sampled(
    client: Client,
    settings: Settings,
    clock: FakeClock,
    make_tenant: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="api.auth")
    tenant: TenantKeys = await make_tenant()
    limit = settings.auth_failures_per_minute
    assert limit == 30, "the documented default"
    statuses = []
    for _ in range(limit):
        response = await client.get(
            "/v1/webhooks", headers={"Authorization": f"Bearer {WRONG_KEY}"}
        )
        statuses.append(response.status)
    assert statuses == [401] * limit
    refused = await client.get("/v1/webhooks", headers=tenant.headers())
    assert refused.status == 429, "from this address, even a good key waits"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert (await refused.json())["error"]["type"] == "rate_limited"
    platform = await client.post("/internal/v1/transitions", json={}, headers=PLATFORM)
    assert platform.status == 429, "one count per address, whichever credential it tries"

    clock.advance(61)
    assert (await client.get("/v1/webhooks", headers=tenant.headers())).status == 200

    lines = [r for r in caplog.records if r.name == "api.auth"]
    assert len(lines) == 2, "sampled: the first failure and the one that trips the throttle"
    for record in lines:
        assert record.__dict__["path"] == "/v1/webhooks"
        assert record.__dict__["client"] == "127.0.0.1"
        assert record.__dict__["key_prefix"] == "sk_sandbox_WRO"
        assert WRONG_KEY not in record.getMessage()
        assert WRONG_KEY not in orjson.dumps(record.__dict__, default=str).decode()


def test_platform_token_needs_32_characters() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(platform_token="x" * (MIN_PLATFORM_TOKEN_LENGTH - 1))
    assert "DISPATCHER_PLATFORM_TOKEN" in str(refused.value)
    assert "x" * 31 not in str(refused.value), "the message never echoes the token"
    assert load_settings(platform_token="x" * MIN_PLATFORM_TOKEN_LENGTH).platform_token


# ---- integers beyond 64 bits --------------------------------------------------------------


async def test_integers_outside_int64_are_422_naming_the_field(
    client: Client, make_tenant: Any
) -> None:
    tenant: TenantKeys = await make_tenant()
    big = "18446744073709551616"  # 2**64: orjson would have made it a float
    raw = (
        '{"url": "https://example.com/h", "events": ["*"], "metadata": {"n": ' + big + "}}"
    ).encode()
    headers = {**tenant.headers(), "Content-Type": "application/json"}
    created = await client.post("/v1/webhooks", data=raw, headers=headers)
    assert created.status == 422
    assert [e["field"] for e in (await created.json())["error"]["errors"]] == ["metadata.n"]

    fits = raw.replace(big.encode(), b"-9223372036854775808")
    kept = await client.post("/v1/webhooks", data=fits, headers=headers)
    assert kept.status == 201, await kept.text()
    assert (await kept.json())["metadata"] == {"n": -(2**63)}, "echoed verbatim"

    transition = (
        '{"tenant_id": "' + tenant.tenant_id + '", "environment": "sandbox", '
        '"status": "created", "metadata": {"ids": [1, -' + big + "]}}"
    ).encode()
    one = await client.post(
        "/internal/v1/mailings/ml_big/transitions",
        data=transition,
        headers={**PLATFORM, "Content-Type": "application/json"},
    )
    assert one.status == 422
    assert [e["field"] for e in (await one.json())["error"]["errors"]] == ["metadata.ids.1"]
    batch = b'{"transitions": [' + transition[:-1] + b', "mailing_id": "ml_big"}]}'
    many = await client.post(
        "/internal/v1/transitions",
        data=batch,
        headers={**PLATFORM, "Content-Type": "application/json"},
    )
    assert many.status == 422
    fields = [e["field"] for e in (await many.json())["error"]["errors"]]
    assert fields == ["transitions.0.metadata.ids.1"]


# ---- the HTTP layer as `dispatcher serve` runs it -----------------------------------------


@pytest.fixture
async def served(pool: asyncpg.Pool, clock: FakeClock) -> AsyncIterator[Served]:
    """Start the API with these settings on a free port, as `dispatcher serve` does."""
    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> int:
        settings = make_settings(**overrides)
        runner = api_runner(create_app(settings, pool, clock=clock), settings)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        server = site._server
        assert server is not None
        port: int = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return port

    yield start
    for runner in runners:
        await runner.cleanup()


async def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, read the answer until the server closes (bounded, never timed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    return answer


def parse_answer(answer: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, orjson.loads(body)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/webhooks HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /v1/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk_\x00x\r\n\r\n",
        b"GET /v1/webhooks HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
    ids=["long-header", "nul-header", "many-headers", "long-line", "two-lengths"],
)
async def test_unparseable_requests_answer_json_and_log_one_line(
    served: Served, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    port = await served()
    caplog.set_level(logging.DEBUG)
    status, headers, body = parse_answer(await exchange(port, request_bytes))
    assert (status, headers["content-type"].split(";")[0]) == (400, "application/json")
    assert body["error"]["type"] == "bad_request"
    assert "sk_" not in orjson.dumps(body).decode(), "the offending bytes are not echoed"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].levelno == logging.WARNING and warnings[0].exc_info is None


async def test_connections_beyond_the_cap_get_a_503_and_are_closed(served: Served) -> None:
    port = await served(api_max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    status, headers, body = parse_answer(await exchange(port, b""))
    assert (status, headers["retry-after"], body["error"]["type"]) == (503, "1", "unavailable")
    for reader, writer in held:  # the ones within the cap are served
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(10):
            assert (await reader.read()).startswith(b"HTTP/1.1 200")
        writer.close()


async def test_a_request_head_must_arrive_within_the_header_timeout(served: Served) -> None:
    """A client trickling its head, a byte at a time, is hung up on all the same."""
    port = await served(api_header_timeout_seconds=0.3)  # shortened: the default is 10 s
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    closed = asyncio.create_task(reader.read())
    async with asyncio.timeout(10):  # a bound for a hang, not a measurement
        while not closed.done():
            writer.write(b"X")  # never the end of the head
            await asyncio.wait([closed], timeout=0.05)
    assert closed.result() == b"", "the server hung up"
    writer.close()


async def test_a_silent_connection_is_closed_after_the_idle_timeout(served: Served) -> None:
    port = await served(api_idle_timeout_seconds=0.2)  # shortened: the default is 75 s
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    writer.close()


async def test_a_kept_alive_connection_serves_requests_well_apart(served: Served) -> None:
    """The head deadline runs from a head's first byte, never across idle time."""
    port = await served(api_header_timeout_seconds=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(10):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            assert head.startswith("HTTP/1.1 200"), head
            length = next(
                int(line.partition(":")[2])
                for line in head.split("\r\n")
                if line.lower().startswith("content-length:")
            )
            await reader.readexactly(length)
        await asyncio.sleep(0.4)  # idle for twice the head deadline
    writer.close()


async def test_a_body_must_arrive_within_the_body_timeout(served: Served, make_tenant: Any) -> None:
    tenant: TenantKeys = await make_tenant()
    port = await served(api_body_timeout_seconds=0.2)  # shortened: the default is 30 s
    auth = tenant.headers()["Authorization"]
    head = (
        f"POST /v1/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    status, headers, body = parse_answer(await exchange(port, head + b'{"url": '))
    assert (status, body["error"]["type"]) == (408, "request_timeout")
    assert headers["connection"] == "close"


def test_the_defaults_bound_clients() -> None:
    """What the shortened tests above rely on is what `dispatcher serve` is given."""
    settings = Settings()
    assert (settings.api_header_timeout_seconds, settings.api_body_timeout_seconds) == (10, 30)
    assert (settings.api_idle_timeout_seconds, settings.api_max_connections) == (75, 1000)
    runner = api_runner(web.Application(), settings)
    assert runner._kwargs["keepalive_timeout"] == settings.api_idle_timeout_seconds
    assert runner._header_timeout == settings.api_header_timeout_seconds
    assert runner._max_connections == settings.api_max_connections


async def test_many_wrong_keys_from_another_address_do_not_throttle_this_one(
    pool: asyncpg.Pool, clock: FakeClock, make_tenant: Any
) -> None:
    """The count is per client address: the throttle's other key stays untouched."""
    app = create_app(make_settings(), pool, clock=clock)
    throttle = app[THROTTLE]
    for _ in range(100):
        throttle.failed("192.0.2.1", clock.now())
    tenant: TenantKeys = await make_tenant()
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/v1/webhooks", headers=tenant.headers())).status == 200
