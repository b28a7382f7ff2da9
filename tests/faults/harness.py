"""What the process-level fault tests share: an HTTP client for a `dispatcher api` process,
and a ledger that checks what the receivers got against what was accepted."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from dispatcher.transitions import event_type_matches
from tests.conftest import PLATFORM_TOKEN
from tests.e2e.conftest import Process, wait_until
from tests.receiver import Receiver

PLATFORM = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
BATCH = 100  # transitions per platform request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def poll(condition: Callable[[], bool], limit: float, every: float = 0.2) -> None:
    """Wait for a cheap synchronous condition, under a generous limit."""
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - the condition is in this process's memory
            await asyncio.sleep(every)


@dataclass
class Api:
    """A running `dispatcher api` (or `serve`) process, spoken to over HTTP."""

    http: aiohttp.ClientSession
    port: int
    process: Process

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self) -> bool:
        assert self.process.proc.poll() is None, self.process.output()[-3000:]
        try:
            async with self.http.get(f"{self.base}/readyz") as r:
                return r.status == 200
        except aiohttp.ClientConnectionError:
            return False

    async def wait_ready(self, limit: float = 30) -> None:
        await wait_until(self.ready, limit=limit)

    async def register(self, key: str, url: str, events: Sequence[str]) -> str:
        body = {"url": url, "events": list(events)}
        auth = {"Authorization": f"Bearer {key}"}
        async with self.http.post(f"{self.base}/v1/webhooks", json=body, headers=auth) as r:
            assert r.status == 201, await r.text()
            created: dict[str, Any] = await r.json()
        return str(created["id"])

    async def report(self, items: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """One platform batch; the (event id, event type) of every accepted transition."""
        async with self.http.post(
            f"{self.base}/internal/v1/transitions", json={"transitions": items}, headers=PLATFORM
        ) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
        return [
            (res["event_id"], res["event_type"])
            for res in answer["results"]
            if res["status"] == "accepted"
        ]


def transitions(tenant_id: str, mailings: int, statuses: Sequence[str]) -> list[dict[str, Any]]:
    """Every mailing through the statuses in order, status by status (so batches interleave)."""
    return [
        {"tenant_id": tenant_id, "environment": "sandbox", "mailing_id": f"ml_{i}", "status": s}
        for s in statuses
        for i in range(mailings)
    ]


def batches(items: list[dict[str, Any]], size: int = BATCH) -> list[list[dict[str, Any]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class Subscriber:
    receiver: Receiver
    path: str
    events: list[str]

    def wants(self, event_type: str) -> bool:
        return any(event_type_matches(p, event_type) for p in self.events)


@dataclass
class Ledger:
    """Accepted events against what every subscriber received."""

    subscribers: list[Subscriber]
    accepted: dict[str, str] = field(default_factory=dict)  # event id -> event type

    def accept(self, events: Iterable[tuple[str, str]]) -> None:
        self.accepted.update(events)

    def expected(self) -> set[tuple[int, str]]:
        return {
            (n, event_id)
            for event_id, event_type in self.accepted.items()
            for n, s in enumerate(self.subscribers)
            if s.wants(event_type)
        }

    def arrivals(self) -> Counter[tuple[int, str]]:
        found: Counter[tuple[int, str]] = Counter()
        for n, s in enumerate(self.subscribers):
            for r in s.receiver.at(s.path):
                found[(n, r.headers["X-Event-Id"])] += 1
        return found

    def received(self) -> int:
        return sum(len(s.receiver.at(s.path)) for s in self.subscribers)

    def all_arrived(self) -> bool:
        return self.expected() <= set(self.arrivals())

    def verdict(self) -> dict[str, int]:
        """Check at-least-once, no stray deliveries, identical duplicates; return the figures."""
        expected, arrivals = self.expected(), self.arrivals()
        lost = expected - set(arrivals)
        stray = set(arrivals) - expected
        bodies: dict[str, set[bytes]] = defaultdict(set)
        for s in self.subscribers:
            for r in s.receiver.at(s.path):
                assert r.headers["X-Event-Type"] == self.accepted.get(r.headers["X-Event-Id"])
                bodies[r.headers["X-Event-Id"]].add(r.body)
        differing = [e for e, b in bodies.items() if len(b) != 1]
        assert not lost, f"{len(lost)} deliveries lost, e.g. {sorted(lost)[:5]}"
        assert not stray, f"{len(stray)} deliveries nobody subscribed to, e.g. {sorted(stray)[:5]}"
        assert not differing, f"events sent with differing bodies: {differing[:5]}"
        return {
            "events_sent": len(self.accepted),
            "deliveries_expected": len(expected),
            "deliveries_delivered": len(expected & set(arrivals)),
            "deliveries_lost": len(lost),
            "duplicates": sum(arrivals.values()) - len(arrivals),
        }
