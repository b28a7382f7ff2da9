"""`dispatcher dead-letters list|replay` against the test database, as an operator runs it.

The CLI starts its own event loop (as it does from a shell), so it runs in a thread here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from run import cli, commands
from tests.conftest import ENCRYPTION_KEY, TenantKeys

MakeTenant = Callable[..., Awaitable[TenantKeys]]


@pytest.fixture
def cli_database(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("DISPATCHER_DATABASE_URL", database_url)
    monkeypatch.setenv("DISPATCHER_ENCRYPTION_KEY", ENCRYPTION_KEY)
    monkeypatch.setenv("DISPATCHER_LOG_FORMAT", "text")


async def run_cli(*args: str) -> int:
    return await asyncio.to_thread(cli.main, list(args))


async def dead_letters(
    world: Any, tenant: TenantKeys, path: str, count: int, status: str = "created"
) -> Any:
    """`count` events for an endpoint of its own event type that always fails: with a tiny
    max age, the next drain dead-letters them all."""
    endpoint = await world.endpoint(tenant, path, events=[f"mailing.{status}"])
    world.receiver.script(path, 500)
    for n in range(count):
        await world.emit(tenant, f"ml_{path.strip('/')}_{n}", status)
    return endpoint


def test_progress_bar_is_plain_text() -> None:
    assert commands.progress_bar(500, 1000, width=10) == "\r[#####     ] 500/1000"
    assert commands.progress_bar(0, 0, width=4) == "\r[####] 0/0"


@pytest.mark.usefixtures("cli_database")
async def test_list_and_replay_dead_letters(
    world: Any, make_tenant: MakeTenant, capsys: pytest.CaptureFixture[str]
) -> None:
    world.clock.set(datetime.now(UTC))  # the CLI stamps the wall clock: stay near it
    acme, other = await make_tenant("ACME"), await make_tenant("Other")
    first = await dead_letters(world, acme, "/a", 3)
    second = await dead_letters(world, acme, "/b", 2, "paid")
    foreign = await dead_letters(world, other, "/c", 1)
    assert await world.drain(max_age_seconds=10) == 6
    sent_before = {r.headers["X-Event-Id"]: r.body for r in world.receiver.requests}

    assert await run_cli("dead-letters", "list", "--json") == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert len(listed) == 6
    assert {d["endpoint_id"] for d in listed} == {first.id, second.id, foreign.id}
    assert all(d["id"].startswith("dlv_") and d["attempts"] == 1 for d in listed)
    assert await run_cli("dead-letters", "list", "--json", "--endpoint", second.id) == 0
    assert {d["endpoint_id"] for d in orjson.loads(capsys.readouterr().out)} == {second.id}
    assert await run_cli("dead-letters", "list", "--tenant", other.tenant_id) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert foreign.id in line and "attempts=1" in line and "last=500" in line

    args = ("dead-letters", "replay", "--tenant", acme.tenant_id, "--chunk-size", "2")
    assert await run_cli(*args) == 0
    out = capsys.readouterr()
    assert "re-queued 5 dead deliveries" in out.out
    assert "\r[" in out.err and "] 5/5" in out.err and "] 2/5" in out.err
    assert await world.statuses(first) == ["pending"] * 3
    assert await world.statuses(second) == ["pending"] * 2
    assert await world.statuses(foreign) == ["dead"]

    world.clock.set(datetime.now(UTC) + timedelta(seconds=1))  # the replay is due
    for path in ("/a", "/b"):
        world.receiver.script(path, 200)
    assert await world.drain() == 5
    resent = world.receiver.requests[6:]
    assert len(resent) == 5
    for request in resent:
        assert request.body == sent_before[request.headers["X-Event-Id"]]
        assert request.headers["X-Delivery-Attempt"] == "2"


@pytest.mark.usefixtures("cli_database")
async def test_replay_filters_and_skips_disabled_endpoints(
    world: Any, make_tenant: MakeTenant, capsys: pytest.CaptureFixture[str]
) -> None:
    acme = await make_tenant("ACME")
    live = await dead_letters(world, acme, "/live", 2)
    off = await dead_letters(world, acme, "/off", 1, "paid")
    assert await world.drain(max_age_seconds=10) == 3
    async with world.pool.acquire() as conn:
        await conn.execute("UPDATE endpoints SET enabled = false WHERE id = $1", off.id)

    later = (world.clock.now() + timedelta(minutes=1)).isoformat()
    assert await run_cli("dead-letters", "replay", "--since", later) == 0
    assert "re-queued 0 dead deliveries" in capsys.readouterr().out
    assert await world.statuses(live) == ["dead", "dead"]

    assert await run_cli("dead-letters", "replay", "--until", later) == 0
    out = capsys.readouterr()
    assert "re-queued 2 dead deliveries" in out.out
    assert "skipping 1" in out.err
    assert await world.statuses(live) == ["pending", "pending"]
    assert await world.statuses(off) == ["dead"]

    assert await run_cli("dead-letters", "list", "--json", "--endpoint", off.id) == 0
    (entry,) = orjson.loads(capsys.readouterr().out)
    assert entry["endpoint_live"] is False

    with pytest.raises(SystemExit):
        cli.main(["dead-letters", "replay", "--since", "last tuesday"])
    with pytest.raises(SystemExit):
        cli.main(["dead-letters", "replay", "--chunk-size", "0"])
