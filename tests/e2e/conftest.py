"""Dispatcher processes started as a user would start them, against the session's database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dispatcher.models import Environment, Principal
from dispatcher.store import endpoints as endpoint_store
from tests.conftest import ENCRYPTION_KEY
from tests.e2e.portal_support import (  # noqa: F401
    portal,
    portal_browser,
    portal_database,
    portal_server,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        # a file, not a pipe: an unread pipe fills up and blocks the process on its next log line
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "run.cli", *args],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, limit: float = 30) -> int:
        async with asyncio.timeout(limit):
            while self.proc.poll() is None:  # noqa: ASYNC110 - nothing to await on a Popen
                await asyncio.sleep(0.05)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def process_env(database_url: str, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env["DISPATCHER_DATABASE_URL"] = database_url
    env["DISPATCHER_ENCRYPTION_KEY"] = ENCRYPTION_KEY
    env["DISPATCHER_ALLOW_PRIVATE_TARGETS"] = "true"
    env["DISPATCHER_LOG_FORMAT"] = "json"
    env["DISPATCHER_METRICS_PORT"] = "0"  # several workers share the host; tests opt in
    # other tests write history on a fake clock months behind the wall clock: a process here
    # must not drop those days while the next test empties the tables (test_retention_process
    # sets the default back)
    env["DISPATCHER_RETENTION_DAYS"] = "3650"
    for key, value in settings.items():
        env[f"DISPATCHER_{key.upper()}"] = str(value)
    return env


@pytest.fixture
async def start_process(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> AsyncIterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(*args: str, **settings: Any) -> Process:
        log = tmp_path / f"process-{len(started)}.log"
        found = Process(list(args), process_env(database_url, **settings), log)
        started.append(found)
        return found

    yield start
    for p in started:
        p.stop()


async def add_endpoint(pool: asyncpg.Pool, tenant_id: str, url: str, now: Any) -> str:
    owner = Principal(tenant_id, Environment.SANDBOX, "key")  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        endpoint = await endpoint_store.create_endpoint(
            conn, owner, url=url, event_types=["*"], secret=SECRET, now=now
        )
    return endpoint.id


async def wait_until(predicate: Callable[[], Any], limit: float = 20) -> None:
    """Poll a condition under a generous time limit; never assert on elapsed time."""
    async with asyncio.timeout(limit):
        while not await predicate():  # noqa: ASYNC110 - polling the database
            await asyncio.sleep(0.05)
