"""The asyncpg pool, with JSON codecs so jsonb columns come back as Python objects."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from dispatcher.db.embedded import embedded_postgres
from dispatcher.settings import Settings

# The database, or the connection to it, failed: worth retrying once the server is back.
DB_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # a pooled connection the server dropped mid-operation can surface as this (asyncpg 0.32)
    asyncpg.exceptions.InternalClientError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset round trip on every release: no session state is ever left
    behind (transactions are scoped, LISTEN uses its own connection, advisory locks are
    transaction-level or released explicitly)."""


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_no_reset,
        command_timeout=60,
    )
    return pool


@contextlib.contextmanager
def database_url(settings: Settings) -> Any:
    """The configured server, or an embedded one started for the life of the block."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    with embedded_postgres(settings.data_dir) as url:
        yield url


@contextlib.asynccontextmanager
async def open_pool(url: str, settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(
        url, min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size
    )
    try:
        yield pool
    finally:
        await pool.close()
