"""Reading events back (the tenant event log); writing them is `dispatcher.events`' job."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from dispatcher.db import queries as q
from dispatcher.ids import EventId
from dispatcher.models import Principal


@dataclass(frozen=True)
class StoredEvent:
    id: EventId
    event_type: str
    mailing_id: str | None
    occurred_at: datetime
    created_at: datetime
    body: bytes

    @classmethod
    def from_row(cls, row: Any) -> StoredEvent:
        return cls(
            EventId(row["id"]),
            row["event_type"],
            row["mailing_id"],
            row["occurred_at"],
            row["created_at"],
            bytes(row["body"]),
        )

    def data(self) -> dict[str, Any]:
        """The `data` object exactly as receivers got it: parsed from the stored body."""
        parsed = orjson.loads(self.body)
        data: dict[str, Any] = parsed.get("data") or {}
        return data


async def get_event(
    conn: asyncpg.Connection, owner: Principal, event_id: str
) -> StoredEvent | None:
    row = await conn.fetchrow(q.GET_EVENT, event_id, owner.tenant_id, owner.environment.value)
    return StoredEvent.from_row(row) if row else None


async def list_mailing_events(
    conn: asyncpg.Connection,
    owner: Principal,
    mailing_id: str,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[StoredEvent]:
    """Newest first; `after` is the (created_at, id) of the last event of the previous page."""
    created, last_id = after if after else (None, None)
    rows = await conn.fetch(
        q.LIST_MAILING_EVENTS,
        owner.tenant_id,
        owner.environment.value,
        mailing_id,
        created,
        last_id,
        limit,
    )
    return [StoredEvent.from_row(r) for r in rows]


async def event_cursor(
    conn: asyncpg.Connection, owner: Principal, mailing_id: str, event_id: str
) -> tuple[datetime, str] | None:
    """The sort key `list_mailing_events(after=...)` takes, for an event of that mailing."""
    row = await conn.fetchrow(
        q.GET_EVENT_CURSOR, event_id, owner.tenant_id, owner.environment.value, mailing_id
    )
    return (row["created_at"], row["id"]) if row else None
