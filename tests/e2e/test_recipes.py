"""Every recipe of docs/recipes/ receives real deliveries from `dispatcher serve` (issue 13).

Each recipe runs as its own process (Python, Node or PHP), with the secret or public key of a
real endpoint, and must: process a delivery; process one sent during a rotation while it still
holds the old secret; process one after it switched to the new secret, still during the
overlap; answer a re-sent event as a duplicate; and refuse a tampered body (401), a stale
timestamp (400) and a missing signature (400), the statuses docs/receiving.md documents.
The Bjet24 article's own parser is run the same way, holding the old and then the new secret.

Retries are shortened (1 s, no growth) so that a refused delivery comes back within the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from dispatcher.signing import build_signature_headers
from dispatcher.store import endpoints as endpoint_store
from tests.conftest import TenantKeys
from tests.e2e.conftest import Process
from tests.tooling import free_port, require_tool

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "docs" / "recipes"
PLATFORM_TOKEN = "recipes-platform-token-0123456789abcdef"


@dataclass(frozen=True)
class Recipe:
    name: str
    script: Path
    runner: str  # "python", "node" or "php"
    scheme: str  # "v1" (X-Bjet24-Signature), "sw" (Standard Webhooks v1), "x" (X-Signature),
    # "v1a" (Standard Webhooks ed25519)
    key_variable: str = "WEBHOOK_SECRET"

    def command(self, port: int) -> list[str]:
        if self.runner == "python":
            return [sys.executable, str(self.script)]
        if self.runner == "node":
            return [require_tool("node"), str(self.script)]
        return [require_tool("php"), "-S", f"127.0.0.1:{port}", str(self.script)]


ALL = [
    Recipe("python_stdlib", RECIPES / "python_stdlib.py", "python", "v1"),
    Recipe("python_stripe", RECIPES / "python_stripe.py", "python", "v1"),
    Recipe("python_x_signature", RECIPES / "python_x_signature.py", "python", "x"),
    Recipe("python_standardwebhooks", RECIPES / "python_standardwebhooks.py", "python", "sw"),
    Recipe(
        "python_standardwebhooks_ed25519",
        RECIPES / "python_standardwebhooks.py",
        "python",
        "v1a",
        "WEBHOOK_PUBLIC_KEY",
    ),
    Recipe("node_crypto", RECIPES / "node_crypto.mjs", "node", "v1"),
    Recipe("node_crypto_ed25519", RECIPES / "node_crypto.mjs", "node", "v1a", "WEBHOOK_PUBLIC_KEY"),
    Recipe("php_hash_hmac", RECIPES / "php_hash_hmac.php", "php", "v1"),
]
ARTICLE = Recipe(
    "article",
    ROOT / "tests" / "recipes" / "article_receiver.mjs",
    "node",
    "v1",
    "BJET24_WEBHOOK_SECRET",
)


@dataclass
class ReceiverProcess:
    """One recipe process on a fixed port (restarted on the same port with a new key)."""

    recipe: Recipe
    port: int
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    async def start(self, key: str) -> None:
        await self.stop()
        log = self.log_dir / f"{self.recipe.name}-{len(self.logs)}.log"
        self.logs.append(log)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")},
            self.recipe.key_variable: key,
            "PORT": str(self.port),
            "WEBHOOK_STATE_DIR": str(self.log_dir),
        }
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - a test starting a receiver
                self.recipe.command(self.port), env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        async with asyncio.timeout(20):
            while True:
                assert self.proc.poll() is None, f"{self.recipe.name} exited: {self.output()}"
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.close()
                    return
                except OSError:
                    await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                while self.proc.poll() is None:  # noqa: ASYNC110 - nothing to await on a Popen
                    await asyncio.sleep(0.05)
        self.proc = None

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs)

    async def saw(self, line: str, limit: float = 20) -> None:
        async with asyncio.timeout(limit):
            while line not in self.output():  # noqa: ASYNC110 - polling a log file
                await asyncio.sleep(0.05)


@dataclass
class Service:
    base: str
    http: aiohttp.ClientSession
    keys: TenantKeys

    async def call(self, method: str, path: str, body: Any = None, token: str = "") -> Any:
        headers = {"Authorization": f"Bearer {token or self.keys.sandbox}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            text = await r.text()
            assert r.status < 300, f"{method} {path}: {r.status} {text}"
            return json.loads(text) if text else None

    async def transition(self, mailing_id: str, status: str) -> str:
        body = {"tenant_id": self.keys.tenant_id, "environment": "sandbox", "status": status}
        path = f"/internal/v1/mailings/{mailing_id}/transitions"
        accepted = await self.call("POST", path, body, token=PLATFORM_TOKEN)
        event_id: str = accepted["event_id"]
        return event_id

    async def delivery(self, endpoint_id: str, event_id: str) -> dict[str, Any]:
        page = await self.call("GET", f"/v1/webhooks/{endpoint_id}/deliveries?limit=100")
        (found,) = [d for d in page["data"] if d["event_id"] == event_id]
        return dict(found)


@pytest.fixture
async def service(
    start_process: Callable[..., Process], make_tenant: Any
) -> AsyncIterator[Service]:
    port = free_port()
    server = start_process(
        "serve",
        port=port,
        platform_token=PLATFORM_TOKEN,
        retry_base_seconds=1,
        retry_multiplier=1,
        retry_jitter=0,
    )
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(60):
            while True:
                assert server.proc.poll() is None, server.output()
                try:
                    async with http.get(base + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        yield Service(base, http, await make_tenant("Recipes"))


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[Callable[[Recipe], ReceiverProcess]]:
    made: list[ReceiverProcess] = []

    def make(recipe: Recipe) -> ReceiverProcess:
        made.append(ReceiverProcess(recipe, free_port(), tmp_path))
        return made[-1]

    yield make
    for r in made:
        await r.stop()


# ---- requests the test forges -------------------------------------------------------------


def _signed(recipe: Recipe, material: str, event: dict[str, Any], timestamp: int) -> Any:
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    headers = build_signature_headers(
        secrets=[material],
        timestamp=timestamp,
        body=body,
        event_id=event["event_id"],
        standard_webhooks=recipe.scheme == "sw",
        signing="ed25519" if recipe.scheme == "v1a" else "hmac",
    )
    return body, {"Content-Type": "application/json", **headers}


async def _post(port: int, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}/hook", data=body, headers=headers) as r,
    ):
        return r.status


async def _refuses_forgeries(recipe: Recipe, port: int, material: str) -> None:
    """Control first (a correct request passes), then each forgery with its status."""
    now = int(time.time())
    event = {"event_id": "evt_forged_control", "event_type": "mailing.paid", "data": {}}
    body, headers = _signed(recipe, material, event, now)
    assert await _post(port, body, headers) == 200, "the control request must pass"
    tampered = body.replace(b"mailing.paid", b"mailing.failed")
    assert await _post(port, tampered, headers) == 401, "tampered body"
    bare = {"Content-Type": "application/json"}
    assert await _post(port, body, bare) == 400, "missing signature"
    if recipe.scheme != "x":  # X-Signature carries no timestamp: nothing to be stale
        stale_body, stale = _signed(recipe, material, {**event, "event_id": "evt_stale"}, now - 600)
        assert await _post(port, stale_body, stale) == 400, "stale timestamp"
    else:
        assert await _post(port, body, {**bare, "X-Signature": "md5=00"}) == 400, "malformed"


# ---- the recipes -------------------------------------------------------------------------


async def _endpoint(service: Service, recipe: Recipe, port: int) -> tuple[str, str]:
    """(endpoint id, what the receiver holds: the secret, or the ed25519 public key)."""
    body: dict[str, Any] = {"url": f"http://127.0.0.1:{port}/hook", "events": ["*"]}
    if recipe.scheme == "sw":
        body["standard_webhooks"] = True
    if recipe.scheme == "v1a":
        body["signing"] = "ed25519"
    created = await service.call("POST", "/v1/webhooks", body)
    held = created["public_key"] if recipe.scheme == "v1a" else created["secret"]
    return created["id"], held


async def _rotate(service: Service, recipe: Recipe, endpoint_id: str) -> str:
    rotated = await service.call("POST", f"/v1/webhooks/{endpoint_id}/rotate-secret")
    held: str = rotated["public_key"] if recipe.scheme == "v1a" else rotated["secret"]
    return held


async def _newest_material(pool: asyncpg.Pool, endpoint_id: str) -> str:
    """What signs now: the newest secret or private key (read as the worker reads it)."""
    from datetime import UTC, datetime

    async with pool.acquire() as conn:
        active = await endpoint_store.active_secrets(conn, [endpoint_id], datetime.now(UTC))
    return active[endpoint_id][-1]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("recipe", ALL, ids=lambda r: r.name)
async def test_recipe_verifies_real_deliveries_and_refuses_forgeries(
    recipe: Recipe,
    service: Service,
    receiver: Callable[[Recipe], ReceiverProcess],
    pool: asyncpg.Pool,
) -> None:
    found = receiver(recipe)
    endpoint_id, old = await _endpoint(service, recipe, found.port)
    await found.start(old)

    first = await service.transition("ml_r1", "created")
    await found.saw(f"processed {first} mailing.created")

    new = await _rotate(service, recipe, endpoint_id)
    during = await service.transition("ml_r1", "paid")
    if recipe.scheme == "x":
        # X-Signature is made with the newest secret only: the receiver still on the old one
        # refuses, and the retry after it switched is accepted.
        await _attempted(service, endpoint_id, during)
        assert f"processed {during}" not in found.output()
        await found.start(new)
    else:
        await found.saw(f"processed {during} mailing.paid")  # holding the OLD secret or key
        await found.start(new)
    await found.saw(f"processed {during} mailing.paid")
    after = await service.transition("ml_r1", "queued")
    await found.saw(f"processed {after} mailing.queued")  # holding the NEW one, same overlap

    # The receiver has it; the worker may not have recorded the attempt yet (a retry of an
    # attempt in flight is a 409): wait until it has.
    delivery = await _settled(service, endpoint_id, after)
    await service.call("POST", f"/v1/deliveries/{delivery['id']}/retry")
    await found.saw(f"duplicate {after}")
    for event_id in (first, during, after):
        assert (await _settled(service, endpoint_id, event_id))["status"] == "succeeded"

    await _refuses_forgeries(recipe, found.port, await _newest_material(pool, endpoint_id))


async def _attempted(service: Service, endpoint_id: str, event_id: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            found = await service.delivery(endpoint_id, event_id)
            if found["attempt_count"] >= 1 and found["status"] != "in_flight":
                return found
            await asyncio.sleep(0.05)


async def _settled(service: Service, endpoint_id: str, event_id: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            found = await service.delivery(endpoint_id, event_id)
            if found["status"] in ("succeeded", "dead"):
                return found
            await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_the_articles_parser_during_a_rotation(
    service: Service, receiver: Callable[[Recipe], ReceiverProcess]
) -> None:
    """The article's parser keeps only the last v1=, which is the newest secret's.

    Holding the old secret it refuses what is sent during the overlap, and those deliveries
    come back until it holds the new secret; holding the new secret it verifies at once.
    Nothing is lost either way.
    """
    article = receiver(ARTICLE)
    endpoint_id, old = await _endpoint(service, ARTICLE, article.port)
    await article.start(old)
    before = await service.transition("ml_a1", "created")
    await article.saw(f"processed {before} mailing.created")

    new = await _rotate(service, ARTICLE, endpoint_id)
    during = await service.transition("ml_a1", "paid")
    await article.saw("refused 401 invalid signature")  # still on the old secret
    assert f"processed {during}" not in article.output()

    await article.start(new)  # the receiver deploys the new secret, still in the overlap
    await article.saw(f"processed {during} mailing.paid")  # the retry now verifies
    after = await service.transition("ml_a1", "queued")
    await article.saw(f"processed {after} mailing.queued")

    retried = await _settled(service, endpoint_id, during)
    assert retried["status"] == "succeeded" and retried["attempt_count"] >= 2
    assert retried["attempts"][0]["status_code"] == 401
    fresh = await _settled(service, endpoint_id, after)
    assert fresh["status"] == "succeeded" and fresh["attempt_count"] == 1


def test_every_recipe_is_run_by_this_module() -> None:
    """A recipe added to docs/recipes/ without a test here would be documentation unproven."""
    assert {p.name for p in RECIPES.iterdir() if p.is_file()} == {r.script.name for r in ALL}


def test_recipe_examples_do_not_drift_from_docs() -> None:
    page = (ROOT / "docs" / "receiving.md").read_text("utf-8")
    for path in RECIPES.iterdir():
        assert f"recipes/{path.name}" in page, f"docs/receiving.md does not present {path.name}"
