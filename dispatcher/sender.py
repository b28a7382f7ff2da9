"""The process-wide HTTP client for deliveries: verified TLS 1.2+, and SSRF-vetted DNS.

The connector resolves through `GuardedResolver`, which refuses blocked addresses and hands
aiohttp the vetted ones, so the connection goes to exactly the address that was checked
(no second lookup to rebind), while the URL's host name stays in Host and TLS SNI.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from dispatcher import __version__
from dispatcher.netguard import vet_host

USER_AGENT = f"bjet24-dispatcher/{__version__}"


class GuardedResolver(AbstractResolver):
    def __init__(self, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or aiohttp.ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        by_address = {r["host"]: r for r in results}

        async def lookup(_host: str, _port: int) -> list[str]:
            return list(by_address)

        vetted = await vet_host(host, port, lookup, self._allow_private)
        return [by_address[a] for a in vetted if a in by_address]

    async def close(self) -> None:
        await self._inner.close()


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@contextlib.asynccontextmanager
async def delivery_session(
    *,
    allow_private: bool,
    max_connections: int,
    resolver: AbstractResolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[aiohttp.ClientSession]:
    """One session per process: pooled keep-alive connections to every receiver."""
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        ssl=ssl_context or tls_context(),
        resolver=GuardedResolver(allow_private, resolver),
        ttl_dns_cache=10,
        enable_cleanup_closed=False,
    )
    headers: dict[str, Any] = {"User-Agent": USER_AGENT}
    async with aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        auto_decompress=False,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        yield session
