"""SSRF rules: a matrix of literals, encoded hosts, and vet_host with a stub resolver."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping

import pytest

from dispatcher.netguard import (
    BlockedAddress,
    is_blocked_ip,
    literal_host_blocked,
    parse_ip_literal,
    vet_address,
    vet_host,
)

BLOCKED_V4 = [
    "0.0.0.0", "0.1.2.3",  # this network / unspecified
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.1.1",  # RFC 1918
    "100.64.0.1", "100.127.255.254",  # CGNAT
    "127.0.0.1", "127.255.255.254",  # loopback
    "169.254.0.1", "169.254.169.254",  # link-local, cloud metadata
    "192.0.0.1", "192.0.0.9", "192.0.0.170",  # IETF protocol assignments
    "192.0.2.1", "198.51.100.7", "203.0.113.9",  # documentation
    "192.88.99.1",  # 6to4 relay anycast
    "198.18.0.1", "198.19.255.255",  # benchmarking
    "224.0.0.1", "239.255.255.250",  # multicast
    "240.0.0.1", "255.255.255.255",  # reserved, broadcast
]  # fmt: skip

ALLOWED_V4 = [
    "8.8.8.8", "1.1.1.1", "9.9.9.9", "93.184.216.34", "11.0.0.1",
    "100.63.255.255", "100.128.0.0",  # just outside CGNAT
    "172.15.255.255", "172.32.0.0",  # just outside 172.16/12
    "192.167.255.255", "192.169.0.0",  # just outside 192.168/16
    "198.17.255.255", "198.20.0.0",  # just outside 198.18/15
    "169.253.255.255", "223.255.255.254",
]  # fmt: skip

BLOCKED_V6 = [
    "::", "::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0",
    "::ffff:100.64.0.1", "::ffff:224.0.0.1", "::ffff:255.255.255.255", "0:0:0:0:0:ffff:7f00:1",
    "::127.0.0.1", "::10.0.0.1", "::0.0.0.2",  # IPv4-compatible
    "64:ff9b::127.0.0.1", "64:ff9b::a00:1", "64:ff9b::169.254.169.254",  # NAT64
    "64:ff9b:1::808:808",  # local-use NAT64
    "2002:7f00:1::1", "2002:a00:1::", "2002:c0a8:101::1", "2002:a9fe:a9fe::",  # 6to4
    "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001::1",  # Teredo
    "2001:db8::1", "3fff::1",  # documentation
    "2001:10::1", "2001:20::1",  # ORCHID
    "fc00::1", "fd12:3456:789a::1",  # unique local
    "fe80::1", "fe80::1%eth0", "febf:ffff::1",  # link-local
    "fec0::1", "feff::1",  # site-local
    "ff02::1", "ff0e::1", "ff05::1:3",  # multicast
    "100::1", "5f00::1",  # discard-only, SRv6
    "4000::1", "e000::1", "1::1",  # outside global unicast 2000::/3
]  # fmt: skip

ALLOWED_V6 = [
    "2606:4700:4700::1111", "2001:4860:4860::8888", "2620:fe::fe",
    "2a00:1450:4001:80b::200e", "2400:cb00::1", "2c0f:fb50:4003::1",
    "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1",  # forms reaching a public v4
    "::1.1.1.1",  # IPv4-compatible (deprecated) of a public address: judged by that address
]  # fmt: skip


@pytest.mark.parametrize("address", BLOCKED_V4 + BLOCKED_V6)
def test_blocked_addresses(address: str) -> None:
    assert is_blocked_ip(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED_V4 + ALLOWED_V6)
def test_allowed_addresses(address: str) -> None:
    assert not is_blocked_ip(ipaddress.ip_address(address))


# -- literal hosts at registration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0300.0250.0.1", "192.168.0.1"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
        ("10.1", "10.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),
        ("134744072", "8.8.8.8"),
        ("0x8.0x8.0x8.0x8", "8.8.8.8"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("[2606:4700:4700::1111]", "2606:4700:4700::1111"),
        (" [FE80::1] ", "fe80::1"),
    ],
)
def test_parse_ip_literal_forms(host: str, address: str) -> None:
    assert parse_ip_literal(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "host",
    ["example.com", "1.2.3.4.5", "256.1.1.1", "1.256.1.1", "08.1.1.1", "0x.com",
     "1..1", ".1", "0xg", "4294967296", "1.16777216", "[example.com]", "",
     "\u0661\u0662\u0667.\u0660.\u0660.\u0661"],  # Arabic-Indic digits
)  # fmt: skip
def test_not_ip_literals(host: str) -> None:
    assert parse_ip_literal(host) is None


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1", "127.1", "2130706433", "0x7f.1", "0x7f000001", "0177.0.0.1",
        "017700000001", "127.0.0.1.", "10.1", "0", "192.168.0.1", "0300.0250.0.1",
        "169.254.169.254", "0xa9fea9fe", "100.64.0.1",
        "[::1]", "::1", "[::]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[fe80::1%25eth0]",
        "[fd00::1]", "[64:ff9b::a9fe:a9fe]", "[2002:7f00:1::]",
        "localhost", "LOCALHOST", "localhost.", "api.localhost", "a.b.localhost",
        "", "[]", " ",
    ],
)  # fmt: skip
def test_literal_host_blocked(host: str) -> None:
    assert literal_host_blocked(host)


@pytest.mark.parametrize(
    "host",
    [
        "example.com", "hooks.example.com", "8.8.8.8", "134744072", "0x8.0x8.0x8.0x8",
        "[2606:4700:4700::1111]", "2606:4700:4700::1111", "[::ffff:8.8.8.8]",
        "printer.local",  # by design: names are judged by what they resolve to, at delivery
        "localhost.example.com", "mylocalhost", "localhost-api.example.com", "localhostx",
        "1.2.3.4.5", "999.1.1.1",
    ],
)  # fmt: skip
def test_literal_host_allowed(host: str) -> None:
    assert not literal_host_blocked(host)


# -- vet_host --------------------------------------------------------------------------------


class StubResolver:
    def __init__(self, answers: Mapping[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.answers[host])


RESOLVER_ANSWERS = {
    "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"],
    "mixed.example": ["93.184.216.34", "10.0.0.5"],
    "rebind.example": ["8.8.8.8", "::ffff:169.254.169.254"],
    "private.example": ["192.168.1.10"],
    "mapped.example": ["::ffff:8.8.8.8"],
    "localhost": ["127.0.0.1", "::1"],
    "empty.example": [],
    "garbage.example": ["not-an-ip"],
}


@pytest.fixture
def resolver() -> StubResolver:
    return StubResolver(RESOLVER_ANSWERS)


async def test_public_host_returns_vetted_addresses(resolver: StubResolver) -> None:
    got = await vet_host("public.example", 443, resolver, allow_private=False)
    assert got == ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    assert resolver.calls == [("public.example", 443)]


async def test_mapped_public_address_is_allowed(resolver: StubResolver) -> None:
    got = await vet_host("mapped.example", 443, resolver, False)
    assert [ipaddress.ip_address(a) for a in got] == [ipaddress.ip_address("::ffff:8.8.8.8")]


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("mixed.example", "10.0.0.5"),
        ("rebind.example", "::ffff:169.254.169.254"),
        ("private.example", "192.168.1.10"),
    ],
)
async def test_any_blocked_address_blocks_the_host(
    resolver: StubResolver, host: str, address: str
) -> None:
    with pytest.raises(BlockedAddress) as caught:
        await vet_host(host, 443, resolver, allow_private=False)
    assert caught.value.host == host
    assert caught.value.address is not None
    assert ipaddress.ip_address(caught.value.address) == ipaddress.ip_address(address)
    assert host in str(caught.value)


@pytest.mark.parametrize("host", ["mixed.example", "private.example", "rebind.example"])
async def test_allow_private_lets_everything_through(resolver: StubResolver, host: str) -> None:
    got = await vet_host(host, 8080, resolver, allow_private=True)
    assert got == RESOLVER_ANSWERS[host]


async def test_answers_keep_the_resolver_spelling() -> None:
    spelled = ["::ffff:8.8.8.8", "2606:4700:4700:0:0:0:0:1111", "::ffff:808:808"]
    got = await vet_host("x.example", 443, StubResolver({"x.example": spelled}), False)
    assert got == spelled[:2]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("8.8.8.8", ["8.8.8.8"]),
        ("134744072", ["8.8.8.8"]),
        ("[2606:4700:4700::1111]", ["2606:4700:4700::1111"]),
        ("2606:4700:4700::1111", ["2606:4700:4700::1111"]),
    ],
)
async def test_literal_ips_skip_resolution(
    resolver: StubResolver, host: str, expected: list[str]
) -> None:
    assert await vet_host(host, 443, resolver, allow_private=False) == expected
    assert resolver.calls == []


@pytest.mark.parametrize("host", ["127.0.0.1", "0x7f.1", "[::1]", "169.254.169.254", "10.1"])
async def test_blocked_literals(resolver: StubResolver, host: str) -> None:
    with pytest.raises(BlockedAddress):
        await vet_host(host, 443, resolver, allow_private=False)
    assert resolver.calls == []


async def test_allowed_private_literal_is_normalized(resolver: StubResolver) -> None:
    assert await vet_host("0x7f.1", 8080, resolver, allow_private=True) == ["127.0.0.1"]
    assert resolver.calls == []


async def test_localhost_blocked_without_lookup(resolver: StubResolver) -> None:
    for host in ("localhost", "api.localhost"):
        with pytest.raises(BlockedAddress):
            await vet_host(host, 80, resolver, allow_private=False)
    assert resolver.calls == []
    assert await vet_host("localhost", 80, resolver, allow_private=True) == ["127.0.0.1", "::1"]


async def test_no_answer_is_a_lookup_failure(resolver: StubResolver) -> None:
    with pytest.raises(OSError) as caught:
        await vet_host("empty.example", 443, resolver, allow_private=False)
    assert not isinstance(caught.value, BlockedAddress)


async def test_resolver_errors_propagate(resolver: StubResolver) -> None:
    with pytest.raises(socket.gaierror):
        await vet_host("nxdomain.example", 443, resolver, allow_private=False)


@pytest.mark.parametrize("allow_private", [False, True])
async def test_unparsable_answer_fails_closed(resolver: StubResolver, allow_private: bool) -> None:
    with pytest.raises(BlockedAddress):
        await vet_host("garbage.example", 443, resolver, allow_private=allow_private)


def test_blocked_address_carries_host_not_url() -> None:
    """The address is for server logs; the message tenants read names the host only."""
    exc = BlockedAddress("hooks.example", "10.0.0.1")
    assert (exc.host, exc.address) == ("hooks.example", "10.0.0.1")
    assert str(exc) == "blocked address for host 'hooks.example'"


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.0.0.1", "fe80::1%eth0", "::1%25"]
)
def test_vet_address_blocks_private_peers(address: str) -> None:
    with pytest.raises(BlockedAddress):
        vet_address("vm", address, allow_private=False)
    assert vet_address("vm", address, allow_private=True) == ipaddress.ip_address(address)


@pytest.mark.parametrize("address", ["x:vm", "vm", "", "localhost", "127.1", "0x7f.1"])
@pytest.mark.parametrize("allow_private", [False, True])
def test_vet_address_refuses_anything_but_an_ip_address(address: str, allow_private: bool) -> None:
    """A name here would be resolved by the operating system, past every check."""
    with pytest.raises(BlockedAddress):
        vet_address("vm", address, allow_private=allow_private)


def test_vet_address_lets_public_addresses_through() -> None:
    assert str(vet_address("h", "93.184.216.34", allow_private=False)) == "93.184.216.34"
    assert str(vet_address("h", "2606:4700::1111", allow_private=False)) == "2606:4700::1111"
