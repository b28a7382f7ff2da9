"""Tenant portal sessions: a one-time link token, then a cookie; both stored only as hashes.

The link's token travels in the URL fragment, so no server log or Referer ever holds it; the
page exchanges it once for an HttpOnly cookie. Tokens carry 256 random bits, so a plain
SHA-256 suffices (as for API keys) and keeps the lookup indexed. The prefixes differ from
the API keys' (``sk_``), and each secret is looked up only in its own column: an API key
never opens the portal, a portal token or cookie never opens the API as a bearer key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from dispatcher import ids
from dispatcher.db import queries as q
from dispatcher.ids import ApiKeyId, TenantId
from dispatcher.models import Environment, Principal

TOKEN_PREFIX = "pst_"
COOKIE_PREFIX = "psc_"
DEFAULT_LIFETIME_SECONDS = 3600
MAX_LIFETIME_SECONDS = 86400


@dataclass(frozen=True)
class NewPortalSession:
    id: str
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class PortalSession:
    id: str
    tenant_id: TenantId
    environment: Environment
    expires_at: datetime
    suspended: bool  # the tenant's: its API answers 403, as for its keys

    def principal(self) -> Principal:
        return Principal(self.tenant_id, self.environment, ApiKeyId(self.id), via="portal")


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def csrf_token(cookie: str) -> str:
    """Derived from the cookie, so it needs no storage and dies with the session."""
    return hmac.new(cookie.encode("utf-8", "surrogatepass"), b"csrf", hashlib.sha256).hexdigest()


async def create(
    conn: asyncpg.Connection,
    tenant_id: str,
    environment: Environment,
    lifetime_seconds: int,
    now: datetime,
) -> NewPortalSession:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session_id = ids.new_id("ps")
    expires_at = now + timedelta(seconds=lifetime_seconds)
    await conn.execute(
        q.INSERT_PORTAL_SESSION,
        session_id,
        tenant_id,
        environment.value,
        _hash(token),
        now,
        expires_at,
    )
    return NewPortalSession(session_id, token, expires_at)


def _session(row: asyncpg.Record) -> PortalSession:
    return PortalSession(
        row["id"],
        TenantId(row["tenant_id"]),
        Environment(row["environment"]),
        row["expires_at"],
        row["suspended"],
    )


async def exchange(
    conn: asyncpg.Connection, token: str, now: datetime
) -> tuple[PortalSession, str] | None:
    """Spend a live, unused link token: the session and its new cookie, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = _hash(token)
    cookie = COOKIE_PREFIX + secrets.token_urlsafe(32)
    row = await conn.fetchrow(q.EXCHANGE_PORTAL_TOKEN, digest, _hash(cookie), now)
    if row is None or not hmac.compare_digest(bytes(row["token_hash"]), digest):
        return None
    return _session(row), cookie


async def authenticate(
    conn: asyncpg.Connection, cookie: str, now: datetime
) -> PortalSession | None:
    """The live session of a portal cookie, or None; the final comparison is constant-time."""
    if not cookie.startswith(COOKIE_PREFIX):
        return None
    digest = _hash(cookie)
    row = await conn.fetchrow(q.AUTHENTICATE_PORTAL_COOKIE, digest, now)
    if row is None or not hmac.compare_digest(bytes(row["cookie_hash"]), digest):
        return None
    return _session(row)


async def revoke(conn: asyncpg.Connection, session_id: str, now: datetime) -> bool:
    return await conn.fetchrow(q.REVOKE_PORTAL_SESSION, session_id, now) is not None
