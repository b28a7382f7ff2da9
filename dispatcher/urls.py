"""The one reader of webhook URLs: registration, PATCH and delivery all parse with `parse_url`.

Two parsers that disagree are how SSRF guards get bypassed (aiohttp took ``[x:vm]`` for an
IP literal and let the operating system resolve it), so nothing else splits a webhook URL.
Written by hand rather than on yarl, whose leniency is the parser-disagreement risk itself.

Decisions:
- Absolute ``http``/``https``; at most 2048 characters; no whitespace, control or format
  characters; no backslash (parsers disagree on it); no fragment (never sent).
- The host is either a DNS name, lower-case LDH labels (underscores tolerated, an optional
  final dot kept), IDNA-normalised per UTS #46 (``bücher.de`` -> ``xn--bcher-kva.de``,
  fullwidth letters -> ASCII), or a canonical IP literal: dotted-quad decimal IPv4, or a
  bracketed IPv6 address without zone id (stored in its RFC 5952 form). A bracket holding
  anything else, a ``%`` in a host, and a name whose last label is a number but which is no
  dotted quad (the inet_aton forms ``127.1``, ``0x7f.1``, ``2130706433``, which browsers
  and resolvers read as IPv4) are refused.
- Userinfo, path and query are percent-encoded where RFC 3986 does not allow a character
  as is (non-ASCII as UTF-8), so what is stored is exactly what is sent.
- Messages never echo the URL, its user info or its port: any part may hold a credential.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

import idna

from dispatcher.netguard import IPAddress, parse_ip_literal

MAX_URL_LENGTH: Final = 2048
ALLOWED_SCHEMES: Final = ("http", "https")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_LABEL = re.compile(r"^[a-z0-9_-]{1,63}$")
_NUMBER = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 3986: unreserved and sub-delims everywhere; ":" in userinfo; ":@/?" in path and query.
_SAFE_USERINFO: Final = "-._~!$&'()*+,;=:%"
_SAFE_TARGET: Final = "-._~!$&'()*+,;=:@/?%"


class InvalidUrl(ValueError):
    """Every reason a URL cannot be a webhook target, as messages fit for the tenant."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class WebhookUrl:
    """A parsed, normalised webhook URL; `text` is how it is stored and sent."""

    scheme: str
    userinfo: str | None  # percent-encoded, as stored
    host: str  # A-labels, dotted-quad IPv4 or bracketed IPv6
    ip: IPAddress | None  # the address, when the host is an IP literal
    port: int | None  # as written; None for the scheme's default
    target: str  # path and query, percent-encoded, at least "/"

    @property
    def authority(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def text(self) -> str:
        credentials = f"{self.userinfo}@" if self.userinfo is not None else ""
        return f"{self.scheme}://{credentials}{self.authority}{self.target}"

    @property
    def without_credentials(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"

    @property
    def credentials(self) -> tuple[str, str | None] | None:
        """The decoded user and password (None when absent), for HTTP Basic auth."""
        if self.userinfo is None:
            return None
        user, colon, password = self.userinfo.partition(":")
        return unquote(user), unquote(password) if colon else None


def _has_space_or_control(text: str) -> bool:
    return any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)


def _encode(text: str, safe: str) -> str:
    """Percent-encode what RFC 3986 does not allow here; a stray ``%`` becomes ``%25``."""
    return quote(_PERCENT.sub("%25", text), safe=safe)


def _ipv6(inside: str) -> IPAddress | None:
    if "%" in inside or ":" not in inside:  # a zone id, or an IPv4 in brackets
        return None
    try:
        return ipaddress.IPv6Address(inside)
    except ValueError:
        return None


def _dns_name(host: str) -> str | None:
    """The host as lower-case A-labels (UTS #46 mapping, non-transitional), or None."""
    try:
        if not host.isascii():
            host = idna.uts46_remap(host, std3_rules=False, transitional=False)
        labels = host.lower().split(".")
        if labels[-1] == "" and len(labels) > 1:
            labels = labels[:-1]
            final_dot = "."
        else:
            final_dot = ""
        encoded = [
            label if label.isascii() else idna.alabel(label).decode("ascii") for label in labels
        ]
        for label in encoded:
            if label.startswith("xn--"):
                idna.ulabel(label)  # a fake A-label is no name
    except (idna.IDNAError, UnicodeError):
        return None
    name = ".".join(encoded)
    if len(name) > 253 or not all(_LABEL.match(label) for label in encoded):
        return None
    return name + final_dot


_BAD_HOST = "host is not a valid hostname or IP address"


def _host(raw: str) -> tuple[str, IPAddress | None]:
    """The normalised host and its address if it is a literal; InvalidUrl if it is neither."""
    if raw.startswith("["):
        ip = _ipv6(raw[1:-1]) if raw.endswith("]") else None
        if ip is None:
            raise InvalidUrl([f"{_BAD_HOST} (brackets hold an IPv6 address, without zone id)"])
        return f"[{ip.compressed}]", ip
    name = _dns_name(raw) if not any(c in raw for c in "%[]") else None
    if name is None:
        raise InvalidUrl([_BAD_HOST])
    address = name.removesuffix(".")
    if _NUMBER.match(address.rpartition(".")[2]):  # browsers read such a name as IPv4
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            shorthand = parse_ip_literal(address) is not None  # 127.1, 0x7f.1, 2130706433
            raise InvalidUrl(
                ["an IPv4 address must be written as four decimal numbers (a.b.c.d)"]
                if shorthand
                else [_BAD_HOST]
            ) from None
        return str(ip), ip
    return name, None


def _split_host_port(hostport: str) -> tuple[str, str | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end == -1:
            return hostport, None
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        return (host, rest[1:]) if rest.startswith(":") else (host + rest, None)
    host, colon, port = hostport.rpartition(":")
    return (host, port) if colon else (hostport, None)


def _port(text: str | None) -> tuple[int | None, str | None]:
    """The port and a problem, if any; an empty port (``host:``) means the default."""
    if not text:
        return None, None
    if not text.isascii() or not text.isdigit():
        return None, "is not a valid URL: the port must be a number"
    port = int(text)
    if port == 0:
        return None, "port 0 is not allowed"
    if port > 65535:
        return None, "is not a valid URL: the port must be between 1 and 65535"
    return port, None


def _target(raw: str) -> str:
    """Path and query as sent: at least "/", an empty query dropped (clients drop it too)."""
    target = _encode(raw if raw.startswith("/") else "/" + raw, _SAFE_TARGET)
    return target.removesuffix("?") if target.count("?") == 1 else target


def _text_problems(url: str) -> list[str]:
    problems = []
    if len(url) > MAX_URL_LENGTH:
        problems.append(f"must be at most {MAX_URL_LENGTH} characters")
    if _has_space_or_control(url):
        problems.append("must not contain whitespace or control characters")
    if "\\" in url:
        problems.append("must not contain a backslash; percent-encode it")
    return problems


def _split(url: str) -> tuple[str, str, str]:
    """The scheme, the authority and the rest (path, query, fragment) of an http(s) URL."""
    match = _SCHEME.match(url)
    if match is None:
        raise InvalidUrl(["must be an absolute http or https URL"])
    scheme = match.group(1).lower()
    if scheme not in ALLOWED_SCHEMES:
        raise InvalidUrl([f"scheme '{scheme[:20]}' is not allowed; use http or https"])
    rest = url[match.end() :]
    if not rest.startswith("//"):
        raise InvalidUrl(["must be an absolute http or https URL"])
    rest = rest[2:]
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    return scheme, rest[:end], rest[end:]


def parse_url(url: str) -> WebhookUrl:
    """The URL, normalised; raises InvalidUrl listing what is wrong with it."""
    if not url:
        raise InvalidUrl(["must not be empty"])
    problems = _text_problems(url)
    if problems:
        raise InvalidUrl(problems)
    scheme, authority, target = _split(url)
    userinfo, at, hostport = authority.rpartition("@")
    raw_host, raw_port = _split_host_port(hostport)
    if not raw_host:
        raise InvalidUrl(["must include a host"])
    found: tuple[str, IPAddress | None] | None = None
    try:
        found = _host(raw_host)
    except InvalidUrl as exc:
        problems += exc.problems
    port, port_problem = _port(raw_port)
    if port_problem is not None:
        problems.append(port_problem)
    if "#" in target:
        problems.append("must not contain a fragment (#...); it is never sent")
    if problems or found is None:
        raise InvalidUrl(problems)
    host, ip = found
    parsed = WebhookUrl(
        scheme=scheme,
        userinfo=_encode(userinfo, _SAFE_USERINFO) if at else None,
        host=host,
        ip=ip,
        port=port,
        target=_target(target),
    )
    if len(parsed.text) > MAX_URL_LENGTH:
        raise InvalidUrl([f"must be at most {MAX_URL_LENGTH} characters once percent-encoded"])
    return parsed
