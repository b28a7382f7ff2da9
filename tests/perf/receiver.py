"""A benchmark receiver process: answers at once and records arrivals. /dead never answers,
/slow answers after 1 s, and a path starting with `fail1` answers 500 to every first attempt
(`X-Delivery-Attempt: 1`) without recording it."""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
import uvloop
from aiohttp import web

arrivals: list[tuple[str, str, float]] = []


async def receive(request: web.Request) -> web.Response:
    await request.read()
    name = request.match_info["name"]
    if name == "dead":
        await asyncio.sleep(3600)
    if name == "slow":
        await asyncio.sleep(1)
    if name.startswith("fail1") and request.headers.get("X-Delivery-Attempt") == "1":
        return web.Response(status=500, text="try again")
    arrivals.append((name, request.headers.get("X-Event-Id", ""), time.time()))
    return web.Response(text="ok")


async def stats(request: web.Request) -> web.Response:
    counts: dict[str, int] = {}
    for name, _, _ in arrivals:
        counts[name] = counts.get(name, 0) + 1
    return web.Response(body=orjson.dumps(counts), content_type="application/json")


async def dump(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(arrivals), content_type="application/json")


async def reset(request: web.Request) -> web.Response:
    arrivals.clear()
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/_stats", stats)
    app.router.add_get("/_dump", dump)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/{name}", receive)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=1024)


if __name__ == "__main__":
    main()
