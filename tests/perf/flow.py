"""Benchmark scenarios of flow control per endpoint (`python -m tests.perf --only flow`).

Each one is short: a rate-limited endpoint under 3 workers, an ordered endpoint whose receiver
fails every first attempt (against the same unordered), one endpoint against three, and a
slow neighbour beside a healthy endpoint. Product defaults throughout, except where a
scenario says why.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from tests.perf.__main__ import Bench

# tenants and their endpoints (receiver paths), created at set-up with the others
TENANTS: dict[str, list[str]] = {
    "rate": ["r1"],
    "ordered": ["fail1o"],
    "unordered": ["fail1u"],
    "one": ["o1"],
    "slowpair": ["h2", "slow"],
}
RATE = 50
STATUSES = ["created", "paid", "queued", "printed", "handed_over"]
# the ordering runs retry after ~0.05 s instead of 30 s, and without a circuit breaker (a
# thousand first attempts failing at once would open it): they measure ordering, not backoff
FAST_RETRIES = {"retry_base_seconds": 0.05, "breaker_threshold": 1_000_000}


def busiest_second(times: list[float]) -> int:
    ordered = sorted(times)
    worst, j = 0, 0
    for i, start in enumerate(ordered):
        while j < len(ordered) and ordered[j] < start + 1.0:
            j += 1
        worst = max(worst, j - i)
    return worst


async def rate_limited(bench: Bench, events: int) -> dict[str, float]:
    """`events` to an endpoint with rate_limit_per_second 50, three workers."""
    await bench.reset()
    async with bench.pool.acquire() as conn:
        await conn.execute(
            "UPDATE endpoints SET rate_limit_per_second = $1 WHERE url = $2", RATE, bench.recv("r1")
        )
    await bench.start_workers(3)
    await bench.ingest(bench.tenants["rate"], events)
    await bench.wait_received(events, limit=events / RATE * 2 + 60)
    got = [t for name, _, t in await bench.arrivals() if name == "r1"]
    await bench.stop_all_workers()
    return {
        "busiest_second": float(busiest_second(got)),
        "delivered": float(len(got)),
        "per_s": len(got) / (max(got) - min(got)),
    }


async def _transitions(bench: Bench, tenant: str, mailings: int) -> dict[str, tuple[str, int]]:
    """Every mailing through the five statuses, one status per batch: event -> (mailing, n)."""
    bench.seq += 1
    run = bench.seq
    events: dict[str, tuple[str, int]] = {}
    for n, status in enumerate(STATUSES):
        for start in range(0, mailings, 1000):
            items = [
                {
                    "mailing_id": f"mo_{run}_{i}",
                    "tenant_id": tenant,
                    "environment": "sandbox",
                    "status": status,
                }
                for i in range(start, min(mailings, start + 1000))
            ]
            async with bench.http.post(
                f"http://127.0.0.1:{bench.api_port}/internal/v1/transitions",
                data=orjson.dumps({"transitions": items}),
                headers=bench.platform_headers(),
            ) as r:
                body = await r.json(loads=orjson.loads)
                if r.status != 200:
                    raise RuntimeError(f"batch ingest failed: {r.status} {body}")
            for item, result in zip(items, body["results"], strict=True):
                events[result["event_id"]] = (item["mailing_id"], n)
    return events


async def ordering(bench: Bench, tenant: str, path: str, mailings: int) -> dict[str, float]:
    """Deliveries per second until the last one, and how many mailings arrived out of order."""
    await bench.reset()
    async with bench.pool.acquire() as conn:
        wanted = "mailing" if tenant == "ordered" else "none"
        await conn.execute(
            "UPDATE endpoints SET ordering = $1 WHERE url = $2", wanted, bench.recv(path)
        )
    await bench.start_workers(**FAST_RETRIES)
    start = time.time()
    events = await _transitions(bench, bench.tenants[tenant], mailings)
    await bench.wait_received(len(events), limit=600)
    got = [(e, t) for name, e, t in await bench.arrivals() if name == path]
    await bench.stop_all_workers()
    seen: dict[str, list[int]] = defaultdict(list)
    for event_id, _ in sorted(got, key=lambda x: x[1]):
        mailing, n = events[event_id]
        seen[mailing].append(n)
    out_of_order = sum(1 for ns in seen.values() if ns != sorted(ns))
    last = max(t for _, t in got)
    return {"per_s": len(events) / (last - start), "out_of_order": float(out_of_order)}


async def one_vs_three(bench: Bench, one: bool) -> float:
    """Dispatch-only: 3 x `events` deliveries to one endpoint, or to three (product defaults)."""
    await bench.reset()
    if one:
        await bench.ingest(bench.tenants["one"], 3 * bench.events)
    else:
        await bench.ingest(bench.tenants["sustained"], bench.events)
    await bench.start_workers()
    await bench.wait_received(3 * bench.events)
    times = [t for _, _, t in await bench.arrivals()]
    await bench.stop_all_workers()
    return 3 * bench.events / (max(times) - min(times))


def summary_line(values: list[dict[str, float]], key: str) -> list[float]:
    return [v[key] for v in values]


async def section(bench: Bench, args: Any, put: Any) -> None:
    """The flow section, when asked for (`--only flow`, or every section by default)."""
    if not args.only or "flow" in args.only:
        await measure(bench, args.runs, args.rate_events, put)


async def measure(bench: Bench, runs: int, rate_events: int, put: Any) -> None:
    """Puts one figure per line of the issue's target table covered here."""

    async def repeat(fn: Any) -> list[Any]:
        return [await fn() for _ in range(runs)]

    r = await repeat(lambda: rate_limited(bench, rate_events))
    put(
        f"rate limit {RATE}/s, 3 workers: busiest second",
        summary_line(r, "busiest_second"),
        "requests",
        f"<= {RATE}",
    )
    put(
        f"rate limit {RATE}/s, 3 workers: delivered of {rate_events}",
        summary_line(r, "delivered"),
        "",
        f"{rate_events}",
    )
    mailings = 1000
    o = await repeat(lambda: ordering(bench, "ordered", "fail1o", mailings))
    u = await repeat(lambda: ordering(bench, "unordered", "fail1u", mailings))
    put(
        f"ordered, {mailings} mailings x 5, first attempts fail: mailings out of order",
        summary_line(o, "out_of_order"),
        "",
        "0",
    )
    unordered = sorted(summary_line(u, "per_s"))[len(u) // 2]
    put("unordered, same load", summary_line(u, "per_s"), "deliveries/s")
    put(
        "ordered, same load",
        summary_line(o, "per_s"),
        "deliveries/s",
        ">= 0.5 x unordered",
        unordered,
    )
    single = await repeat(lambda: one_vs_three(bench, one=True))
    three = await repeat(lambda: one_vs_three(bench, one=False))
    many = sorted(three)[len(three) // 2]
    put("dispatch-only to 3 endpoints (defaults)", three, "deliveries/s")
    put("dispatch-only to ONE endpoint (defaults)", single, "deliveries/s", ">= 0.9 x 3", many)
    alone = await repeat(lambda: bench.latency(1000, bench.tenants["latency"]))
    beside = await repeat(lambda: bench.latency(1000, bench.tenants["slowpair"]))
    alone_p99 = sorted(x["p99_ms"] for x in alone)[len(alone) // 2]
    put("healthy p99 @ 1000/s alone", [x["p99_ms"] for x in alone], "ms")
    put(
        "healthy p99 @ 1000/s beside a 1 s endpoint",
        [x["p99_ms"] for x in beside],
        "ms",
        f"<= 1.5 x {alone_p99:.1f}",
    )
