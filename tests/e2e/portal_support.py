"""The tenant portal in a real headless Chromium against `dispatcher serve`.

One `dispatcher serve` process per test module, on the session's embedded PostgreSQL, with
real receivers; retries are shortened (max age 3 s) so a failing receiver dead-letters in
the test's time. One browser per module, a fresh context (cookies, history) per test.
Every page records its requests, console errors, script errors and dialogs, so a test can
assert that nothing ran that should not have and nothing left the origin.

Screenshots go to PORTAL_SCREENSHOTS (docs/portal to refresh README's images),
else to the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest

from dispatcher.ids import ApiKeyId, TenantId
from dispatcher.models import Environment, Principal
from dispatcher.store import endpoints as endpoint_store
from dispatcher.store import tenants
from tests.conftest import ENCRYPTION_KEY, open_migrated_pool, scratch_database
from tests.tooling import free_port, in_ci, require_tool

PLATFORM_TOKEN = "portal-e2e-platform-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Dialog, Page, Request


@dataclass
class Server:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class PortalDatabase:
    url: str
    pool: asyncpg.Pool


@pytest.fixture(scope="module")
async def portal_database(
    database_url: str, migrated_pool: asyncpg.Pool
) -> AsyncIterator[PortalDatabase]:
    """A database of the module's own on the session's server.

    The module's `serve` runs for every test of the module, while other tests TRUNCATE the
    session database before each test: sharing it let a TRUNCATE pull rows from under the
    server's worker (duplicate deliveries, deadlocks in its log). Here nothing else writes.
    """
    async with (
        scratch_database(database_url, "portal") as url,
        open_migrated_pool(url, min_size=1, max_size=5) as pool,
    ):
        yield PortalDatabase(url, pool)


@pytest.fixture(name="pool")
def portal_pool(portal_database: PortalDatabase) -> asyncpg.Pool:
    """The portal tests' `pool`: the module's own database, never truncated under the server
    (each test makes its own tenants). Import it into a portal test module to use it."""
    return portal_database.pool


@pytest.fixture(scope="module")
async def portal_server(
    portal_database: PortalDatabase, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(
        DISPATCHER_DATABASE_URL=portal_database.url,
        DISPATCHER_PORT=str(port),
        DISPATCHER_METRICS_PORT="0",
        DISPATCHER_PLATFORM_TOKEN=PLATFORM_TOKEN,
        DISPATCHER_ENCRYPTION_KEY=ENCRYPTION_KEY,  # the key the tests' own writes seal with
        DISPATCHER_ALLOW_PRIVATE_TARGETS="true",
        DISPATCHER_LOG_FORMAT="json",
        # a failing receiver is dead-lettered within seconds; the breaker stays out of the way
        DISPATCHER_RETRY_BASE_SECONDS="0.2",
        DISPATCHER_RETRY_MAX_DELAY_SECONDS="0.5",
        DISPATCHER_RETRY_MAX_AGE_SECONDS="3",
        DISPATCHER_BREAKER_OPEN_SECONDS="0.2",
        DISPATCHER_BREAKER_MAX_OPEN_SECONDS="0.5",
        DISPATCHER_POLL_INTERVAL_SECONDS="0.2",
    )
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, as a user starts it
            [sys.executable, "-m", "run.cli", "serve"],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    found = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        async with asyncio.timeout(60), aiohttp.ClientSession() as http:
            while True:
                assert proc.poll() is None, found.output()
                try:
                    async with http.get(f"{found.base}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        yield found
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
async def portal_browser() -> AsyncIterator[Browser]:
    executable = require_tool("chromium")
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # the `test` extra brings it
        if in_ci():
            raise
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        await launched.close()


@dataclass
class Watched:
    """A page with what it did: requests, console errors, script errors, dialogs."""

    page: Page
    context: BrowserContext
    requests: list[Request] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def assert_clean(self, refused_requests: bool = False) -> None:
        """No dialog, no script error, no console error (but, when the test made some,
        Chromium's own line for each request the server refused)."""
        assert self.dialogs == [], self.dialogs
        assert self.page_errors == [], self.page_errors
        errors = self.console_errors
        if refused_requests:
            errors = [e for e in errors if not e.startswith("Failed to load resource")]
        assert errors == [], errors


@pytest.fixture
async def portal(portal_browser: Browser, portal_server: Server) -> AsyncIterator[Watched]:
    server = portal_server
    context = await portal_browser.new_context(
        base_url=server.base, viewport={"width": 1280, "height": 900}
    )
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    watched = Watched(page, context)
    page.on("request", lambda request: watched.requests.append(request))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.console_errors.append(message.text)

    async def dialog(found: Dialog) -> None:
        watched.dialogs.append(f"{found.type}: {found.message}")
        await found.dismiss()

    page.on("console", console)
    page.on("pageerror", lambda exc: watched.page_errors.append(str(exc)))
    page.on("dialog", dialog)
    yield watched
    await context.close()


def screenshot_dir(tmp_path: Path) -> Path:
    configured = os.environ.get("PORTAL_SCREENSHOTS")
    target = Path(configured) if configured else tmp_path / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    return target


# ---- the platform's side ------------------------------------------------------------------


async def platform(server: Server, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, server.base + path, json=body, headers=headers) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json() if response.status != 204 else None


async def portal_link(server: Server, tenant_id: str, **extra: Any) -> dict[str, Any]:
    body = {"tenant_id": tenant_id, "environment": "sandbox", **extra}
    link: dict[str, Any] = await platform(server, "POST", "/internal/v1/portal-sessions", body)
    return link


async def emit(server: Server, tenant_id: str, mailing_id: str, status: str, **extra: Any) -> str:
    body = {"tenant_id": tenant_id, "environment": "sandbox", "status": status, **extra}
    answer = await platform(server, "POST", f"/internal/v1/mailings/{mailing_id}/transitions", body)
    event_id: str = answer["event_id"]
    return event_id


async def open_portal(watched: Watched, url: str) -> None:
    await watched.page.goto(url)
    await watched.page.get_by_role("heading", name="Endpoints").wait_for()


async def new_tenant(pool: asyncpg.Pool, name: str) -> str:
    async with pool.acquire() as conn:
        tenant, _ = await tenants.create_tenant(conn, name, datetime.now(UTC))
    return tenant.id


async def new_endpoint(pool: asyncpg.Pool, tenant_id: str, url: str, **options: Any) -> str:
    owner = Principal(TenantId(tenant_id), Environment.SANDBOX, ApiKeyId("key_e2e"))
    async with pool.acquire() as conn:
        endpoint = await endpoint_store.create_endpoint(
            conn,
            owner,
            url=url,
            event_types=["*"],
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            now=datetime.now(UTC),
            **options,
        )
    return endpoint.id


async def open_endpoint(watched: Watched, url: str, endpoint_url: str) -> None:
    await open_portal(watched, url)
    await watched.page.get_by_role("button", name=endpoint_url).click()
    await watched.page.get_by_role("heading", name="Delivery log").wait_for()


async def refresh_until(page: Page, *texts: str, limit: float = 20) -> None:
    """Click the log's Refresh until `text` shows in it: deliveries arrive on their own."""
    log = page.get_by_role("region", name="Delivery log")
    async with asyncio.timeout(limit):
        while True:
            await log.get_by_role("button", name="Refresh").click()
            await log.locator(".loading").wait_for(state="detached")
            rows = log.locator("tbody.delivery")
            for text in texts:
                rows = rows.filter(has_text=text)
            if await rows.count():
                return
            await asyncio.sleep(0.2)
