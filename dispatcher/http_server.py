"""How the API's HTTP connections are served: a cap, deadlines and quiet, JSON parser errors.

aiohttp answers a request it cannot parse (an oversized or NUL-bearing header) in plain text
and logs a traceback, for any unauthenticated client; it has no cap on connections. Here:
- A request that cannot be parsed answers the JSON error shape and logs one WARNING line (the
  client address and the error class, never the offending bytes: they may hold a key).
- Beyond ``max_connections`` open connections, a new one gets a JSON 503 with
  ``Retry-After`` and is closed before anything is read.
- ``header_timeout`` bounds the time from a request head's first byte to its end (a client
  trickling a head is closed); ``idle_timeout`` (aiohttp's keep-alive timer) closes a
  connection that sends nothing at all, from connecting or from its previous answer. It is
  longer than clients keep idle connections (aiohttp's 15 s), so that a client never reuses
  a connection the server is closing at that moment.
  Body reads are bounded by the API's own middleware; what is left of a body after an early
  answer is drained for at most ``LINGERING_SECONDS``.

Hooks into aiohttp's `Server.__call__`, the one place request handlers are made; the import-
time checks below fail loudly if a new aiohttp version renames what is relied on.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest

from dispatcher.settings import Settings

log = logging.getLogger(__name__)

# After an answer sent before the body was read (413, 408), how long the rest of the body is
# read and dropped so that the client sees the answer rather than a reset; aiohttp's 10 s
# would let a slow client hold the connection that much longer.
LINGERING_SECONDS = 1.0

if "_manager" not in web.RequestHandler.__slots__:  # pragma: no cover
    raise ImportError("aiohttp changed: RequestHandler._manager is gone")


def _error_json(status: int, type_: str, message: str) -> bytes:
    """The API's error shape, `{"error": {"type", "message"}}`."""
    return orjson.dumps({"error": {"type": type_, "message": message}})


def _raw_response(status: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


class GuardedRequestHandler(web.RequestHandler):
    """One connection: refused beyond the cap; parse errors in JSON, logged in one line."""

    def __init__(
        self, manager: web.Server, *, max_connections: int, header_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._max_connections = max_connections
        self._header_timeout = header_timeout
        self._head_deadline: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        """Time a request head from its first byte until it is complete."""
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:
            self._stop_head_deadline()
        elif data and self._head_deadline is None and self._waiting_for_a_request():
            self._head_deadline = self._loop.call_later(self._header_timeout, self._head_too_slow)

    def _waiting_for_a_request(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self._waiting_for_a_request():
            log.info(
                "connection closed: no complete request head in time",
                extra={"client": _peer(self.transport) if self.transport else None},
            )
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_deadline()
        super().connection_lost(exc)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        if manager is not None and len(manager.connections) >= self._max_connections:
            self._manager = None  # never registered, so connection_lost has nothing to undo
            self._force_close = True
            body = _error_json(503, "unavailable", "too many connections; retry later")
            writer = transport if isinstance(transport, asyncio.WriteTransport) else None
            if writer is not None:
                writer.write(_raw_response(503, body, {"Retry-After": "1"}))
            transport.close()
            log.warning(
                "connection refused: too many open connections",
                extra={"client": _peer(transport), "status": 503},
            )
            return
        super().connection_made(transport)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)  # a bug: keep the trace
        log.warning(
            "unparseable HTTP request refused",
            extra={
                "client": request.remote,
                "status": status,
                "error_class": type(exc).__name__,
            },
        )
        type_ = "payload_too_large" if status == 413 else "bad_request"
        text = f"the request cannot be parsed as HTTP/1.1 ({type(exc).__name__})"
        response = web.Response(
            status=status, body=_error_json(status, type_, text), content_type="application/json"
        )
        response.force_close()
        return response


def _peer(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else None


class GuardedServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections are capped, timed and answer parse errors in JSON."""

    def __init__(
        self,
        app: web.Application,
        *,
        max_connections: int,
        header_timeout: float,
        idle_timeout: float,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("lingering_time", LINGERING_SECONDS)
        super().__init__(app, keepalive_timeout=idle_timeout, **kwargs)
        self._max_connections = max_connections
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        if not hasattr(plain, "_kwargs"):  # pragma: no cover
            raise RuntimeError("aiohttp changed: Server keeps no handler kwargs")
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            max_connections=self._max_connections,
            header_timeout=self._header_timeout,
            **plain._kwargs,
        )


def api_runner(app: web.Application, settings: Settings) -> GuardedRunner:
    """The runner `dispatcher serve` puts the API on: the settings' cap and head deadline."""
    return GuardedRunner(
        app,
        max_connections=settings.api_max_connections,
        header_timeout=settings.api_header_timeout_seconds,
        idle_timeout=settings.api_idle_timeout_seconds,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace_seconds,
    )
