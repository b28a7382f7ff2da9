"""One delivery attempt: a signed POST and its classified outcome. No database here.

`run_attempt` is the one pipeline (headers and signature, target, send, classify) behind both
the worker and the test send. Whatever goes wrong inside it, at any step, becomes a recorded,
classified failed attempt: it never raises (but for cancellation), so no delivery is left in
flight by an exception.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import aiohttp
from yarl import URL

from dispatcher.netguard import BlockedAddress, is_blocked_ip
from dispatcher.policy import Outcome, classify_status
from dispatcher.signing import HMAC, build_signature_headers
from dispatcher.urls import InvalidUrl, parse_url

RESPONSE_EXCERPT_BYTES = 1024
_DRAIN_LIMIT = 64 * 1024


@dataclass(frozen=True)
class AttemptResult:
    outcome: Outcome
    status_code: int | None
    duration_ms: float
    error: str | None
    response_body: str | None
    retry_after: str | None


@dataclass(frozen=True)
class AttemptRequest:
    """What one attempt sends: the event's bytes, where, and the keys that sign it."""

    event_id: str
    event_type: str
    attempt: int
    body: bytes
    url: str
    secrets: list[str]
    standard_webhooks: bool
    signing: str = "hmac"  # what `secrets` are: HMAC secrets, or ed25519 private keys


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt as it travels from the send to the history (the ``attempts`` table)."""

    attempt: int
    started_at: datetime
    duration_ms: float
    outcome: Outcome
    status_code: int | None
    error: str | None
    response_body: str | None
    retry_after: str | None

    @property
    def succeeded(self) -> bool:
        return self.outcome == Outcome.SUCCESS


@dataclass(frozen=True)
class Target:
    """A URL split into where to connect and the Basic credentials it carried."""

    url: URL | None  # None: the stored URL is no valid target (stored before today's rules)
    authorization: str | None
    host: str
    blocked_literal: str | None  # the host, when it is an IP literal in a blocked range


@lru_cache(maxsize=4096)
def parse_target(url: str) -> Target:
    """Read with the parser registration used, so both see the same host."""
    try:
        parsed = parse_url(url)
    except InvalidUrl:
        return Target(None, None, "", None)
    authorization = None
    if parsed.credentials is not None:
        user, password = parsed.credentials
        pair = f"{user}:{password or ''}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    blocked = str(parsed.ip) if parsed.ip is not None and is_blocked_ip(parsed.ip) else None
    return Target(
        URL(parsed.without_credentials, encoded=True), authorization, parsed.host, blocked
    )


def delivery_headers(
    *,
    event_id: str,
    event_type: str,
    attempt: int,
    body: bytes,
    secrets: list[str],
    timestamp: int,
    signature_header: str,
    standard_webhooks: bool,
    signing: str = HMAC,
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "X-Event-Id": event_id,
        "X-Event-Type": event_type,
        "X-Delivery-Attempt": str(attempt),
    }
    headers.update(
        build_signature_headers(
            secrets=secrets,
            timestamp=timestamp,
            body=body,
            event_id=event_id,
            header_name=signature_header,
            standard_webhooks=standard_webhooks,
            signing=signing,
        )
    )
    return headers


def _classify_error(exc: BaseException) -> Outcome:
    if isinstance(exc, BlockedAddress):
        return Outcome.BLOCKED_ADDRESS
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return Outcome.TIMEOUT
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        return Outcome.TLS_ERROR
    cause = exc.__cause__
    if isinstance(cause, BlockedAddress):
        return Outcome.BLOCKED_ADDRESS
    if isinstance(exc, (UnicodeError, aiohttp.InvalidURL)) or isinstance(cause, UnicodeError):
        return Outcome.INVALID_TARGET  # e.g. a host name IDNA refuses: no retry will fix it
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return Outcome.CONNECTION_ERROR
    return Outcome.INTERNAL_ERROR


def _error_text(exc: BaseException) -> str:
    """The class and a short reason; never the URL, which may hold credentials."""
    if isinstance(exc, BlockedAddress):
        return f"BlockedAddress: {exc}"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "Timeout: no complete answer within the attempt timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__}: cannot connect ({exc.os_error.__class__.__name__})"
    if _classify_error(exc) == Outcome.INTERNAL_ERROR:
        return f"Internal: {type(exc).__name__}"
    return type(exc).__name__


async def send(
    session: aiohttp.ClientSession,
    *,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_seconds: float,
    allow_private: bool,
) -> AttemptResult:
    """POST once; never follows redirects; reads at most 1 KiB of what the receiver says."""
    start = time.perf_counter()
    try:
        target = parse_target(url)
    except Exception as exc:
        return AttemptResult(
            Outcome.INVALID_TARGET, None, 0.0, f"InvalidTarget: {type(exc).__name__}", None, None
        )
    if target.url is None or (target.blocked_literal is not None and not allow_private):
        reason = target.blocked_literal or "the URL's host is not a DNS name or an IP address"
        return AttemptResult(
            Outcome.BLOCKED_ADDRESS, None, 0.0, f"BlockedAddress: {reason}", None, None
        )
    if target.authorization is not None:
        headers = {**headers, "Authorization": target.authorization}
    try:
        async with asyncio.timeout(timeout_seconds):
            async with session.post(
                target.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None),
            ) as response:
                excerpt, status, retry_after = await read_answer(response)
    except Exception as exc:
        return AttemptResult(
            _classify_error(exc),
            None,
            (time.perf_counter() - start) * 1000,
            _error_text(exc),
            None,
            None,
        )
    duration = (time.perf_counter() - start) * 1000
    try:
        outcome = classify_status(status)
    except Exception as exc:
        return AttemptResult(
            Outcome.INTERNAL_ERROR, status, duration, f"Internal: {type(exc).__name__}", None, None
        )
    return AttemptResult(
        outcome,
        status,
        duration,
        None if outcome == Outcome.SUCCESS else f"HTTP {status}",
        readable_excerpt(excerpt),
        retry_after,
    )


async def read_answer(response: aiohttp.ClientResponse) -> tuple[bytes, int, str | None]:
    """The first KiB of the body (drained up to 64 KiB so the connection can be reused), the
    status and Retry-After."""
    excerpt = await response.content.read(RESPONSE_EXCERPT_BYTES)
    if not response.content.at_eof():
        await response.content.read(_DRAIN_LIMIT)
        if not response.content.at_eof():
            response.close()
    return excerpt, response.status, response.headers.get("Retry-After")


async def run_attempt(
    session: aiohttp.ClientSession,
    request: AttemptRequest,
    *,
    started_at: datetime,
    timeout_seconds: float,
    allow_private: bool,
    signature_header: str,
) -> AttemptRecord:
    """Headers and signature, target, send, classify: the whole attempt, for the worker and
    the test send alike, with any session. Never raises an exception of the attempt."""
    try:
        headers = delivery_headers(
            event_id=request.event_id,
            event_type=request.event_type,
            attempt=request.attempt,
            body=request.body,
            secrets=request.secrets,
            timestamp=unix_seconds(started_at),
            signature_header=signature_header,
            standard_webhooks=request.standard_webhooks,
            signing=request.signing,
        )
    except Exception as exc:
        return AttemptRecord(
            request.attempt,
            started_at,
            0.0,
            Outcome.INTERNAL_ERROR,
            None,
            f"Internal: signing failed ({type(exc).__name__})",
            None,
            None,
        )
    result = await send(
        session,
        url=request.url,
        body=request.body,
        headers=headers,
        timeout_seconds=timeout_seconds,
        allow_private=allow_private,
    )
    return AttemptRecord(
        request.attempt,
        started_at,
        result.duration_ms,
        result.outcome,
        result.status_code,
        result.error,
        result.response_body,
        result.retry_after,
    )


def readable_excerpt(excerpt: bytes) -> str | None:
    """The receiver's bytes as text PostgreSQL can store: a NUL would make the attempt's
    record (and the whole settle batch with it) fail forever, so it becomes U+FFFD too."""
    if not excerpt:
        return None
    return excerpt.decode("utf-8", "replace").replace("\x00", "\ufffd")


def unix_seconds(moment: datetime) -> int:
    return int(moment.timestamp())
