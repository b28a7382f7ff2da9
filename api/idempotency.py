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
- The scope is a context manager that owns the connection and the transaction; the route's
  code runs inside it and hands its answer to ``scope.answer``. Without the header there is
  no lock, no lookup, no stored answer, and no transaction unless the route asks for one.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

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


class IdempotencyKeyReused(DispatcherError):
    type = "idempotency_key_reused"


def tenant_scope(principal: Principal) -> str:
    """Keys of one tenant environment never collide with another's (or the platform's)."""
    return f"{principal.tenant_id}:{principal.environment.value}"


def has_key(request: web.Request) -> bool:
    """Whether the request names an Idempotency-Key (valid or not: the scope judges it)."""
    return HEADER in request.headers


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


@dataclass
class Scope:
    """One request's unit of work: its connection, and the stored answer when it is a retry."""

    conn: asyncpg.Connection
    replay: web.Response | None = None
    _key: str | None = None
    _fingerprint: bytes = b""
    _scope: str = ""
    _omit: tuple[str, ...] = ()
    _request: web.Request | None = None

    async def answer(self, response: web.Response) -> web.Response:
        """Keep the answer under the key (not a 5xx), in the same transaction as the writes."""
        if self._key is None or self._request is None or response.status >= 500:
            return response
        if not isinstance(response.body, bytes | None):
            raise TypeError("idempotent answers must have an in-memory body")
        stored = store.StoredAnswer(
            self._fingerprint, response.status, _stored_body(response.body or b"", self._omit)
        )
        await store.save_answer(
            self.conn, self._scope, self._key, stored, clock(self._request).now()
        )
        return response


@contextlib.asynccontextmanager
async def idempotency_scope(
    request: web.Request,
    scope: str,
    *,
    omit: tuple[str, ...] = (),
    transaction: bool = True,
) -> AsyncIterator[Scope]:
    """At most once per (scope, Idempotency-Key): a retry gets ``replay`` and must answer it.

    The body is read before a connection is taken, so a slow client never holds one. With
    the header, everything inside runs in one transaction with the stored answer; without
    it, in a transaction only when ``transaction`` (a route whose one statement is its unit
    of work asks for none). An exception rolls everything back and leaves the key unused.
    """
    key = _key(request)
    body = await request.read()
    async with pool(request).acquire() as conn:
        if key is None:
            if not transaction:
                yield Scope(conn)
                return
            async with conn.transaction():
                yield Scope(conn)
            return
        fingerprint = request_fingerprint(request.method, request.path, body)
        async with conn.transaction():
            await store.lock_key(conn, scope, key)
            stored = await store.stored_answer(conn, scope, key)
            if stored is None:
                yield Scope(conn, None, key, fingerprint, scope, omit, request)
                return
            if stored.request_hash != fingerprint:
                raise IdempotencyKeyReused(
                    f"this {HEADER} was already used for a different request; "
                    "use a new key for a new request"
                )
            yield Scope(conn, _replay(stored.status, stored.body))
