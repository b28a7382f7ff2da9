"""`dispatcher retention run [--dry-run]`: says what it removes (or would), removes it, stands
aside while another process applies retention, and refuses a retention shorter than the max age.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from dispatcher import retention
from dispatcher.clock import FakeClock
from dispatcher.db import queries as q
from run.cli import main
from tests.integration.history_tables import Scratch


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def arun(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI runs its own event loop, so from an async test it gets a thread."""
    return await asyncio.to_thread(run, capsys, *args)


@pytest.fixture
def clock() -> FakeClock:
    """The CLI reads the wall clock: the history is laid out around the real today."""
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str, scratch: Scratch) -> None:
    monkeypatch.setenv("DISPATCHER_DATABASE_URL", database_url)
    monkeypatch.setenv("DISPATCHER_LOG_FORMAT", "text")
    monkeypatch.setattr(retention, "HISTORY", scratch.history)


async def count_partitions(pool: asyncpg.Pool, scratch: Scratch) -> int:
    async with pool.acquire() as conn:
        n: int = await conn.fetchval(
            f"SELECT count(*) FROM pg_inherits WHERE inhparent IN"
            f" ('{scratch.schema}.events'::regclass, '{scratch.schema}.attempts'::regclass)"
        )
    return n


async def test_dry_run_then_run_print_the_partitions_and_rows(
    pool: asyncpg.Pool, env: None, scratch: Scratch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await arun(capsys, "retention", "run", "--dry-run")
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("would remove")]
    # 41 days back, 30 kept: days 31..40 of both tables, 10 rows each
    assert len(lines) == 20, out
    assert all("10 rows" in line for line in lines)
    assert f"partition {scratch.schema}.events_p" in out
    assert "DISPATCHER_RETENTION_DAYS=30" in out
    assert await count_partitions(pool, scratch) == 84, "a dry run removes nothing"

    code, out, _ = await arun(capsys, "retention", "run")
    assert code == 0
    assert len([line for line in out.splitlines() if line.startswith("removed")]) == 20
    assert await count_partitions(pool, scratch) == 64

    code, out, _ = await arun(capsys, "retention", "run", "--json")
    assert code == 0
    assert json.loads(out)["removed"] == []


async def test_json_output_names_each_partition_its_range_and_size(
    pool: asyncpg.Pool, env: None, scratch: Scratch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await arun(capsys, "retention", "run", "--dry-run", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["dry_run"] is True and report["busy"] is False
    first = min(report["removed"], key=lambda r: (r["table"], r["from"]))
    assert first["table"] == f"{scratch.schema}.attempts"
    assert first["rows"] == 10 and first["bytes"] > 0
    start = datetime.fromisoformat(first["from"])
    assert datetime.fromisoformat(first["to"]) - start == timedelta(days=1)
    assert first["partition"] == f"{scratch.schema}.attempts_p{start:%Y%m%d}"


async def test_while_another_process_applies_retention_the_command_says_so(
    pool: asyncpg.Pool, env: None, scratch: Scratch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with pool.acquire() as holder, holder.transaction():
        assert await holder.fetchval(q.TRY_RETENTION_LOCK)
        code, _, err = await arun(capsys, "retention", "run")
    assert code == 1
    assert "another process is applying retention" in err
    assert await count_partitions(pool, scratch) == 84


def test_a_retention_not_longer_than_the_max_age_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DISPATCHER_RETENTION_DAYS", "1")
    code, _, err = run(capsys, "retention", "run")
    assert code == 2
    assert "DISPATCHER_RETENTION_DAYS" in err and "max age" in err
    monkeypatch.setenv("DISPATCHER_RETRY_MAX_AGE_SECONDS", "3600")
    monkeypatch.setenv("DISPATCHER_RETENTION_DAYS", "0")
    code, _, err = run(capsys, "migrate")
    assert code == 2 and "DISPATCHER_RETENTION_DAYS" in err
