"""Benchmark scenarios of flow control per endpoint (`python -m tests.perf --only flow`).

A rate-limited endpoint under 3 workers (10,000 events at 50/s: 200 s, run once), an ordered
endpoint whose receiver fails every first attempt (against the same unordered), one endpoint
against three, a slow and a dead neighbour beside a healthy endpoint, and 1,000 endpoints
with a backlog beside a flooded one. `--flow-scenario NAME` (repeatable) runs only those.
Product defaults throughout, except where a scenario says why.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from dispatcher import sealing
from tests.queue_state import insert_events, queue_deliveries

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
SCENARIOS = ("rate", "ordered", "one", "slow", "dead", "fair")
DEAD_AFTER = 30.0  # seconds of load before the dead neighbour is looked at
DEAD_WINDOW = 10.0  # ... and for how long (its healthy neighbour's p99 is over this window)
FAIR_ENDPOINTS = 1000
FAIR_BACKLOG = 10  # deliveries waiting for each endpoint but the flooded one
FAIR_FLOOD = 20_000  # ... and for the flooded one, all older than the others
FAIR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAIR_BODY = orjson.dumps({"data": {"status": "created"}, "event_type": "mailing.created"})
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


async def dead_neighbour(bench: Bench, rate: int) -> dict[str, float]:
    """`rate` transitions/s to a healthy endpoint and one that never answers, for
    DEAD_AFTER + DEAD_WINDOW seconds of real time: what the dead one holds in flight during the
    window (sampled from endpoint_state every 100 ms) and its neighbour's latency over it."""
    held: list[int] = []

    async def watch() -> None:
        await asyncio.sleep(DEAD_AFTER)
        end = time.monotonic() + DEAD_WINDOW
        while time.monotonic() < end:
            n = await bench.pool.fetchval(
                "SELECT s.in_flight FROM endpoint_state s JOIN endpoints e"
                " ON e.id = s.endpoint_id WHERE e.url = $1",
                bench.recv("dead"),
            )
            held.append(int(n))
            await asyncio.sleep(0.1)

    lat = await bench.latency(
        rate,
        bench.tenants["isolation"],
        seconds=DEAD_AFTER + DEAD_WINDOW,
        measured_from=DEAD_AFTER,
        alongside=watch,
    )
    return {**lat, "dead_held_max": float(max(held)), "samples": float(len(held))}


def fair_wait(
    arrivals: list[tuple[str, float]], backlogs: dict[str, int], start: float | None = None
) -> dict[str, float]:
    """Every delivery's wait against its fair share (docs/flow-control.md#fair-share).

    `arrivals` are (endpoint, time) at the receiver; `backlogs` what each endpoint had
    waiting. Fair share is processor sharing at the run's measured rate R: every endpoint with
    work left gets an equal part of R, so an endpoint's j-th delivery is due by
    sum_m min(b_m, j) / R (the first by N / R: one round over the N endpoints; an endpoint's
    last by when every smaller backlog is done and its own share of the rest). Waits count
    from `start` (the first arrival unless given); R is the deliveries per second until the
    endpoints with the smallest backlog were all done. The figure is the worst ratio of a wait
    to its fair share.
    """
    start = min(t for _, t in arrivals) if start is None else start
    times: dict[str, list[float]] = defaultdict(list)
    for name, t in arrivals:
        times[name].append(t - start)
    smallest = min(backlogs.values())
    done_small = max(max(times[n]) for n, b in backlogs.items() if b == smallest)
    rate = sum(1 for _, t in arrivals if t - start <= done_small) / done_small
    sizes = sorted(backlogs.values())
    worst, worst_first = 0.0, 0.0
    for seen in times.values():
        for j, waited in enumerate(sorted(seen), start=1):
            fair = sum(min(b, j) for b in sizes) / rate
            worst = max(worst, waited / fair)
            if j == 1:
                worst_first = max(worst_first, waited / fair)
    return {
        "worst_ratio": worst,
        "first_ratio": worst_first,
        "rate": rate,
        "small_done_s": done_small,
        "flood_made": float(len(times[max(backlogs, key=lambda n: backlogs[n])])),
    }


