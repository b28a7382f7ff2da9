"""A real aiohttp webhook receiver on 127.0.0.1 with scriptable answers, for end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    arrived: float = field(default_factory=time.monotonic)  # when the request came in


@dataclass
class Script:
    """Answers for one path, in order; the last one repeats."""

    statuses: deque[int] = field(default_factory=lambda: deque([200]))
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    fail_first_attempts: bool = False  # 500 to every X-Delivery-Attempt: 1, else the script


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.scripts: dict[str, Script] = defaultdict(Script)
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def script(self, path: str, *statuses: int, delay: float = 0.0, **kw: Any) -> None:
        self.scripts[path] = Script(deque(statuses or (200,)), delay, **kw)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        script = self.scripts[request.path]
        status = script.statuses[0]
        if len(script.statuses) > 1:
            script.statuses.popleft()
        if script.fail_first_attempts and request.headers.get("X-Delivery-Attempt") == "1":
            status = 500
        async with self._arrived:
            self.requests.append(Received(request.path, dict(request.headers), body))
            self._arrived.notify_all()
        if script.delay:
            await asyncio.sleep(script.delay)
        return web.Response(status=status, body=script.body, headers=script.headers)

    async def wait_for(
        self,
        count: int,
        path: str | None = None,
        timeout: float = 10,  # noqa: ASYNC109 - a test helper's own bound
    ) -> None:
        """Poll a condition under a generous timeout; never assert on elapsed time."""

        def enough() -> bool:
            found = self.requests if path is None else self.at(path)
            return len(found) >= count

        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(enough)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
