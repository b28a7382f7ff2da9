"""SSRF rules: which addresses a tenant's webhook may reach.

Pure: DNS resolution is injected, so the same rules serve URL validation at registration
(literal hosts only) and the connector at delivery time (every resolved address).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Spelled out rather than trusting ``is_global`` alone: it varies across Python versions
# and calls multicast (224/4, ff00::/8), site-local fec0::/10 and 3fff::/20 "global".
_BLOCKED_V4: Final = tuple(
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", incl. the unspecified 0.0.0.0
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, incl. cloud metadata 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. broadcast 255.255.255.255
    )
)
_BLOCKED_V6: Final = tuple(
    IPv6Network(n)
    for n in (
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translates to anything
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, incl. all of Teredo 2001::/32
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 segment ids
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_GLOBAL_UNICAST_V6: Final = IPv6Network("2000::/3")
_NAT64: Final = IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE: Final = IPv6Network("::/96")  # also holds :: and ::1, see below
_LOW32: Final = 0xFFFFFFFF


class BlockedAddress(Exception):
    """A target resolved to an address tenants may not reach.

    Carries the host and the offending address, never the URL: URLs may hold credentials.
    The message names the host only: tenants read it, and the address a name resolved to
    is an oracle for internal names. Server logs use ``address``.
    """

    def __init__(self, host: str, address: str | None = None) -> None:
        self.host = host
        self.address = address
        super().__init__(f"blocked address for host {host!r}")


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address a v6 form reaches, where the network would translate or tunnel it.

    IPv4-compatible ``::a.b.c.d`` also covers ``::`` and ``::1``; they embed 0.0.0.0 and
    0.0.0.1, both in 0.0.0.0/8, so they stay blocked.
    """
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        return IPv4Address(int(ip) & _LOW32)
    return None


def is_blocked_ip(ip: IPAddress) -> bool:
    """True for anything but public unicast; v6 forms carrying a v4 are judged by that v4.

    ``ipaddress``'s ``is_global`` is the base; the explicit ranges above make the answer the
    same on every Python version. Outside 2000::/3, no v6 address is public unicast.
    """
    if isinstance(ip, IPv4Address):
        return not ip.is_global or any(ip in net for net in _BLOCKED_V4)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return is_blocked_ip(embedded)
    if ip not in _GLOBAL_UNICAST_V6 or any(ip in net for net in _BLOCKED_V6):
        return True
    return not ip.is_global


def _ipv4_part(part: str) -> int | None:
    if part[:2] in ("0x", "0X"):
        digits, base, allowed = part[2:], 16, "0123456789abcdefABCDEF"
    elif len(part) > 1 and part[0] == "0":
        digits, base, allowed = part[1:], 8, "01234567"
    else:
        digits, base, allowed = part, 10, "0123456789"
    if not part or any(c not in allowed for c in digits):
        return None
    return int(digits, base) if digits else 0


def _ipv4_shorthand(host: str) -> IPv4Address | None:
    """inet_aton forms (``127.1``, ``0x7f.1``, ``2130706433``, ``0177.0.0.1``).

    Parsed here rather than by ``socket.inet_aton``, whose leniency (trailing text) is
    libc-dependent; the last part fills all the remaining bytes, as in inet_aton.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = [_ipv4_part(p) for p in parts]
    numbers = [v for v in values if v is not None]
    if len(numbers) != len(values):
        return None
    *head, last = numbers
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, v in enumerate(head):
        value |= v << (24 - 8 * i)
    return IPv4Address(value)


def _normalize_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host.rstrip(".")  # "localhost." and "127.0.0.1." name the same thing


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a URL host denotes by itself (any form a resolver would accept), if any."""
    host = _normalize_host(host)
    if not host:
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return _ipv4_shorthand(host)


def is_localhost_name(host: str) -> bool:
    """``localhost`` and ``*.localhost`` are loopback by definition (RFC 6761)."""
    host = _normalize_host(host)
    return host == "localhost" or host.endswith(".localhost")


def literal_host_blocked(host: str) -> bool:
    """Registration-time check of a URL host; names other than localhost pass here.

    Only ``localhost``/``*.localhost`` are refused by name: any name may point anywhere
    (``*.local`` mDNS, public names resolving to 10/8...), so names are judged by what they
    resolve to, at delivery time (``vet_host``). An empty host is refused.
    """
    if not _normalize_host(host) or is_localhost_name(host):
        return True
    ip = parse_ip_literal(host)
    return ip is not None and is_blocked_ip(ip)


async def vet_host(host: str, port: int, resolve: Resolver, allow_private: bool) -> list[str]:
    """Resolve once and return the addresses the connector must use (no second lookup).

    Raises BlockedAddress if ANY address is blocked (an attacker controls which one a
    client would pick) unless ``allow_private``. Answers come back in the resolver's own
    spelling (duplicates dropped), so callers can map them to their records; a literal IP
    skips resolution and comes back normalized (``0x7f.1`` -> ``127.0.0.1``). A resolver
    that returns nothing raises OSError, like a failed lookup.
    """
    literal = parse_ip_literal(host)
    if literal is not None:
        if not allow_private and is_blocked_ip(literal):
            raise BlockedAddress(host, str(literal))
        return [str(literal)]
    if not allow_private and is_localhost_name(host):
        raise BlockedAddress(host)
    answers = await resolve(host, port)
    if not answers:
        raise OSError(f"no address found for host {host!r}")
    vetted: dict[IPAddress, str] = {}
    for answer in answers:
        try:
            ip = ipaddress.ip_address(answer)
        except ValueError:
            raise BlockedAddress(host, answer) from None  # fail closed on resolver garbage
        if not allow_private and is_blocked_ip(ip):
            raise BlockedAddress(host, answer)
        vetted.setdefault(ip, answer)
    return list(vetted.values())


def vet_address(host: str, address: str, allow_private: bool) -> IPAddress:
    """The check of an address about to be (or just) connected to, whatever resolved it.

    Anything but an IP address (a name the operating system would resolve) fails closed;
    blocked ranges and zone ids (``%eth0``) fail unless ``allow_private``.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise BlockedAddress(host, address) from None
    if not allow_private and ("%" in address or is_blocked_ip(ip)):
        raise BlockedAddress(host, address)
    return ip
