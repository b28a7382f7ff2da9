"""No secret reaches the logs: URL credentials, signing secrets, API keys, the platform token
and the database password, through a real `dispatcher serve` at DEBUG level, error paths
included (failed attempts, unreachable endpoints, 401s, a 422 on a URL with credentials).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
import pytest

from dispatcher.logs import JsonFormatter, TextFormatter
from tests.conftest import PLATFORM_TOKEN, TenantKeys
from tests.e2e.conftest import Process, process_env, wait_until
from tests.tooling import free_port

URL_PASSWORD = "Alice-Pw-8g3Hq2"
BAD_URL_PASSWORD = "Bob-Pw-4Tz9Lm"
CUSTOM_SECRET = "my-own-signing-secret-Kx81Zq0pW3"
WRONG_KEY = "sk_sandbox_NotARealKeyJq74Vd01"
DB_PASSWORD = "Db-Pw-7Yc2Nn"


def with_password(url: str) -> tuple[str, str]:
    """The database URL with a password in it (trust auth ignores it), and that password."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0] or 'postgres'}:{DB_PASSWORD}@{host}"
    return urlunsplit(parts._replace(netloc=netloc)), DB_PASSWORD


@pytest.fixture
async def serve(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> AsyncIterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(url: str, **settings: Any) -> Process:
        log = tmp_path / f"serve-{len(started)}.log"
        found = Process(["serve"], process_env(url, **settings), log)
        started.append(found)
        return found

    yield start
    for p in started:
        p.stop()


async def _wait_healthy(http: aiohttp.ClientSession, base: str, proc: Process) -> None:
    async def up() -> bool:
        assert proc.proc.poll() is None, proc.output()
        try:
            async with http.get(f"{base}/readyz") as r:
                return r.status == 200
        except aiohttp.ClientConnectionError:
            return False

    await wait_until(up)


async def _attempt_outcomes(pool: asyncpg.Pool) -> set[str]:
    async with pool.acquire() as conn:
        return {r["outcome"] for r in await conn.fetch("SELECT DISTINCT outcome FROM attempts")}


async def _exercise(
    http: aiohttp.ClientSession,
    base: str,
    tenant: TenantKeys,
    receiver: Any,
    pool: asyncpg.Pool,
) -> list[str]:
    """Drive the error paths; return the secrets handed out along the way."""
    auth = tenant.headers()
    creds = f"alice:{URL_PASSWORD}@"
    hooks = {
        "/ok": receiver.url("/ok").replace("http://", f"http://{creds}"),
        "/fail": receiver.url("/fail").replace("http://", f"http://{creds}"),
        "/closed": f"http://{creds}127.0.0.1:{free_port()}/closed",
    }
    receiver.script("/fail", 500)
    secrets: list[str] = []
    ids: dict[str, str] = {}
    for path, url in hooks.items():
        body: dict[str, Any] = {"url": url, "events": ["*"]}
        if path == "/fail":
            body["secret"] = CUSTOM_SECRET
        async with http.post(f"{base}/v1/webhooks", json=body, headers=auth) as r:
            assert r.status == 201, await r.text()
            created = await r.json()
        secrets.append(created["secret"])
        ids[path] = created["id"]

    async with http.post(f"{base}/v1/webhooks/{ids['/ok']}/rotate-secret", headers=auth) as r:
        assert r.status == 200, await r.text()
        secrets.append((await r.json())["secret"])
    async with http.post(f"{base}/v1/webhooks/{ids['/fail']}/test", headers=auth) as r:
        assert r.status == 200, await r.text()

    bad = {"url": f"http://bob:{BAD_URL_PASSWORD}@bad host.example:99999/x", "events": ["*"]}
    async with http.post(f"{base}/v1/webhooks", json=bad, headers=auth) as r:
        assert r.status == 422, await r.text()
    for headers in (
        {"Authorization": f"Bearer {WRONG_KEY}"},
        {"Authorization": f"Bearer {PLATFORM_TOKEN}"},  # the platform token is no tenant key
        {"Authorization": WRONG_KEY},  # not even a bearer
    ):
        async with http.get(f"{base}/v1/webhooks", headers=headers) as r:
            assert r.status == 401
    transition = {"tenant_id": tenant.tenant_id, "environment": "sandbox", "status": "created"}
    wrong = {"Authorization": f"Bearer {tenant.sandbox}"}  # a tenant key is no platform token
    async with http.post(
        f"{base}/internal/v1/mailings/ml_x/transitions", json=transition, headers=wrong
    ) as r:
        assert r.status == 401
    platform = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
    async with http.post(
        f"{base}/internal/v1/mailings/ml_1/transitions", json=transition, headers=platform
    ) as r:
        assert r.status == 202, await r.text()

    async def every_outcome_seen() -> bool:
        return {"success", "http_5xx", "connection_error"} <= await _attempt_outcomes(pool)

    await wait_until(every_outcome_seen)
    return secrets


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_no_secret_reaches_the_logs_of_a_real_process(
    serve: Callable[..., Process],
    database_url: str,
    pool: asyncpg.Pool,
    make_tenant: Any,
    receiver: Any,
    fmt: str,
) -> None:
    tenant = await make_tenant()
    url, db_password = with_password(database_url)
    port = free_port()
    proc = serve(
        url,
        port=port,
        platform_token=PLATFORM_TOKEN,
        log_format=fmt,
        log_level="DEBUG",
        require_https="false",
        retry_base_seconds=0.2,
        attempt_timeout_seconds=2,
    )
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        await _wait_healthy(http, base, proc)
        handed_out = await _exercise(http, base, tenant, receiver, pool)
    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0, proc.output()
    output = proc.output()

    forbidden = {
        "URL password": URL_PASSWORD,
        "URL password of a refused URL": BAD_URL_PASSWORD,
        "custom signing secret": CUSTOM_SECRET,
        "wrong API key": WRONG_KEY,
        "sandbox API key": tenant.sandbox,
        "production API key": tenant.production,
        "platform token": PLATFORM_TOKEN,
        "database password": db_password,
    }
    forbidden |= {f"handed-out secret {i}": s for i, s in enumerate(handed_out)}
    leaked = [what for what, value in forbidden.items() if value in output]
    assert not leaked, f"leaked into the {fmt} log: {leaked}"

    # not vacuous: the attempts, failed ones included, were logged with their context
    for outcome in ("success", "http_5xx", "connection_error"):
        assert f"{outcome}" in output, f"no {outcome} attempt in the log"
    if fmt == "json":
        entries = [orjson.loads(line) for line in output.splitlines() if line.strip()]
        attempts = [e for e in entries if e["message"] == "delivery attempt"]
        assert attempts, output
        for entry in attempts:
            assert {"timestamp", "level", "event_id", "delivery_id", "endpoint_id"} <= set(entry)
            assert {"outcome", "duration_ms"} <= set(entry)


def _record_with_exception() -> logging.LogRecord:
    try:
        raise ConnectionError(
            f"cannot reach http://alice:{URL_PASSWORD}@hooks.example.com/x with "
            f"Authorization: Bearer {PLATFORM_TOKEN} signing with "
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw for sk_production_AbCdEf0123456789, "
            "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
        )
    except ConnectionError:
        return logging.LogRecord(
            "dispatcher.test",
            logging.ERROR,
            __file__,
            1,
            "failed for postgresql://app:%s@db:5432/app",
            (DB_PASSWORD,),
            sys.exc_info(),
        )


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_tracebacks_and_messages_are_scrubbed(formatter: logging.Formatter) -> None:
    line = formatter.format(_record_with_exception())
    for secret in (
        URL_PASSWORD,
        DB_PASSWORD,
        PLATFORM_TOKEN,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "sk_production_AbCdEf0123456789",
        "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=",
    ):
        assert secret not in line
    assert "ConnectionError" in line and "hooks.example.com" in line, "the rest stays readable"
