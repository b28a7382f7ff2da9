"""Endpoints (webhook subscriptions) and their signing secrets."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from dispatcher import ids
from dispatcher.db import queries as q
from dispatcher.errors import FieldError, ValidationFailed
from dispatcher.flow import state_from_row
from dispatcher.ids import EndpointId
from dispatcher.limiter import allowed
from dispatcher.models import Endpoint, EndpointState, Ordering, Principal
from dispatcher.queue import QueueLimits, cancel_pending
from dispatcher.signing import (
    ED25519,
    HMAC,
    ed25519_public_key,
    generate_ed25519_key,
    generate_secret,
)
from dispatcher.store.secrets import open_secret, seal_secret, store_url, stored_url


def _endpoint(row: Any) -> Endpoint:
    """The endpoint with its URL as the tenant gave it (credentials unsealed)."""
    endpoint = Endpoint.from_row(row)
    url = stored_url(endpoint.id, row["url"], row["url_credentials"])
    return Endpoint(**{**endpoint.__dict__, "url": url})


@dataclass(frozen=True)
class EndpointChanges:
    """A partial update: None leaves a field as it is."""

    url: str | None = None
    description: str | None = None
    clear_description: bool = False
    event_types: list[str] | None = None
    enabled: bool | None = None
    metadata: dict[str, Any] | None = None
    standard_webhooks: bool | None = None
    ordering: Ordering | None = None
    set_rate_limit: bool = False  # with rate_limit_per_second (None: remove the limit)
    rate_limit_per_second: int | None = None


async def create_endpoint(
    conn: asyncpg.Connection,
    owner: Principal,
    *,
    url: str,
    event_types: list[str],
    now: datetime,
    secret: str | None = None,
    description: str | None = None,
    enabled: bool = True,
    metadata: dict[str, Any] | None = None,
    standard_webhooks: bool = False,
    signing: str = HMAC,
    rate_limit_per_second: int | None = None,
    ordering: Ordering = Ordering.NONE,
) -> Endpoint:
    """A new endpoint with its first secret (given or generated) or its first key pair.

    The returned endpoint carries the HMAC secret, to be shown once; an ed25519 endpoint
    carries only its public key: its private key never leaves the dispatcher.
    """
    material = _signing_material(signing, secret)
    endpoint_id = ids.endpoint_id()
    bare_url, credentials = store_url(endpoint_id, url)
    async with conn.transaction():
        row = await conn.fetchrow(
            q.INSERT_ENDPOINT,
            endpoint_id,
            owner.tenant_id,
            owner.environment.value,
            bare_url,
            description,
            event_types,
            enabled,
            metadata or {},
            standard_webhooks,
            now,
            signing,
            _public_key(signing, material),
            credentials,
            rate_limit_per_second,
            ordering.value,
        )
        await conn.execute(q.INSERT_SECRET, endpoint_id, seal_secret(endpoint_id, material), now)
    endpoint = _endpoint(row)
    return _with_shown_secret(endpoint, material)


def _signing_material(signing: str, secret: str | None) -> str:
    """The value endpoint_secrets keeps: an HMAC secret or an ed25519 private key."""
    if signing == HMAC:
        return secret if secret is not None else generate_secret()
    if signing != ED25519:
        raise ValueError(f"unknown signing scheme {signing!r}")
    if secret is not None:
        raise ValidationFailed(
            [FieldError("secret", "an ed25519 endpoint's key pair is generated; omit secret")]
        )
    return generate_ed25519_key()


def _public_key(signing: str, material: str) -> str | None:
    return ed25519_public_key(material) if signing == ED25519 else None


def _with_shown_secret(endpoint: Endpoint, material: str) -> Endpoint:
    """Only a shared secret is shown to the tenant; a private key is never shown."""
    shown = material if endpoint.signing == HMAC else None
    return Endpoint(**{**endpoint.__dict__, "secret": shown})


async def get_endpoint(
    conn: asyncpg.Connection, owner: Principal, endpoint_id: str
) -> Endpoint | None:
    row = await conn.fetchrow(q.GET_ENDPOINT, endpoint_id, owner.tenant_id, owner.environment.value)
    return _endpoint(row) if row else None


async def list_endpoints(
    conn: asyncpg.Connection,
    owner: Principal,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[Endpoint]:
    """Newest first; `after` is the (created_at, id) of the last item of the previous page."""
    created, last_id = after if after else (None, None)
    rows = await conn.fetch(
        q.LIST_ENDPOINTS, owner.tenant_id, owner.environment.value, created, last_id, limit
    )
    return [_endpoint(r) for r in rows]


async def endpoint_cursor(
    conn: asyncpg.Connection, owner: Principal, endpoint_id: str
) -> tuple[datetime, str] | None:
    """The (created_at, id) that `list_endpoints(after=...)` takes; deleted ones too."""
    row = await conn.fetchrow(
        q.GET_ENDPOINT_CURSOR, endpoint_id, owner.tenant_id, owner.environment.value
    )
    return (row["created_at"], row["id"]) if row else None


async def update_endpoint(
    conn: asyncpg.Connection,
    owner: Principal,
    endpoint_id: str,
    changes: EndpointChanges,
    now: datetime,
) -> Endpoint | None:
    bare_url, credentials = store_url(endpoint_id, changes.url) if changes.url else (None, None)
    async with conn.transaction():
        row = await conn.fetchrow(
            q.UPDATE_ENDPOINT,
            endpoint_id,
            owner.tenant_id,
            owner.environment.value,
            bare_url,
            changes.description,
            changes.event_types,
            changes.enabled,
            changes.metadata,
            changes.standard_webhooks,
            now,
            changes.clear_description,
            credentials,
            changes.ordering.value if changes.ordering else None,
            changes.set_rate_limit,
            changes.rate_limit_per_second,
        )
        if row is not None and changes.enabled is False:
            await cancel_pending(conn, endpoint_id, now)
    return _endpoint(row) if row else None


async def delete_endpoint(
    conn: asyncpg.Connection, owner: Principal, endpoint_id: str, now: datetime
) -> bool:
    """Soft delete, so the delivery history of past events stays readable; its signing
    secrets and the credentials in its URL are wiped: nothing will be signed or sent again."""
    async with conn.transaction():
        row = await conn.fetchrow(
            q.DELETE_ENDPOINT, endpoint_id, owner.tenant_id, owner.environment.value, now
        )
        if row is None:
            return False
        await cancel_pending(conn, endpoint_id, now)
        await conn.execute(q.WIPE_ENDPOINT_SECRETS, endpoint_id)
    return True


async def disable_endpoint(
    conn: asyncpg.Connection, endpoint_id: EndpointId, reason: str, now: datetime
) -> None:
    async with conn.transaction():
        await conn.execute(q.DISABLE_ENDPOINT, endpoint_id, reason, now)
        await cancel_pending(conn, endpoint_id, now)


async def rotate_secret(
    conn: asyncpg.Connection,
    owner: Principal,
    endpoint_id: str,
    new_secret: str | None,
    overlap_seconds: float,
    now: datetime,
) -> Endpoint | None:
    """The old secrets (or keys) keep signing for the overlap: receivers switch without a gap.

    ``new_secret`` None generates one: an HMAC secret, or an ed25519 key pair whose public
    key the endpoint shows from now on.
    """
    async with conn.transaction():
        endpoint = await get_endpoint(conn, owner, endpoint_id)
        if endpoint is None:
            return None
        material = _signing_material(endpoint.signing, new_secret)
        await conn.execute(q.EXPIRE_SECRETS, endpoint_id, now + timedelta(seconds=overlap_seconds))
        await conn.execute(q.INSERT_SECRET, endpoint_id, seal_secret(endpoint_id, material), now)
        public_key = _public_key(endpoint.signing, material)
        if public_key is not None:
            await conn.execute(q.SET_PUBLIC_KEY, endpoint_id, public_key)
    rotated = Endpoint(**{**endpoint.__dict__, "public_key": public_key})
    return _with_shown_secret(rotated, material)


async def active_secrets(
    conn: asyncpg.Connection, endpoint_ids: list[str], now: datetime
) -> dict[str, list[str]]:
    """Signing secrets per endpoint, oldest first (newest last): one round trip per batch."""
    found: dict[str, list[str]] = defaultdict(list)
    for row in await conn.fetch(q.ACTIVE_SECRETS, endpoint_ids, now):
        found[row["endpoint_id"]].append(open_secret(row["endpoint_id"], row["secret"]))
    return dict(found)


async def delivery_state(
    conn: asyncpg.Connection, endpoint_id: str, now: datetime, limits: QueueLimits
) -> EndpointState | None:
    """The endpoint's live delivery state, as every worker process currently shares it."""
    row = await conn.fetchrow(q.ENDPOINT_DELIVERY_STATE, endpoint_id)
    if row is None:
        return None
    config = limits.limiter()
    return EndpointState.from_row(
        row,
        now,
        adaptive_limit=allowed(state_from_row(row, config), config),
        breaker_threshold=limits.breaker_threshold,
    )
