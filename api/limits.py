"""In-process limits of the API: concurrent test sends per tenant, failed logins per client,
and the time a request body may take to arrive.

Both are per API process (each replica counts its own): they keep one client from starving
the others of this process, not a global quota; a proxy in front sets global rate limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import OrderedDict, deque
from collections.abc import Iterator
from datetime import datetime, timedelta

from aiohttp import web
from aiohttp.typedefs import Handler

from api.context import settings
from api.responses import error_response
from dispatcher.errors import TooManyRequests


class ConcurrencyCap:
    """At most `limit` things at once per key; the one beyond it is a 429 at once."""

    def __init__(self, limit: int, retry_after: int) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self._running: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, key: str, what: str) -> Iterator[None]:
        running = self._running.get(key, 0)
        if running >= self.limit:
            raise TooManyRequests(
                f"at most {self.limit} {what} at once; retry when one has finished",
                self.retry_after,
            )
        self._running[key] = running + 1
        try:
            yield
        finally:
            left = self._running[key] - 1
            if left:
                self._running[key] = left
            else:
                del self._running[key]

    def running(self, key: str) -> int:
        return self._running.get(key, 0)


class FailureThrottle:
    """At most `limit` failures per key within `window`; beyond it, refuse until one ages out.

    A sliding window of failure times per key; the least recently failing keys are forgotten
    beyond `max_keys`, so a flood of spoofed addresses cannot grow memory without bound.
    """

    def __init__(self, limit: int, window: timedelta, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[datetime]] = OrderedDict()

    def _recent(self, key: str, now: datetime) -> deque[datetime] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def check(self, key: str, now: datetime) -> None:
        """Raise TooManyRequests while `key` is over its failures."""
        times = self._recent(key, now)
        if times is not None and len(times) >= self.limit:
            wait = (times[0] + self.window - now).total_seconds()
            raise TooManyRequests(
                "too many failed authentication attempts from this address; retry later",
                math.ceil(wait),
            )

    def failed(self, key: str, now: datetime) -> int:
        """Record one failure; the number within the window, this one included."""
        times = self._recent(key, now)
        if times is None:
            times = self._failures[key] = deque()
        self._failures.move_to_end(key)
        times.append(now)
        if len(times) > self.limit:
            times.popleft()
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        return len(times)


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read the whole body within ``API_BODY_TIMEOUT_SECONDS``, or answer 408 and hang up.

    A client trickling its body would otherwise hold a connection (and its handler) for
    ever; read here, the body is cached for the handler.
    """
    if request.body_exists:
        seconds = settings(request).api_body_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                await request.read()
        except TimeoutError:
            response = error_response(
                408, "request_timeout", f"the request body did not arrive within {seconds:g} s"
            )
            response.force_close()
            return response
    return await handler(request)
