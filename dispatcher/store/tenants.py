"""Tenants and their API keys; keys are shown once and stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import Enum

import asyncpg

from dispatcher import ids
from dispatcher.db import queries as q
from dispatcher.ids import ApiKeyId, TenantId
from dispatcher.models import ApiKeyInfo, Environment, Principal, Tenant

# last_used_at is written at most this often per key: authentication stays a read
LAST_USED_RESOLUTION = timedelta(minutes=1)

KEY_PREFIX = {Environment.SANDBOX: "sk_sandbox_", Environment.PRODUCTION: "sk_production_"}


@dataclass(frozen=True)
class NewKey:
    id: ApiKeyId
    environment: Environment
    key: str


def hash_key(key: str) -> bytes:
    """Keys carry 192 random bits: a plain SHA-256 suffices, and no salt keeps lookup indexed."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def generate_key(environment: Environment) -> str:
    return KEY_PREFIX[environment] + secrets.token_urlsafe(24)


async def create_tenant(
    conn: asyncpg.Connection, name: str, now: datetime
) -> tuple[Tenant, dict[Environment, NewKey]]:
    """The operators' path (CLI): a tenant with one key per environment."""
    async with conn.transaction():
        tenant, _ = await add_tenant(conn, name, None, now)
        keys = {env: await create_key(conn, tenant.id, env, now) for env in Environment}
    return tenant, keys


async def add_tenant(
    conn: asyncpg.Connection, name: str, uid: str | None, now: datetime
) -> tuple[Tenant, bool]:
    """(the tenant, whether it was created): a live tenant with the same uid is returned as
    it is, so a platform that retries never creates two; the caller compares names."""
    while True:
        row = await conn.fetchrow(q.INSERT_TENANT, ids.tenant_id(), name, now, uid)
        if row is not None:
            return Tenant.from_row(row), True
        existing = await conn.fetchrow(q.GET_TENANT_BY_UID, uid)
        if existing is not None:  # else deleted between the two statements: try again
            return Tenant.from_row(existing), False


async def create_key(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    environment: Environment,
    now: datetime,
    name: str | None = None,
) -> NewKey:
    key = generate_key(environment)
    key_id = ids.api_key_id()
    await conn.execute(
        q.INSERT_API_KEY, key_id, tenant_id, environment.value, hash_key(key), key[:16], now, name
    )
    return NewKey(key_id, environment, key)


async def get_tenant(conn: asyncpg.Connection, tenant_id: str) -> Tenant | None:
    row = await conn.fetchrow(q.GET_TENANT, tenant_id)
    return Tenant.from_row(row) if row else None


async def list_tenants_page(
    conn: asyncpg.Connection,
    *,
    uid: str | None,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[Tenant]:
    """Newest first; `after` is the (created_at, id) of the last tenant of the previous page."""
    created, last_id = after if after else (None, None)
    rows = await conn.fetch(q.LIST_TENANTS_PAGE, uid, created, last_id, limit)
    return [Tenant.from_row(r) for r in rows]


async def tenant_cursor(conn: asyncpg.Connection, tenant_id: str) -> tuple[datetime, str] | None:
    row = await conn.fetchrow(q.GET_TENANT_CURSOR, tenant_id)
    return (row["created_at"], row["id"]) if row else None


async def update_tenant(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    name: str | None,
    suspended: bool | None,
    now: datetime,
) -> Tenant | None:
    """Resuming wakes the workers: what waited during the suspension is due and goes now."""
    async with conn.transaction():
        row = await conn.fetchrow(q.UPDATE_TENANT, tenant_id, name, suspended, now)
        if row is not None and suspended is False:
            await conn.execute(q.NOTIFY_DELIVERIES)
    return Tenant.from_row(row) if row else None


async def mark_deleted(conn: asyncpg.Connection, tenant_id: str, now: datetime) -> bool:
    """From the commit on, the tenant is gone for every reader: keys, ingest, deliveries."""
    return await conn.fetchrow(q.MARK_TENANT_DELETED, tenant_id, now) is not None


async def list_live_keys(conn: asyncpg.Connection, tenant_id: str) -> list[ApiKeyInfo]:
    return [ApiKeyInfo.from_row(r) for r in await conn.fetch(q.LIST_LIVE_API_KEYS, tenant_id)]


async def revoke_tenant_key(
    conn: asyncpg.Connection, tenant_id: str, key_id: str, now: datetime
) -> bool:
    return await conn.fetchrow(q.REVOKE_TENANT_API_KEY, key_id, tenant_id, now) is not None


async def list_tenants(conn: asyncpg.Connection) -> list[Tenant]:
    return [Tenant.from_row(r) for r in await conn.fetch(q.LIST_TENANTS)]


async def list_keys(conn: asyncpg.Connection, tenant_id: str | None) -> list[ApiKeyInfo]:
    return [ApiKeyInfo.from_row(r) for r in await conn.fetch(q.LIST_API_KEYS, tenant_id)]


async def revoke_key(conn: asyncpg.Connection, key_id: str, now: datetime) -> bool:
    return await conn.fetchrow(q.REVOKE_API_KEY, key_id, now) is not None


class KeyState(Enum):
    UNKNOWN = "unknown"  # no such key, revoked, or its tenant deleted
    SUSPENDED = "suspended"  # a live key of a suspended tenant


async def authenticate(conn: asyncpg.Connection, key: str, now: datetime) -> Principal | KeyState:
    """The principal of a live key, or why not; the final comparison is constant-time.

    Notes the key's use at most once a minute (a guarded UPDATE that is a no-op for the
    requests racing the first one), so a busy key costs reads only.
    """
    digest = hash_key(key)
    row = await conn.fetchrow(q.AUTHENTICATE_KEY, digest)
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
        return KeyState.UNKNOWN
    last_used: datetime | None = row["last_used_at"]
    stale = now - LAST_USED_RESOLUTION
    if last_used is None or last_used < stale:
        await conn.execute(q.TOUCH_API_KEY, row["id"], now, stale)
    if row["suspended"]:
        return KeyState.SUSPENDED
    return Principal(TenantId(row["tenant_id"]), Environment(row["environment"]), row["id"])


@dataclass(frozen=True)
class UsageRow:
    day: date
    environment: Environment
    events_accepted: int
    deliveries_succeeded: int
    failed_attempts: int
    dead_letters: int


async def usage(
    conn: asyncpg.Connection, tenant_id: str, first: date, last: date
) -> list[UsageRow]:
    """Per day and environment, from the counters (a bounded index range, not the history)."""
    return [
        UsageRow(
            r["day"],
            Environment(r["environment"]),
            r["events_accepted"],
            r["deliveries_succeeded"],
            r["failed_attempts"],
            r["dead_letters"],
        )
        for r in await conn.fetch(q.USAGE, tenant_id, first, last)
    ]


async def fold_usage(conn: asyncpg.Connection, today: date) -> int:
    """Fold the per-session counter rows of days before ``today`` into one row per tenant,
    day and environment (housekeeping keeps the table small); the rows folded."""
    folded: int = await conn.fetchval(q.FOLD_USAGE, today)
    return folded
