"""LISTEN on a dedicated connection (outside the pool), reconnecting and pinging it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from dispatcher.db.pool import DB_ERRORS

log = logging.getLogger(__name__)

CHANNEL = "dispatcher_deliveries"
_LOST: tuple[type[Exception], ...] = (*DB_ERRORS, TimeoutError)


class Listener:
    """Calls `on_wake` on every notification, and after every reconnect (some were missed)."""

    def __init__(
        self, url: str, on_wake: Callable[[], None], *, ping_seconds: float = 15.0
    ) -> None:
        self._url = url
        self._on_wake = on_wake
        self._ping_seconds = ping_seconds
        self.connected = asyncio.Event()

    def _notified(self, *_: Any) -> None:
        self._on_wake()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                conn = await asyncpg.connect(self._url)
            except DB_ERRORS as exc:
                log.warning(
                    "listener cannot connect; retrying", extra={"error_class": type(exc).__name__}
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            try:
                await self._listen(conn)
            except _LOST as exc:
                log.warning(
                    "listener connection lost; reconnecting",
                    extra={"error_class": type(exc).__name__},
                )
            finally:
                self.connected.clear()
                try:
                    await asyncio.wait_for(conn.close(), timeout=2)
                except Exception:
                    conn.terminate()

    async def _listen(self, conn: asyncpg.Connection) -> None:
        """Wake on every NOTIFY until the connection is lost; never returns normally.

        A server restart closes the socket: the termination callback notices it at once,
        not at the next ping, since every NOTIFY sent in between would be missed.
        """
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._notified)
        self.connected.set()
        self._on_wake()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._ping_seconds):
                    await lost.wait()
            if lost.is_set():
                raise ConnectionResetError("the server closed the LISTEN connection")
            await asyncio.wait_for(conn.execute("SELECT 1"), timeout=5)
