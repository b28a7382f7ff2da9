"""`dispatcher secrets rekey` while `dispatcher serve` delivers, and the start-up key checks of
real processes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import signal
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import asyncpg

from dispatcher import sealing
from dispatcher.events import Transition, record_transitions
from dispatcher.models import Environment, Principal
from dispatcher.store import endpoints as endpoint_store
from dispatcher.transitions import MailingStatus
from tests.conftest import ENCRYPTION_KEY
from tests.e2e.conftest import process_env

SECRET = "whsec_" + base64.b64encode(b"rekey-test-secret-of-32-bytes!!!").decode()


async def _emit(pool: asyncpg.Pool, tenant_id: str, start: int, count: int) -> None:
    items = [
        Transition(tenant_id, "sandbox", f"ml_{i}", MailingStatus.CREATED)
        for i in range(start, start + count)
    ]
    async with pool.acquire() as conn, conn.transaction():
        await record_transitions(conn, items, datetime.now(UTC))


async def _key_ids(pool: asyncpg.Pool) -> set[str | None]:
    async with pool.acquire() as conn:
        values = [r[0] for r in await conn.fetch("SELECT secret FROM endpoint_secrets")]
        values += [
            r[0]
            for r in await conn.fetch(
                "SELECT url_credentials FROM endpoints WHERE url_credentials IS NOT NULL"
            )
        ]
    return {sealing.key_id_of(v) for v in values}


def _verified(received: Any) -> bool:
    """The X-Bjet24-Signature carries a v1= made with SECRET (what the receiver holds)."""
    parts = [p.split("=", 1) for p in received.headers["X-Bjet24-Signature"].split(",")]
    stamp = next(v for k, v in parts if k == "t")
    signed = f"{stamp}.".encode() + received.body
    mac = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return any(k == "v1" and hmac.compare_digest(v, mac) for k, v in parts)


async def test_rekey_while_the_service_delivers(
    pool: asyncpg.Pool, make_tenant: Any, receiver: Any, start_process: Any, database_url: str
) -> None:
    tenant = await make_tenant()
    new_key = sealing.generate_key()
    new_id = sealing.key_id(sealing.parse_key(new_key))
    owner = Principal(tenant.tenant_id, Environment.SANDBOX, "key")  # type: ignore[arg-type]
    async with pool.acquire() as conn:  # sealed under the old key (this session's)
        for n in range(3):
            url = receiver.url(f"/ep{n}").replace("http://", "http://hook:Pw-Rekey@")
            await endpoint_store.create_endpoint(
                conn, owner, url=url, event_types=["*"], secret=SECRET, now=datetime.now(UTC)
            )
    old_id = sealing.current().current_id
    assert await _key_ids(pool) == {old_id}
    for n in range(3):
        receiver.script(f"/ep{n}", 200, delay=0.5)  # slow: in flight all through the rekey
    serve = start_process(
        "serve",
        port=0,
        endpoint_concurrency=4,
        encryption_key=new_key,
        encryption_old_keys=ENCRYPTION_KEY,
    )
    await _emit(pool, tenant.tenant_id, 0, 30)
    await receiver.wait_for(1, timeout=20)  # deliveries are in flight now
    env = process_env(database_url, encryption_key=new_key, encryption_old_keys=ENCRYPTION_KEY)
    rekey = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "run.cli", "secrets", "rekey"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rekey.returncode == 0, rekey.stderr
    assert new_id in rekey.stdout and "re-encrypted 3 secrets, 3 URL credentials" in rekey.stderr
    assert await _key_ids(pool) == {new_id}
    async with pool.acquire() as conn:
        in_flight = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE status <> 'succeeded'"
        )
    assert in_flight > 0, "the rekey ran after everything was delivered: nothing proved"
    await _emit(pool, tenant.tenant_id, 30, 30)  # after the rekey, too
    await receiver.wait_for(180, timeout=60)
    assert len(receiver.requests) == 180
    assert all(_verified(r) for r in receiver.requests)
    expected = "Basic " + base64.b64encode(b"hook:Pw-Rekey").decode()
    assert {r.headers["Authorization"] for r in receiver.requests} == {expected}
    serve.signal(signal.SIGTERM)
    assert await serve.wait() == 0, serve.output()
    # done: the old key can go; a process holding only the old one refuses to start
    only_new = start_process("serve", port=0, encryption_key=new_key)
    await _emit(pool, tenant.tenant_id, 60, 1)
    await receiver.wait_for(183, timeout=30)
    assert all(_verified(r) for r in receiver.requests[180:])
    only_new.signal(signal.SIGTERM)
    assert await only_new.wait() == 0
    only_old = start_process("serve", port=0, encryption_key=ENCRYPTION_KEY)
    assert await only_old.wait() == 2
    assert "DISPATCHER_ENCRYPTION_KEY" in only_old.output()
    assert new_id in only_old.output()
    assert SECRET not in only_old.output() and new_key not in only_old.output()


async def test_a_process_without_the_key_refuses_to_start(
    pool: asyncpg.Pool, make_tenant: Any, start_process: Any, tmp_path: Any
) -> None:
    tenant = await make_tenant()
    owner = Principal(tenant.tenant_id, Environment.SANDBOX, "key")  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        await endpoint_store.create_endpoint(
            conn,
            owner,
            url="https://hooks.example.com/x",
            event_types=["*"],
            secret=SECRET,
            now=datetime.now(UTC),
        )
    unset = start_process("api", port=0, encryption_key="", data_dir=tmp_path / "data")
    assert await unset.wait() == 2
    assert "DISPATCHER_ENCRYPTION_KEY is not set" in unset.output()
    assert not (tmp_path / "data").exists()  # no key generated over sealed data
    malformed = start_process("api", port=0, encryption_key="not-a-key")
    assert await malformed.wait() == 2
    assert "DISPATCHER_ENCRYPTION_KEY" in malformed.output()
