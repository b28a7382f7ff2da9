"""The process-wide HTTP client for deliveries: verified TLS 1.2+, and SSRF-vetted sockets.

Two checks, so that no path reaches an unvetted address whatever resolved it:
- `GuardedResolver` refuses names that resolve to a blocked address and hands aiohttp the
  vetted ones, so the connection goes to the address that was checked (no second lookup to
  rebind), while the URL's host name stays in Host and TLS SNI.
- `GuardedConnector` vets every address right before connecting (only IP addresses, never a
  name the operating system would resolve: aiohttp takes any host with a ``:`` for an IP
  literal and skips the resolver) and the connected peer before the request is written.
Blocked addresses are logged here with the address; what tenants see names the host only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest

from dispatcher import __version__
from dispatcher.netguard import BlockedAddress, vet_address, vet_host

log = logging.getLogger(__name__)

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

        try:
            vetted = await vet_host(host, port, lookup, self._allow_private)
        except BlockedAddress as exc:
            _log_blocked(exc, "resolved")
            raise
        return [by_address[a] for a in vetted if a in by_address]

    async def close(self) -> None:
        await self._inner.close()


def _log_blocked(exc: BlockedAddress, stage: str) -> None:
    log.warning(
        "connection refused by the SSRF guard",
        extra={"host": exc.host, "address": exc.address, "stage": stage},
    )


if not hasattr(aiohttp.TCPConnector, "_wrap_create_connection"):  # pragma: no cover
    raise ImportError("aiohttp changed: GuardedConnector's socket check has no hook")


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector that connects only to vetted IP addresses and checks the peer.

    Overrides aiohttp's one funnel for new sockets; the import-time check above fails loudly
    if a new aiohttp version renames it, rather than silently losing the check.
    """

    def __init__(self, *, allow_private: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._allow_private = allow_private

    async def _wrap_create_connection(
        self, *args: Any, addr_infos: list[AddrInfoType], req: ClientRequest, **kwargs: Any
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        host = req.url.raw_host or ""
        self._vet_addresses(host, addr_infos)
        transport, protocol = await super()._wrap_create_connection(
            *args, addr_infos=addr_infos, req=req, **kwargs
        )
        self._vet_peer(host, transport)
        return transport, protocol

    def _vet_addresses(self, host: str, addr_infos: list[AddrInfoType]) -> None:
        """Only IP addresses go to the socket: a name would be resolved by the OS, unvetted."""
        try:
            for info in addr_infos:
                vet_address(host, str(info[4][0]), self._allow_private)
        except BlockedAddress as exc:
            _log_blocked(exc, "before connecting")
            raise

    def _vet_peer(self, host: str, transport: asyncio.Transport) -> None:
        """The address actually connected to, before a byte of the request is written."""
        peer = transport.get_extra_info("peername")
        try:
            if not peer:
                raise BlockedAddress(host, None)
            vet_address(host, str(peer[0]), self._allow_private)
        except BlockedAddress as exc:
            transport.abort()
            _log_blocked(exc, "connected peer")
            raise


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
    connector = GuardedConnector(
        allow_private=allow_private,
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
