"""Housekeeping that keeps tables bounded: expired Idempotency-Key records are purged.

Keys are honoured for 24 hours (as Stripe does); a replay after that runs the request again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

import asyncpg

from dispatcher.db import queries as q

log = logging.getLogger(__name__)

IDEMPOTENCY_RETENTION = timedelta(hours=24)


async def purge_idempotency_keys(conn: asyncpg.Connection, now: datetime) -> int:
    status = await conn.execute(q.PURGE_IDEMPOTENCY_KEYS, now - IDEMPOTENCY_RETENTION)
    return int(status.rsplit(" ", 1)[-1])


async def maintain_forever(pool: asyncpg.Pool, interval: float = 300.0) -> None:
    while True:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            async with pool.acquire() as conn:
                purged = await purge_idempotency_keys(conn, datetime.now(UTC))
            if purged:
                log.info(f"purged {purged} expired idempotency keys")
        await asyncio.sleep(interval)
