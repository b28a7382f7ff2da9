"""One real PostgreSQL per test session, migrated once, emptied before each test that uses it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from dispatcher import partitions, sealing
from dispatcher.clock import FakeClock
from dispatcher.db.embedded import embedded_postgres
from dispatcher.db.migrate import migrate
from dispatcher.db.pool import create_pool
from dispatcher.models import Environment
from dispatcher.settings import Settings
from dispatcher.store import tenants
from tests.suite_plugin import (  # noqa: F401 - the suite's hooks and shared fixtures
    figures,
    long_run,
    pytest_addoption,
    pytest_configure,
)

PLATFORM_TOKEN = "test-platform-token-0123456789abcdef"
# The session's encryption key: installed in this process, and given to every process the
# tests start against the session's database (tests/e2e/conftest.py process_env).
ENCRYPTION_KEY = "dGVzdC1lbmNyeXB0aW9uLWtleS0zMi1ieXRlcy0wMDA="
sealing.install(sealing.keyring_from(ENCRYPTION_KEY))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    given = os.environ.get("DISPATCHER_TEST_DATABASE_URL")
    if given:
        yield given
        return
    with (
        tempfile.TemporaryDirectory(prefix="dispatcher-test-") as tmp,
        embedded_postgres(Path(tmp)) as url,
    ):
        _no_durability(url)
        yield url


def _no_durability(url: str) -> None:
    """The throwaway test server skips flushing to disk: each test TRUNCATEs every table
    (hundreds, with the history partitions), and each TRUNCATE would otherwise fsync new files.
    Crash tests kill processes, never the machine, so the page cache keeps what they need."""

    async def apply() -> None:
        conn = await asyncpg.connect(url)
        try:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                await conn.execute(f"ALTER SYSTEM SET {setting} = off")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    asyncio.run(apply())


@contextlib.asynccontextmanager
async def scratch_database(database_url: str, prefix: str) -> AsyncIterator[str]:
    """A new empty database on the session's server, dropped afterwards: its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    finally:
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def scratch_url(database_url: str) -> AsyncIterator[str]:
    """A new empty database on the session's server, dropped afterwards."""
    async with scratch_database(database_url, "scratch") as url:
        yield url


@contextlib.asynccontextmanager
async def open_migrated_pool(
    url: str, *, min_size: int, max_size: int
) -> AsyncIterator[asyncpg.Pool]:
    """The database at `url` migrated, and a pool on it for the life of the block."""
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(url, min_size=min_size, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
async def migrated_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with open_migrated_pool(database_url, min_size=2, max_size=20) as pool:
        yield pool


# One round trip that TRUNCATEs only the tables holding rows: the history partitions that
# fake-clock tests leave behind make "every table" hundreds of relations, each a new file.
_EMPTY_WHAT_HAS_ROWS = """
DO $$
DECLARE
    t text;
    names text[] := '{}';
    has_rows boolean;
BEGIN
    FOR t IN
        SELECT format('%I', c.relname) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'schema_migrations'
    LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', t) INTO has_rows;
        IF has_rows THEN
            names := names || t;
        END IF;
    END LOOP;
    IF cardinality(names) > 0 THEN
        EXECUTE 'TRUNCATE ' || array_to_string(names, ', ') || ' RESTART IDENTITY CASCADE';
    END IF;
END $$
"""


@pytest.fixture
async def pool(migrated_pool: asyncpg.Pool) -> asyncpg.Pool:
    """A clean database: TRUNCATE, not rollback, because NOTIFY and SKIP LOCKED need commits."""
    async with migrated_pool.acquire() as conn:
        await conn.execute(_EMPTY_WHAT_HAS_ROWS)
    partitions.forget()  # a test (retention) may have dropped some
    return migrated_pool


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "platform_token": PLATFORM_TOKEN,
        "allow_private_targets": False,
        "require_https": True,
        "log_format": "text",
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def client(
    pool: asyncpg.Pool, settings: Settings, clock: FakeClock
) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(settings, pool, clock=clock)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@dataclass
class TenantKeys:
    tenant_id: str
    sandbox: str
    production: str

    def headers(self, environment: str = "sandbox") -> dict[str, str]:
        key = self.sandbox if environment == "sandbox" else self.production
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def make_tenant(pool: asyncpg.Pool, clock: FakeClock) -> Any:
    async def factory(name: str = "ACME") -> TenantKeys:
        async with pool.acquire() as conn:
            tenant, keys = await tenants.create_tenant(conn, name, clock.now())
        return TenantKeys(
            tenant.id, keys[Environment.SANDBOX].key, keys[Environment.PRODUCTION].key
        )

    return factory


@pytest.fixture
async def receiver() -> AsyncIterator[Any]:
    from tests.receiver import Receiver

    found = Receiver()
    await found.start()
    yield found
    await found.stop()
