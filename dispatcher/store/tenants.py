"""Tenants and their API keys; keys are shown once and stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from dispatcher import ids
from dispatcher.db import queries as q
from dispatcher.ids import ApiKeyId, TenantId
from dispatcher.models import ApiKeyInfo, Environment, Principal, Tenant

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
    tenant_id = ids.tenant_id()
    async with conn.transaction():
        await conn.execute(q.INSERT_TENANT, tenant_id, name, now)
        keys = {env: await create_key(conn, tenant_id, env, now) for env in Environment}
    return Tenant(tenant_id, name, now), keys


async def create_key(
    conn: asyncpg.Connection, tenant_id: TenantId, environment: Environment, now: datetime
) -> NewKey:
    key = generate_key(environment)
    key_id = ids.api_key_id()
    await conn.execute(
        q.INSERT_API_KEY, key_id, tenant_id, environment.value, hash_key(key), key[:16], now
    )
    return NewKey(key_id, environment, key)


async def get_tenant(conn: asyncpg.Connection, tenant_id: str) -> Tenant | None:
    row = await conn.fetchrow(q.GET_TENANT, tenant_id)
    return Tenant.from_row(row) if row else None


async def list_tenants(conn: asyncpg.Connection) -> list[Tenant]:
    return [Tenant.from_row(r) for r in await conn.fetch(q.LIST_TENANTS)]


async def list_keys(conn: asyncpg.Connection, tenant_id: str | None) -> list[ApiKeyInfo]:
    return [ApiKeyInfo.from_row(r) for r in await conn.fetch(q.LIST_API_KEYS, tenant_id)]


async def revoke_key(conn: asyncpg.Connection, key_id: str, now: datetime) -> bool:
    return await conn.fetchrow(q.REVOKE_API_KEY, key_id, now) is not None


async def authenticate(conn: asyncpg.Connection, key: str) -> Principal | None:
    """The principal of a live key, or None; the final comparison is constant-time."""
    digest = hash_key(key)
    row = await conn.fetchrow(q.AUTHENTICATE_KEY, digest)
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
        return None
    return Principal(TenantId(row["tenant_id"]), Environment(row["environment"]), row["id"])
