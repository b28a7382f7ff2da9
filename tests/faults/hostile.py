"""Receivers that misbehave, each on its own 127.0.0.1 port, counting what they were sent.

- flapping: answers 500, then stalls past the attempt timeout, then 200, in turn;
- blackhole: accepts the connection, reads the request, never answers;
- huge: answers 500 with a 50 MB body, streamed;
- truncated: promises a body, sends a few bytes of it and closes the connection;
- binary: answers 200 with bytes that are not text (NUL included).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from itertools import cycle

from aiohttp import web

KINDS = ("flapping", "blackhole", "huge", "truncated", "binary")
HUGE_BYTES = 50 * 1024 * 1024
_CHUNK = b"x" * 65536


class Hostile:
    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self.hits: Counter[str] = Counter()
        self.succeeded: dict[str, set[str]] = defaultdict(set)  # kind -> event ids answered 2xx
        self.huge_bytes_sent = 0
        self._flap = cycle(("500", "stall", "200"))
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.Server] = []
        self._held: set[asyncio.StreamWriter] = set()
        self.ports: dict[str, int] = {}

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.ports[kind]}/{kind}"

    async def start(self) -> None:
        for kind, handler in (
            ("flapping", self._flapping),
            ("huge", self._huge),
            ("binary", self._binary),
        ):
            app = web.Application()
            app.router.add_post(f"/{kind}", handler)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            self.ports[kind] = runner.addresses[0][1]
        for kind, raw in (("blackhole", self._blackhole), ("truncated", self._truncated)):
            server = await asyncio.start_server(raw, "127.0.0.1", 0)
            self._servers.append(server)
            self.ports[kind] = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for writer in list(self._held):
            writer.close()
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        for runner in self._runners:
            await runner.cleanup()

    # ---- aiohttp receivers -------------------------------------------------------------

    async def _flapping(self, request: web.Request) -> web.Response:
        await request.read()
        self.hits["flapping"] += 1
        answer = next(self._flap)
        if answer == "stall":
            await asyncio.sleep(self.stall_seconds)  # the attempt times out meanwhile
        if answer == "500":
            return web.Response(status=500, text="flap")
        self.succeeded["flapping"].add(request.headers["X-Event-Id"])
        return web.Response(text="ok")

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.hits["huge"] += 1
        response = web.StreamResponse(status=500)
        await response.prepare(request)
        with contextlib.suppress(ConnectionError, RuntimeError):
            for _ in range(HUGE_BYTES // len(_CHUNK)):
                await response.write(_CHUNK)
                self.huge_bytes_sent += len(_CHUNK)
        return response

    async def _binary(self, request: web.Request) -> web.Response:
        await request.read()
        self.hits["binary"] += 1
        self.succeeded["binary"].add(request.headers["X-Event-Id"])
        return web.Response(body=bytes(range(256)) * 8, content_type="application/octet-stream")

    # ---- raw TCP receivers -------------------------------------------------------------

    async def _read_request(self, reader: asyncio.StreamReader) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return False
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        try:
            await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        return True

    async def _blackhole(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._held.add(writer)
        try:
            while await self._read_request(reader):
                self.hits["blackhole"] += 1
                with contextlib.suppress(ConnectionError):
                    await reader.read()  # until the client gives up and closes
        finally:
            self._held.discard(writer)
            writer.close()

    async def _truncated(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await self._read_request(reader):
                self.hits["truncated"] += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"partial")
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
        finally:
            writer.close()
