"""Mailing transitions become immutable events and their deliveries, in the caller's transaction.

`record_transitions` is the transactional outbox: the platform may call it on its own asyncpg
connection, inside its own transaction, so the event exists exactly when its writes commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import asyncpg

from dispatcher import ids
from dispatcher.db import queries as q
from dispatcher.ids import EventId
from dispatcher.partitions import ensure_day
from dispatcher.signing import canonical_json
from dispatcher.transitions import (
    Accept,
    MailingStatus,
    MailType,
    Refuse,
    Repeat,
    decide,
    event_type_for,
)


@dataclass(frozen=True)
class Transition:
    """One status report from the platform; optional fields are omitted from the event if None."""

    tenant_id: str
    environment: str
    mailing_id: str
    status: MailingStatus
    occurred_at: datetime | None = None
    mail_type: MailType | None = None
    tracking_number: str | None = None
    recipient: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None


class Result(StrEnum):
    ACCEPTED = "accepted"
    REPEATED = "repeated"
    REFUSED = "refused"


@dataclass(frozen=True)
class TransitionResult:
    result: Result
    event_id: EventId | None = None
    event_type: str | None = None
    current_status: str | None = None
    message: str | None = None


@dataclass
class _MailingState:
    status: MailingStatus
    mail_type: MailType
    event_id: str
    event_type: str
    changed: bool = False


@dataclass
class _Batch:
    ids: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)
    environments: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    mailings: list[str | None] = field(default_factory=list)
    occurred: list[datetime] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def add(
        self, event_id: str, t: Transition, event_type: str, occurred: datetime, body: bytes
    ) -> None:
        self.ids.append(event_id)
        self.tenants.append(t.tenant_id)
        self.environments.append(t.environment)
        self.types.append(event_type)
        self.mailings.append(t.mailing_id)
        self.occurred.append(occurred)
        self.bodies.append(body)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a Z; milliseconds only when there are any."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond // 1000:03d}"
    return text + "Z"


def event_body(
    event_id: str, event_type: str, occurred_at: datetime, data: Mapping[str, Any]
) -> bytes:
    """The one serialization of an event: every endpoint and attempt gets these bytes."""
    return canonical_json(
        {
            "data": data,
            "event_id": event_id,
            "event_type": event_type,
            "occurred_at": format_time(occurred_at),
        }
    )


def _data(t: Transition) -> dict[str, Any]:
    data: dict[str, Any] = {"mailing_id": t.mailing_id, "status": t.status.value}
    if t.mail_type is not None:
        data["mail_type"] = t.mail_type.value
    if t.tracking_number is not None:
        data["tracking_number"] = t.tracking_number
    if t.recipient is not None:
        data["recipient"] = t.recipient
    if t.metadata is not None:
        data["metadata"] = t.metadata
    return data


def _lock_key(t: Transition) -> int:
    digest = hashlib.blake2b(
        f"{t.tenant_id}\x1f{t.environment}\x1f{t.mailing_id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _current(
    conn: asyncpg.Connection, items: Sequence[Transition]
) -> dict[tuple[str, str, str], _MailingState]:
    keys = {(t.tenant_id, t.environment, t.mailing_id) for t in items}
    rows = await conn.fetch(
        q.CURRENT_MAILINGS, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]
    )
    return {
        (r["tenant_id"], r["environment"], r["mailing_id"]): _MailingState(
            MailingStatus(r["status"]),
            MailType(r["mail_type"]),
            r["last_event_id"],
            event_type_for(MailingStatus(r["status"])),  # the event a status comes from
        )
        for r in rows
    }


async def record_transitions(
    conn: asyncpg.Connection, items: Sequence[Transition], now: datetime
) -> list[TransitionResult]:
    """Apply transitions in order; one result per item. Must run inside a transaction.

    Concurrent writers of the same mailing are serialized by advisory locks taken in key
    order, so two reports of one status yield one event, and no update is lost.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("record_transitions must run inside a transaction")
    if not items:
        return []
    await conn.execute(q.LOCK_MAILINGS, [_lock_key(t) for t in items])
    states = await _current(conn, items)
    batch = _Batch()
    results: list[TransitionResult] = []
    for t in items:
        key = (t.tenant_id, t.environment, t.mailing_id)
        state = states.get(key)
        mail_type = t.mail_type or (state.mail_type if state else MailType.STANDARD)
        decision = decide(state.status if state else None, t.status, mail_type)
        if isinstance(decision, Repeat) and state is not None:
            results.append(
                TransitionResult(
                    Result.REPEATED, EventId(state.event_id), state.event_type, state.status.value
                )
            )
            continue
        if isinstance(decision, Refuse) or not isinstance(decision, Accept):
            message = decision.reason if isinstance(decision, Refuse) else "refused"
            results.append(
                TransitionResult(
                    Result.REFUSED,
                    current_status=state.status.value if state else None,
                    message=message,
                )
            )
            continue
        event_id = ids.event_id()
        event_type = event_type_for(t.status)
        occurred = t.occurred_at or now
        batch.add(
            event_id, t, event_type, occurred, event_body(event_id, event_type, occurred, _data(t))
        )
        states[key] = _MailingState(t.status, mail_type, event_id, event_type, changed=True)
        results.append(
            TransitionResult(Result.ACCEPTED, EventId(event_id), event_type, t.status.value)
        )
    if batch.ids:
        await _write(conn, batch, states, now)
    return results


async def _write(
    conn: asyncpg.Connection,
    batch: _Batch,
    states: dict[tuple[str, str, str], _MailingState],
    now: datetime,
) -> int:
    """Events, mailings, fan-out and NOTIFY in one round trip, whatever the batch size."""
    changed = [(k, s) for k, s in states.items() if s.changed]
    await ensure_day(conn, now)
    created: int = await conn.fetchval(
        q.WRITE_EVENTS,
        batch.ids,
        batch.tenants,
        batch.environments,
        batch.types,
        batch.mailings,
        batch.occurred,
        batch.bodies,
        now,
        [k[0] for k, _ in changed],
        [k[1] for k, _ in changed],
        [k[2] for k, _ in changed],
        [s.status.value for _, s in changed],
        [s.mail_type.value for _, s in changed],
        [s.event_id for _, s in changed],
    )
    return created


async def record_transition(
    conn: asyncpg.Connection, transition: Transition, now: datetime | None = None
) -> TransitionResult:
    """Outbox entry point for one transition, inside the caller's transaction.

    Example::

        async with conn.transaction():
            await conn.execute("UPDATE letters SET ...")
            await record_transition(conn, Transition(tenant, "production", "ml_1",
                                                     MailingStatus.PRINTED))
    """
    results = await record_transitions(conn, [transition], now or datetime.now(UTC))
    return results[0]
