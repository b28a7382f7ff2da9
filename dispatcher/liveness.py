"""Worker liveness: each worker process is known to the database exactly while it is alive.

A worker inserts its row in `workers` and takes a session-level advisory lock on its id, in
one transaction, on a connection it keeps for its whole life. The lock is free exactly when
that session is gone: the process was killed (the server sees the socket close at once), or
its machine or network is lost (TCP keepalives, set short on that session, end it within
about 10 s). Any worker's reaper then hands the dead worker's deliveries back to the queue and
frees its endpoint slots (`dispatcher_reap`). A worker that comes back after being declared
dead registers anew; its late settles are fenced out (a queue row is settled only by the
worker id and attempt number that claimed it). `heartbeat_at` is for operators only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import UTC, datetime

import asyncpg

from dispatcher.db import queries as q
from dispatcher.db.pool import DB_ERRORS

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
# server side: probe an idle client after 3 s, every 1 s, give up after 3 misses
_KEEPALIVES = (
    "SET tcp_keepalives_idle = 3",
    "SET tcp_keepalives_interval = 1",
    "SET tcp_keepalives_count = 3",
)


class Liveness:
    """Registers this process as a worker and keeps the registration alive."""

    def __init__(self, pool: asyncpg.Pool, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self._pool = pool
        self._heartbeat_seconds = heartbeat_seconds
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None
        self._id: int | None = None
        self._registered = asyncio.Event()

    @property
    def worker_id(self) -> int | None:
        """This process's id while registered (None while it is re-registering)."""
        return self._id

    async def wait_registered(self) -> int:
        await self._registered.wait()
        assert self._id is not None
        return self._id

    async def register(self) -> int:
        conn = await self._pool.acquire()
        try:
            for statement in _KEEPALIVES:
                await conn.execute(statement)
            async with conn.transaction():
                worker_id: int = await conn.fetchval(
                    q.REGISTER_WORKER, socket.gethostname(), os.getpid(), datetime.now(UTC)
                )
                await conn.execute(q.LOCK_WORKER, worker_id)
        except BaseException:
            await self._discard(conn)
            raise
        self._conn, self._id = conn, worker_id
        self._registered.set()
        log.info(f"worker registered as {worker_id}")
        return worker_id

    async def close(self) -> None:
        """A clean stop: the row goes and the lock is released (the connection goes back)."""
        conn, worker_id = self._conn, self._id
        self._conn, self._id = None, None
        self._registered.clear()
        if conn is None:
            return
        try:
            await conn.execute(q.UNREGISTER_WORKER, worker_id)
            await self._pool.release(conn)
        except DB_ERRORS:
            await self._discard(conn)

    async def keep_alive(self) -> None:
        """Heartbeat; when the session is lost, register again (a new id)."""
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            try:
                if self._conn is None:
                    await self.register()
                    continue
                await self._conn.execute(q.HEARTBEAT, self._id)
            except DB_ERRORS as exc:
                log.warning(
                    "worker liveness lost; registering again",
                    extra={"error_class": type(exc).__name__},
                )
                conn, self._conn, self._id = self._conn, None, None
                self._registered.clear()
                if conn is not None:
                    await self._discard(conn)

    async def _discard(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        with contextlib.suppress(Exception):
            conn.terminate()
        with contextlib.suppress(Exception):
            await self._pool.release(conn)
