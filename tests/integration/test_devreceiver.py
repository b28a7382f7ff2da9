"""`dispatcher receive`, the local receiver for trying things out: both signing kinds, and the
statuses docs/receiving.md tells receivers to answer (200, 400, 401)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dispatcher.devreceiver import receiver_app
from dispatcher.signing import (
    build_signature_headers,
    ed25519_public_key,
    generate_ed25519_key,
    generate_secret,
)
from dispatcher.verification import Verdict, check_v1a, public_key

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[2]
BODY = b'{"data":{},"event_id":"evt_1","event_type":"mailing.paid","occurred_at":"x"}'
OLD, NEW = generate_secret(), generate_secret()
KEY_OLD, KEY_NEW = generate_ed25519_key(), generate_ed25519_key()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []

    async def start(**kwargs: Any) -> Client:
        client: Client = TestClient(TestServer(receiver_app(**kwargs)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for c in clients:
        await c.close()


def _headers(material: list[str], signing: str, timestamp: int | None = None) -> dict[str, str]:
    return build_signature_headers(
        secrets=material,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        body=BODY,
        event_id="evt_1",
        standard_webhooks=False,
        signing=signing,
    )


async def _status(client: Client, body: bytes, headers: dict[str, str]) -> int:
    async with client.post("/hook", data=body, headers=headers) as response:
        return response.status


@pytest.mark.parametrize(
    ("kwargs", "material", "signing"),
    [
        ({"secret": OLD}, [OLD, NEW], "hmac"),  # holding the old secret during a rotation
        ({"secret": NEW}, [OLD, NEW], "hmac"),
        ({"public_key_text": ed25519_public_key(KEY_OLD)}, [KEY_OLD, KEY_NEW], "ed25519"),
        ({"public_key_text": ed25519_public_key(KEY_NEW)}, [KEY_OLD, KEY_NEW], "ed25519"),
    ],
)
async def test_verifies_and_refuses_with_the_documented_statuses(
    serve: Callable[..., Any],
    kwargs: dict[str, Any],
    material: list[str],
    signing: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = await serve(**kwargs)
    good = _headers(material, signing)
    assert await _status(client, BODY, good) == 200
    assert await _status(client, BODY.replace(b"paid", b"sent"), good) == 401
    assert await _status(client, BODY, _headers(material, signing, int(time.time()) - 301)) == 400
    assert await _status(client, BODY, {}) == 400
    out = capsys.readouterr().out
    assert out.count("verified") == 1 and "REFUSED (mismatch)" in out
    assert "REFUSED (stale)" in out and "REFUSED (malformed)" in out


async def test_another_key_is_a_mismatch(serve: Callable[..., Any]) -> None:
    client = await serve(public_key_text=ed25519_public_key(generate_ed25519_key()))
    assert await _status(client, BODY, _headers([KEY_OLD], "ed25519")) == 401


def test_check_v1a_ignores_other_versions_and_bad_entries() -> None:
    headers = {k.lower(): v for k, v in _headers([KEY_NEW], "ed25519", 1000).items()}
    key = public_key(ed25519_public_key(KEY_NEW))
    assert check_v1a(headers, [key], BODY, now=1000) is Verdict.OK
    noisy = {**headers, "webhook-signature": "v1,abc v1a,!!! " + headers["webhook-signature"]}
    assert check_v1a(noisy, [key], BODY, now=1000) is Verdict.OK
    only_v1 = {**headers, "webhook-signature": "v1,abc"}
    assert check_v1a(only_v1, [key], BODY, now=1000) is Verdict.MISMATCH


@pytest.mark.parametrize("bad", ["whsec_abc", "whpk_not-base64", "whpk_AAAA"])
def test_cli_refuses_a_bad_public_key(bad: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "run.cli", "receive", "--public-key", bad, "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "public key" in done.stderr


def test_cli_wants_exactly_one_of_secret_and_public_key() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "run.cli", "receive"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "--secret" in done.stderr and "--public-key" in done.stderr