async def _fair_endpoints(bench: Bench) -> str:
    """A tenant with FAIR_ENDPOINTS endpoints, receiver paths f1 (the flooded one) to f1000."""
    if "fair" in bench.tenants:
        return bench.tenants["fair"]
    tenant = await bench.tenant("fair", [])
    bench.tenants["fair"] = tenant
    now = datetime.now(UTC)
    keyring = sealing.current()
    async with bench.pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO endpoints (id, tenant_id, environment, url, event_types,
                                      created_at, updated_at)
               SELECT 'ep_fair' || g, $1, 'sandbox', $2 || g, ARRAY['*'], $3, $3
               FROM generate_series(1, $4) g""",
            tenant,
            bench.recv("f"),
            now,
            FAIR_ENDPOINTS,
        )
        await conn.executemany(
            "INSERT INTO endpoint_secrets (endpoint_id, secret, created_at) VALUES ($1, $2, $3)",
            [
                (f"ep_fair{g}", keyring.seal(FAIR_SECRET, f"endpoint_secret:ep_fair{g}"), now)
                for g in range(1, FAIR_ENDPOINTS + 1)
            ],
        )
    return tenant


async def fair_share(bench: Bench) -> dict[str, float]:
    """FAIR_ENDPOINTS endpoints with a backlog, one of them flooded with older deliveries (a
    first-come-first-served engine would send the flood first); one default worker drains
    them until every small backlog is done."""
    await bench.reset()
    tenant = await _fair_endpoints(bench)
    now = datetime.now(UTC)
    flood_at = now - timedelta(seconds=60)
    async with bench.pool.acquire() as conn:
        await insert_events(conn, tenant, "evt_fair", FAIR_FLOOD, flood_at, FAIR_BODY)
        # the flood: every event to endpoint 1, due a minute ago
        await queue_deliveries(
            conn, tenant, "evt_fair", FAIR_FLOOD, ["ep_fair1"], flood_at, flood_at
        )
        # the backlogs: the first FAIR_BACKLOG events to every other endpoint, due now
        others = [f"ep_fair{e}" for e in range(2, FAIR_ENDPOINTS + 1)]
        await queue_deliveries(conn, tenant, "evt_fair", FAIR_BACKLOG, others, flood_at, now)
        await conn.execute("VACUUM ANALYZE delivery_queue")
    backlogs = {f"f{g}": FAIR_BACKLOG for g in range(2, FAIR_ENDPOINTS + 1)}
    backlogs["f1"] = FAIR_FLOOD

    async def small_done() -> bool:
        async with bench.http.get(bench.recv("_stats")) as r:
            counts: dict[str, int] = await r.json(loads=orjson.loads)
        return sum(v for k, v in counts.items() if k != "f1") >= FAIR_BACKLOG * (FAIR_ENDPOINTS - 1)

    await bench.start_workers()
    await bench.until(small_done, 300)
    got = [(name, t) for name, _, t in await bench.arrivals() if name.startswith("f")]
    await bench.stop_all_workers()
    return fair_wait(got, backlogs)


def summary_line(values: list[dict[str, float]], key: str) -> list[float]:
    return [v[key] for v in values]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("flow control (--only flow)")
    group.add_argument(
        "--flow-scenario",
        action="append",
        choices=SCENARIOS,
        help="run only this flow scenario (repeatable): rate, ordered, one (one endpoint vs"
        " three), slow and dead (neighbours of a healthy endpoint), fair (1,000 endpoints with"
        " a backlog, one flooded). Default: all",
    )
    group.add_argument(
        "--rate-events",
        type=int,
        default=10_000,
        help="events to the rate-limited endpoint, run once whatever --runs"
        " (10,000 at 50/s: about 205 s; fewer for a quick look)",
    )
    group.add_argument(
        "--neighbour-rate",
        type=int,
        default=1000,
        help="transitions/s in the slow and dead neighbour runs and their healthy-alone run"
        " (1,000)",
    )
    group.add_argument(
        "--ordered-mailings",
        type=int,
        default=1000,
        help="mailings of 5 events each in the ordering runs (1,000)",
    )


async def section(bench: Bench, args: Any, put: Any) -> None:
    """The flow section, when asked for (`--only flow`, or every section by default)."""
    if not args.only or "flow" in args.only:
        chosen = set(args.flow_scenario or SCENARIOS)
        await measure(bench, args, chosen, put)


async def measure(bench: Bench, args: Any, chosen: set[str], put: Any) -> None:
    """Puts one figure per line of the issue's target table covered here."""
    runs, rate_events, mailings = args.runs, args.rate_events, args.ordered_mailings
    rate = args.neighbour_rate

    async def repeat(fn: Any) -> list[Any]:
        return [await fn() for _ in range(runs)]

    if "rate" in chosen:
        # once: its busiest second is already the worst of some 200 one-second windows
        r = [await rate_limited(bench, rate_events)]
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
    if "ordered" in chosen:
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
    if "one" in chosen:
        single = await repeat(lambda: one_vs_three(bench, one=True))
        three = await repeat(lambda: one_vs_three(bench, one=False))
        many = sorted(three)[len(three) // 2]
        put("dispatch-only to 3 endpoints (defaults)", three, "deliveries/s")
        put("dispatch-only to ONE endpoint (defaults)", single, "deliveries/s", ">= 0.9 x 3", many)
    if chosen & {"slow", "dead"}:
        alone = await repeat(lambda: bench.latency(rate, bench.tenants["latency"]))
        alone_p99 = sorted(x["p99_ms"] for x in alone)[len(alone) // 2]
        put(f"healthy p99 @ {rate}/s alone", [x["p99_ms"] for x in alone], "ms")
    if "slow" in chosen:
        beside = await repeat(lambda: bench.latency(rate, bench.tenants["slowpair"]))
        put(
            f"healthy p99 @ {rate}/s beside a 1 s endpoint",
            [x["p99_ms"] for x in beside],
            "ms",
            f"<= 1.5 x {alone_p99:.1f}",
            alone_p99,
        )
    if "dead" in chosen:
        dead = await repeat(lambda: dead_neighbour(bench, rate))
        window = f"{DEAD_AFTER:.0f}-{DEAD_AFTER + DEAD_WINDOW:.0f} s"
        put(
            f"dead neighbour: its requests in flight, {window} of load",
            summary_line(dead, "dead_held_max"),
            "requests (most seen)",
            "<= 1",
        )
        put(
            f"healthy p99 @ {rate}/s beside a dead endpoint, {window}",
            summary_line(dead, "p99_ms"),
            "ms",
            f"<= 1.5 x {alone_p99:.1f}",
            alone_p99,
        )
    if "fair" in chosen:
        fair = await repeat(lambda: fair_share(bench))
        put(
            f"{FAIR_ENDPOINTS} endpoints with backlog, one flooded: worst wait / fair share",
            summary_line(fair, "worst_ratio"),
            "x",
            "<= 2",
        )
        put(
            "... first delivery's wait / fair share (one round, N / R)",
            summary_line(fair, "first_ratio"),
            "x",
        )
        put("... deliveries/s while the backlogs drained", summary_line(fair, "rate"), "")
        put(
            "... the flooded endpoint's deliveries meanwhile",
            summary_line(fair, "flood_made"),
            "",
            f"fair: {FAIR_BACKLOG}",
        )
