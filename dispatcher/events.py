"""Mailing transitions become immutable events and their deliveries: the one ingest path.

`ingest` serves the platform API (a single transition is a batch of one) and the transactional
outbox (`record_transitions`, on the platform's own connection inside its own transaction, so
an event exists exactly when the platform's writes commit). Each transition gets the state
machine's verdict (`dispatcher.transitions`: Accept, Repeat or Refuse), and that verdict is
what the caller answers with.

Decisions:
- Two round trips for one mailing outside a transaction: one read (the tenants and the
  mailings' stored status), one write that applies only if the mailing is still what was read
  (else read again). Inside a transaction the mailings are locked before the read and stay
  locked until commit, so the write never loses there and the caller's transaction never has
  to be retried; transitions of several mailings must be inside one (all or nothing).
- Independent transitions (`ingest_round`, the group-commit batcher's) are written the same
  way outside a transaction, several mailings in one statement, each mailing on its own: a
  mailing another writer changed, or whose lock another writer holds (tried, never waited
  for), is not written and its transitions are to be judged again; the others stand.
- Events are counted (``webhook_events_ingested_total``) where they are written; inside a
  transaction that later rolls back they were counted all the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from dispatcher import ids
from dispatcher.db import queries as q
from dispatcher.errors import DispatcherError
from dispatcher.ids import EventId
from dispatcher.metrics import EVENTS_INGESTED
from dispatcher.partitions import ensure_day
from dispatcher.signing import canonical_json
from dispatcher.transitions import (
    Accept,
    Decision,
    MailingStatus,
    MailType,
    Repeat,
    decide,
    event_type_for,
)

# Reads before giving up on a mailing that other writers keep changing.
MAX_READS = 5

MailingKey = tuple[str, str, str]  # tenant_id, environment, mailing_id


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


@dataclass(frozen=True)
class Recorded:
    """What became of one transition, in the state machine's words.

    Accept: ``event_id`` is the new event. Repeat: the mailing's original event. Refuse:
    nothing was emitted; ``current_status`` is what it was judged against (None: unknown).
    """

    verdict: Decision
    event_id: EventId | None = None
    event_type: str | None = None
    current_status: MailingStatus | None = None


class UnknownTenants(DispatcherError):
    """Transitions name tenants that do not exist or were deleted; nothing was written."""

    type = "validation_error"

    def __init__(self, positions: Sequence[int]) -> None:
        super().__init__(f"no such tenant (transitions {', '.join(map(str, positions))})")
        self.positions = list(positions)


class ConcurrentChange(DispatcherError):
    """Another writer kept changing the mailing between our read and our write."""

    type = "conflict"


@dataclass
class _MailingState:
    status: MailingStatus
    mail_type: MailType
    event_id: str
    read_id: str | None  # the last event id as read: what the write checks is still there
    changed: bool = False


_UNCHANGED = _MailingState(MailingStatus.CREATED, MailType.STANDARD, "", None)


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


def _mailing(t: Transition) -> MailingKey:
    return (t.tenant_id, t.environment, t.mailing_id)


def _lock_key(t: Transition) -> int:
    return _key_lock(_mailing(t))


def _key_lock(key: MailingKey) -> int:
    """The mailing's advisory lock key: every writer of a mailing takes it."""
    digest = hashlib.blake2b("\x1f".join(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _read(
    conn: asyncpg.Connection, items: Sequence[Transition]
) -> tuple[set[str], dict[MailingKey, _MailingState]]:
    """The live tenants among the items' and the stored state of their mailings."""
    keys = list({(t.tenant_id, t.environment, t.mailing_id) for t in items})
    rows = await conn.fetch(
        q.READ_INGEST,
        list({t.tenant_id for t in items}),
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )
    tenants: set[str] = set()
    states: dict[MailingKey, _MailingState] = {}
    for r in rows:
        if r["mailing_id"] is None:
            tenants.add(r["tenant_id"])
            continue
        states[(r["tenant_id"], r["environment"], r["mailing_id"])] = _MailingState(
            MailingStatus(r["status"]),
            MailType(r["mail_type"]),
            r["last_event_id"],
            r["last_event_id"],
        )
    return tenants, states


def _judge(
    items: Sequence[Transition], states: dict[MailingKey, _MailingState], now: datetime
) -> tuple[list[Recorded], _Batch]:
    """Each transition in order against its mailing's state as the earlier ones left it."""
    batch = _Batch()
    results: list[Recorded] = []
    for t in items:
        key = (t.tenant_id, t.environment, t.mailing_id)
        state = states.get(key)
        current = state.status if state else None
        mail_type = t.mail_type or (state.mail_type if state else MailType.STANDARD)
        verdict = decide(current, t.status, mail_type)
        if isinstance(verdict, Repeat) and state is not None:
            original = EventId(state.event_id)
            results.append(Recorded(verdict, original, event_type_for(state.status), current))
            continue
        if not isinstance(verdict, Accept):
            results.append(Recorded(verdict, current_status=current))
            continue
        event_id = ids.event_id()
        event_type = event_type_for(t.status)
        occurred = t.occurred_at or now
        batch.add(
            event_id, t, event_type, occurred, event_body(event_id, event_type, occurred, _data(t))
        )
        read_id = state.read_id if state else None
        states[key] = _MailingState(t.status, mail_type, event_id, read_id, changed=True)
        results.append(Recorded(verdict, EventId(event_id), event_type, t.status))
    return results, batch


async def ingest(
    conn: asyncpg.Connection, items: Sequence[Transition], now: datetime
) -> list[Recorded]:
    """Apply transitions in order; one verdict per item, in order.

    Raises UnknownTenants (nothing written) when an item names a tenant that is not live.
    """
    if not items:
        return []
    if conn.is_in_transaction():
        return await _ingest_locked(conn, items, now)
    if len({_mailing(t) for t in items}) > 1:
        raise RuntimeError("transitions of several mailings must be recorded in a transaction")
    for _ in range(MAX_READS):
        outcomes = await _round(conn, items, now, wait=True)
        unknown = [i for i, o in enumerate(outcomes) if isinstance(o, UnknownTenants)]
        if unknown:
            raise UnknownTenants(unknown)
        done = [o for o in outcomes if isinstance(o, Recorded)]
        if len(done) == len(items):
            return done
    raise ConcurrentChange("the mailing changed concurrently; retry")


async def _ingest_locked(
    conn: asyncpg.Connection, items: Sequence[Transition], now: datetime
) -> list[Recorded]:
    """Inside the caller's transaction: the mailings locked before the read, so the write
    never loses to another writer, and all or nothing."""
    await conn.execute(q.LOCK_MAILINGS, sorted({_lock_key(t) for t in items}))
    tenants, states = await _read(conn, items)
    unknown = [i for i, t in enumerate(items) if t.tenant_id not in tenants]
    if unknown:
        raise UnknownTenants(unknown)
    results, batch = _judge(items, states, now)
    changed = sum(1 for s in states.values() if s.changed)
    if batch.ids and len(await _write(conn, batch, states, [], now)) < changed:
        # only a tenant deleted since the read does this; the transaction must roll back
        raise ConcurrentChange("the tenant was deleted concurrently; retry")
    return results


async def ingest_round(
    conn: asyncpg.Connection, items: Sequence[Transition], now: datetime
) -> list[Recorded | UnknownTenants | None]:
    """Independent transitions, outside a transaction: one read, one write, each mailing on
    its own. In order, one outcome per item: its verdict (final: written, or nothing to
    write), UnknownTenants (nothing of it written), or None when its mailing could not be
    written: another writer changed it since the read, or holds its lock (never waited for
    here); nothing of that mailing was written, so its transitions are to be judged again.
    """
    if conn.is_in_transaction():
        raise RuntimeError("ingest_round writes each mailing on its own: no transaction")
    return await _round(conn, items, now, wait=False)


async def _round(
    conn: asyncpg.Connection, items: Sequence[Transition], now: datetime, *, wait: bool
) -> list[Recorded | UnknownTenants | None]:
    """`ingest_round`; ``wait``: for the mailings' locks (a transition alone) rather than
    leave a busy mailing unwritten (a batch)."""
    tenants, states = await _read(conn, items)
    known = [i for i, t in enumerate(items) if t.tenant_id in tenants]
    results, batch = _judge([items[i] for i in known], states, now)
    written: set[MailingKey] = set()
    if batch.ids:
        locks = sorted({_lock_key(items[i]) for i in known}) if wait else []
        written = await _write(conn, batch, states, locks, now, try_locks=not wait)
    outcomes: list[Recorded | UnknownTenants | None] = [
        None if t.tenant_id in tenants else UnknownTenants([0]) for t in items
    ]
    for i, result in zip(known, results, strict=True):
        key = _mailing(items[i])
        final = key in written or not states.get(key, _UNCHANGED).changed
        outcomes[i] = result if final else None
    return outcomes


async def _write(
    conn: asyncpg.Connection,
    batch: _Batch,
    states: dict[MailingKey, _MailingState],
    locks: list[int],
    now: datetime,
    *,
    try_locks: bool = False,
) -> set[MailingKey]:
    """Events, mailings, fan-out and NOTIFY in one round trip; the mailings written (one
    that changed since it was read is not, nor are its events; with ``try_locks``, neither
    is one whose lock another session holds)."""
    changed = [(k, s) for k, s in states.items() if s.changed]
    tries = [_key_lock(k) for k, _ in changed] if try_locks else []
    await ensure_day(conn, now)
    row = await conn.fetchrow(
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
        orjson.dumps({"\x1f".join(k): s.read_id for k, s in changed}).decode(),
        locks,
        tries,
    )
    assert row is not None
    EVENTS_INGESTED.inc(row["events"])
    if row["mailings"] == len(changed):
        return {k for k, _ in changed}
    return {(t, e, m) for t, e, m in row["written"] or ()}


async def record_transitions(
    conn: asyncpg.Connection, items: Sequence[Transition], now: datetime
) -> list[Recorded]:
    """The transactional outbox: `ingest` inside the caller's transaction."""
    if not conn.is_in_transaction():
        raise RuntimeError("record_transitions must run inside a transaction")
    return await ingest(conn, items, now)


async def record_transition(
    conn: asyncpg.Connection, transition: Transition, now: datetime | None = None
) -> Recorded:
    """Outbox entry point for one transition, inside the caller's transaction.

    Example::

        async with conn.transaction():
            await conn.execute("UPDATE letters SET ...")
            await record_transition(conn, Transition(tenant, "production", "ml_1",
                                                     MailingStatus.PRINTED))
    """
    results = await record_transitions(conn, [transition], now or datetime.now(UTC))
    return results[0]
