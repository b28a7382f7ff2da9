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


# The delivery loop's session (see `open_delivery_pool`): commits that do not wait for the
# disk, and no sequential scans. Every statement of the loop is built to walk an index (the
# claim's loose index scan, each endpoint's due range, settles by id); but a connection keeps
# its prepared statements' generic plans, and one planned while the queue was nearly empty
# (a new worker, a fresh deploy) scans the whole queue, inside the claim's per-endpoint loops,
# until a VACUUM makes PostgreSQL plan again. A backlog building meanwhile (an endpoint that is
# down: inserts only, nothing for VACUUM) made each claim cost a scan of it: 8.7 ms instead of
# 0.9 with 2,000 queued rows, growing with the backlog.
DELIVERY_SESSION = {"synchronous_commit": "off", "enable_seqscan": "off"}


async def create_pool(
    url: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    session: dict[str, str] | None = None,
) -> asyncpg.Pool:
    """``session``: settings every connection of the pool starts with (`DELIVERY_SESSION`)."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_no_reset,
        command_timeout=60,
        server_settings=session or {},
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
async def open_pool(
    url: str, settings: Settings, *, session: dict[str, str] | None = None
) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(
        url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        session=session,
    )
    try:
        yield pool
    finally:
        await pool.close()


def open_delivery_pool(
    url: str, settings: Settings
) -> contextlib.AbstractAsyncContextManager[asyncpg.Pool]:
    """The delivery loop's own connections (`DELIVERY_SESSION`): commits that do not wait
    for the disk, plans that never scan the whole queue.

    Claims and settles are most of the worker's commits, and waiting for each one's WAL
    flush (a few milliseconds on an ordinary disk) put that wait in every delivery's queue
    time and held the endpoint's state row through it, so claims and settles of one busy
    endpoint queued behind each other's flushes. Nothing the worker writes needs it: should
    PostgreSQL itself crash (a worker crash loses nothing), the last fraction of a second of
    claims and settles is rolled back, and those deliveries are sent again (at least once,
    same webhook-id), their lost attempt records with them. Accepted events, endpoints and
    everything the API writes stay on durable commits: a later durable commit also flushes
    every earlier one.
    """
    return open_pool(url, settings, session=DELIVERY_SESSION)
