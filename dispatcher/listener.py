"""LISTEN on a dedicated connection (outside the pool), reconnecting and pinging it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

CHANNEL = "dispatcher_deliveries"


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
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning(
                    "listener cannot connect; retrying", extra={"error_class": type(exc).__name__}
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                await conn.add_listener(CHANNEL, self._notified)
                self.connected.set()
                self._on_wake()
                backoff = 0.1
                while True:
                    await asyncio.sleep(self._ping_seconds)
                    await asyncio.wait_for(conn.execute("SELECT 1"), timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
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
