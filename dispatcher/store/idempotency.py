"""Stored answers of `Idempotency-Key` requests, one per (scope, key)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from dispatcher.db import queries as q


@dataclass(frozen=True)
class StoredAnswer:
    request_hash: bytes
    status: int
    body: bytes


async def lock_key(conn: asyncpg.Connection, scope: str, key: str) -> None:
    """Until commit; a concurrent request with the same key waits here, then sees the answer.

    A statement of its own: under READ COMMITTED the read that follows must take its snapshot
    after the lock is granted, or it would miss the answer the other request committed.
    """
    await conn.execute(q.LOCK_IDEMPOTENCY_KEY, scope, key)


async def stored_answer(conn: asyncpg.Connection, scope: str, key: str) -> StoredAnswer | None:
    row = await conn.fetchrow(q.GET_IDEMPOTENT_RESPONSE, scope, key)
    if row is None:
        return None
    return StoredAnswer(
        bytes(row["request_hash"]), row["response_status"], bytes(row["response_body"])
    )


async def save_answer(
    conn: asyncpg.Connection, scope: str, key: str, answer: StoredAnswer, now: datetime
) -> None:
    await conn.execute(
        q.SAVE_IDEMPOTENT_RESPONSE,
        scope,
        key,
        answer.request_hash,
        answer.status,
        answer.body,
        now,
    )
