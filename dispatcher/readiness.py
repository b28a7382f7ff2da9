"""Readiness: the database answers and its schema is the one this code expects.

One check for every process: the API port and a worker's metrics port serve the same
`/readyz` handler, which asks this.
"""

from __future__ import annotations

import asyncio

import asyncpg

from dispatcher.db.migrate import ensure_migrated
from dispatcher.errors import DispatcherError

PROBE_TIMEOUT_SECONDS = 2.0


async def unready_reason(pool: asyncpg.Pool) -> str | None:
    """None when ready; otherwise why not, in words an operator can act on.

    Any failure counts (a probe must answer, never raise), and the reason never carries a
    server's error text, which may name hosts or users.
    """
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), pool.acquire() as conn:
            await ensure_migrated(conn)
    except DispatcherError as exc:
        return str(exc)
    except Exception:
        return "database unreachable"
    return None
