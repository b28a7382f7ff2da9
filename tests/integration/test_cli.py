"""The `dispatcher` command: tenants and keys, bad settings, an unmigrated database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from run.cli import main
from tests.conftest import ENCRYPTION_KEY, scratch_database


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def arun(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI runs its own event loop, so from an async test it gets a thread."""
    return await asyncio.to_thread(run, capsys, *args)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("DISPATCHER_DATABASE_URL", database_url)
    monkeypatch.setenv("DISPATCHER_ENCRYPTION_KEY", ENCRYPTION_KEY)
    monkeypatch.setenv("DISPATCHER_LOG_FORMAT", "text")


async def test_tenant_and_key_lifecycle(
    pool: asyncpg.Pool, env: None, capsys: pytest.CaptureFixture[str], client: Any
) -> None:
    code, out, _ = await arun(capsys, "tenants", "create", "ACME", "--json")
    assert code == 0
    created = json.loads(out)
    assert created["keys"]["sandbox"].startswith("sk_sandbox_")
    assert created["keys"]["production"].startswith("sk_production_")

    code, out, _ = await arun(
        capsys, "keys", "create", "--tenant", created["tenant_id"], "--env", "sandbox", "--json"
    )
    new_key = json.loads(out)
    headers = {"Authorization": f"Bearer {new_key['key']}"}
    assert (await client.get("/v1/webhooks", headers=headers)).status == 200

    code, out, _ = await arun(capsys, "keys", "list", "--tenant", created["tenant_id"], "--json")
    listed = json.loads(out)
    assert len(listed) == 3
    assert new_key["key"] not in out, "keys are never listed, only their prefixes"
    async with pool.acquire() as conn:
        stored = await conn.fetch("SELECT key_hash FROM api_keys")
    assert all(new_key["key"].encode() not in bytes(r["key_hash"]) for r in stored)

    assert (await arun(capsys, "keys", "revoke", new_key["id"]))[0] == 0
    assert (await client.get("/v1/webhooks", headers=headers)).status == 401
    again = await arun(capsys, "keys", "revoke", new_key["id"])
    assert again[0] == 1, "revoking twice says so"


def test_a_bad_setting_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DISPATCHER_ATTEMPT_TIMEOUT_SECONDS", "-3")
    code, _, err = run(capsys, "migrate")
    assert code == 2
    assert "DISPATCHER_ATTEMPT_TIMEOUT_SECONDS" in err


@pytest.fixture
async def empty_database_url(database_url: str) -> Any:
    async with scratch_database(database_url, "empty") as url:
        yield url


def test_serve_refuses_an_unmigrated_database(empty_database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(DISPATCHER_DATABASE_URL=empty_database_url, DISPATCHER_PORT="0")
    done = subprocess.run(
        [sys.executable, "-m", "run.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "not migrated" in done.stderr and "dispatcher migrate" in done.stderr
