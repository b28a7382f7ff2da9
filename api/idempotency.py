"""`Idempotency-Key`: a retried POST returns the first answer instead of acting twice.

The stored answer is written in the same transaction as the handler's own writes, so
either both exist or neither does; a concurrent request with the same key waits on a
transaction-scoped advisory lock and then replays. Only answers the handler *returns* are
stored (and not 5xx): a raised error rolls everything back and leaves the key unused, so
the client may fix the request and retry with the same key.

Decisions:
- Keys are 1 to 255 printable ASCII characters; anything else is a 422 on the header.
- The same key with a different request (method, path or JSON body; key order and
  whitespace do not count) is a 422 ``idempotency_key_reused``, as the IETF
  Idempotency-Key draft advises; 409 would suggest "retry later", which never helps.
- A replay carries ``Idempotent-Replayed: true`` and the stored status and body bytes.
- A stored answer never keeps a secret: routes that answer with one (create, rotate-secret)
  name the fields to ``omit``, and the replay answers without them. The secret is shown
  once, to the request that created it; a client that lost it rotates the secret.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

import asyncpg
import orjson
from aiohttp import web

from api.context import clock, pool
from dispatcher.errors import DispatcherError, FieldError, ValidationFailed
from dispatcher.models import Principal
from dispatcher.store import idempotency as store

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255

Handler = Callable[[asyncpg.Connection], Awaitable[web.Response]]


class IdempotencyKeyReused(DispatcherError):
    type = "idempotency_key_reused"


def tenant_scope(principal: Principal) -> str:
    """Keys of one tenant environment never collide with another's (or the platform's)."""
    return f"{principal.tenant_id}:{principal.environment.value}"


def _key(request: web.Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or any(not " " <= c <= "~" for c in key):
        raise ValidationFailed(
            [FieldError(HEADER, f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")]
        )
    return key


def request_fingerprint(method: str, path: str, body: bytes) -> bytes:
    """SHA-256 of what makes two requests "the same"; JSON is compared as data, not bytes."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        canonical = body
    return hashlib.sha256(b"%s\n%s\n%s" % (method.encode(), path.encode(), canonical)).digest()


def _replay(status: int, body: bytes) -> web.Response:
    headers = {REPLAYED_HEADER: "true"}
    if status == 204:
        return web.Response(status=status, headers=headers)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _stored_body(body: bytes, omit: tuple[str, ...]) -> bytes:
    if not omit or not body:
        return body
    answer = orjson.loads(body)
    if not isinstance(answer, dict):
        return body
    return orjson.dumps({k: v for k, v in answer.items() if k not in omit})


async def idempotent(
    request: web.Request, scope: str, handler: Handler, *, omit: tuple[str, ...] = ()
) -> web.Response:
    """Run `handler` in one transaction, at most once per (scope, Idempotency-Key).

    Without the header it is simply a transaction. The body is read before a connection
    is taken, so a slow client never holds one. Top-level fields named in `omit` (secrets)
    are left out of the stored answer, and so out of every replay.
    """
    key = _key(request)
    body = await request.read()
    async with pool(request).acquire() as conn, conn.transaction():
        if key is None:
            return await handler(conn)
        fingerprint = request_fingerprint(request.method, request.path, body)
        await store.lock_key(conn, scope, key)
        stored = await store.stored_answer(conn, scope, key)
        if stored is not None:
            if stored.request_hash != fingerprint:
                raise IdempotencyKeyReused(
                    f"this {HEADER} was already used for a different request; "
                    "use a new key for a new request"
                )
            return _replay(stored.status, stored.body)
        response = await handler(conn)
        if response.status < 500:
            if not isinstance(response.body, bytes | None):
                raise TypeError("idempotent handlers must answer with an in-memory body")
            answer = store.StoredAnswer(
                fingerprint, response.status, _stored_body(response.body or b"", omit)
            )
            await store.save_answer(conn, scope, key, answer, clock(request).now())
        return response
