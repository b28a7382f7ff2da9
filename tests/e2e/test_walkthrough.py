"""README's walk-through, as a user runs it: `dispatcher serve` on the embedded database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import stripe

PLATFORM_TOKEN = "dev-platform-token-change-me-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(
        DISPATCHER_DATA_DIR=str(data_dir),
        DISPATCHER_PORT=str(port),
        DISPATCHER_PLATFORM_TOKEN=PLATFORM_TOKEN,
        DISPATCHER_ALLOW_PRIVATE_TARGETS="true",
    )
    return env


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "run.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


async def _until_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(60), aiohttp.ClientSession() as http:
        while True:
            assert server.poll() is None, "dispatcher serve exited"
            try:
                async with http.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


@pytest.mark.timeout(180)
async def test_readme_walkthrough_on_the_embedded_database(tmp_path: Path, receiver: Any) -> None:
    port = _free_port()
    env = _env(tmp_path / "data", port)
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(  # noqa: ASYNC220 - a test starting the service
            [sys.executable, "-m", "run.cli", "serve", "--migrate"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await _until_ready(base, server)
        platform = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/internal/v1/tenants",
                headers=platform,
                json={"name": "ACME", "uid": "cust_4711"},
            ) as r:
                assert r.status == 201, await r.text()
                tenant = await r.json()
            async with http.post(
                f"{base}/internal/v1/tenants/{tenant['id']}/keys",
                headers=platform,
                json={"environment": "sandbox", "name": "walk-through"},
            ) as r:
                assert r.status == 201, await r.text()
                key = (await r.json())["key"]
            async with http.post(
                f"{base}/v1/webhooks",
                headers={"Authorization": f"Bearer {key}"},
                json={"url": receiver.url("/hook"), "events": ["mailing.*"]},
            ) as r:
                assert r.status == 201, await r.text()
                endpoint = await r.json()
            async with http.get(
                f"{base}/v1/webhooks", headers={"Authorization": f"Bearer {key}"}
            ) as r:
                listed = await r.json()
            assert [e["id"] for e in listed["data"]] == [endpoint["id"]]
            async with http.post(
                f"{base}/internal/v1/mailings/ml_123/transitions",
                headers={"Authorization": f"Bearer {PLATFORM_TOKEN}"},
                json={
                    "tenant_id": tenant["id"],
                    "environment": "sandbox",
                    "status": "printed",
                    "tracking_number": "ZA123456789BE",
                },
            ) as r:
                assert r.status == 202, await r.text()
                accepted = await r.json()
        await receiver.wait_for(1, timeout=10)
        (got,) = receiver.requests
        assert got.headers["X-Event-Id"] == accepted["event_id"]
        stripe.WebhookSignature.verify_header(
            got.body.decode(), got.headers["X-Bjet24-Signature"], endpoint["secret"], tolerance=300
        )
        assert json.loads(got.body)["data"]["status"] == "printed"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        # the data survives a restart of the embedded server, and so does its encryption key
        assert (tmp_path / "data" / "encryption.key").exists()
        listed_again = _cli(env, "tenants", "list", "--json")
        assert tenant["id"] in listed_again
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
