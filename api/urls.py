"""Which webhook URLs a tenant may register, and how a stored URL is shown back.

Pure: the route passes the environment and the two settings in, so every rule is a
table-driven unit test. Problems come back as a list, so one 422 names them all.

Decisions:
- Absolute ``http``/``https`` with a host; at most 2048 characters; no whitespace or
  control characters; no backslash (parsers disagree on it, a classic SSRF trick).
- A fragment is refused: it is never sent to the server, so it can only be a mistake.
- ``user:password@`` is allowed and stored as given (delivery sends it as Basic auth);
  ``redact_url`` masks both parts, since a lone user is often a token too.
- Only literal hosts are judged here (``netguard.literal_host_blocked``); names are judged
  by what they resolve to, at delivery time.
"""

from __future__ import annotations

import re
import unicodedata

from yarl import URL

from dispatcher.errors import FieldError
from dispatcher.models import Environment
from dispatcher.netguard import literal_host_blocked

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = ("http", "https")
REDACTED = "***"

# After IDNA encoding (yarl's raw_host): LDH labels, underscores tolerated, optional final dot.
_HOSTNAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$")


def _has_space_or_control(text: str) -> bool:
    return any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)


def _credentials(url: str) -> list[str]:
    authority = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    return [part for part in authority.rpartition("@")[0].split(":") if part]


def _parse(url: str, field: str) -> tuple[URL | None, list[FieldError]]:
    try:
        parsed = URL(url)
        parsed.explicit_port  # noqa: B018 - yarl validates the port lazily; force it here
    except (ValueError, TypeError) as exc:
        detail = str(exc)
        if any(part in detail for part in _credentials(url)):
            detail = "cannot be parsed"
        return None, [FieldError(field, f"is not a valid URL: {detail}")]
    return parsed, []


def _valid_hostname(host: str) -> bool:
    name = host.removesuffix(".")
    return (
        len(name) <= 253
        and _HOSTNAME.match(host) is not None
        and all(len(label) <= 63 for label in name.split("."))
    )


def _shape_problems(parsed: URL, field: str) -> list[FieldError]:
    scheme = parsed.scheme.lower()
    if not scheme:
        return [FieldError(field, "must be an absolute http or https URL")]
    if scheme not in ALLOWED_SCHEMES:
        return [FieldError(field, f"scheme '{scheme}' is not allowed; use http or https")]
    if not parsed.raw_host:
        return [FieldError(field, "must include a host")]
    problems = []
    host = parsed.raw_host
    if ":" not in host and not _valid_hostname(host):
        problems.append(FieldError(field, "host is not a valid hostname or IP address"))
    if parsed.explicit_port == 0:
        problems.append(FieldError(field, "port 0 is not allowed"))
    if parsed.raw_fragment:
        problems.append(FieldError(field, "must not contain a fragment (#...); it is never sent"))
    if REDACTED in (parsed.user, parsed.password):
        problems.append(
            FieldError(
                field,
                "contains redacted credentials ('***'); send the real user and password, "
                "or omit url to keep the stored one",
            )
        )
    return problems


def url_problems(
    url: str,
    *,
    environment: Environment,
    require_https: bool,
    allow_private_targets: bool,
    field: str = "url",
) -> list[FieldError]:
    """Every reason this URL cannot be registered; empty when it can.

    Messages name the host at most, never the URL: it may carry credentials.
    """
    if not url:
        return [FieldError(field, "must not be empty")]
    problems = []
    if len(url) > MAX_URL_LENGTH:
        problems.append(FieldError(field, f"must be at most {MAX_URL_LENGTH} characters"))
    if _has_space_or_control(url):
        problems.append(FieldError(field, "must not contain whitespace or control characters"))
    if "\\" in url:
        problems.append(FieldError(field, "must not contain a backslash; percent-encode it"))
    if problems:
        return problems
    parsed, problems = _parse(url, field)
    if parsed is None:
        return problems
    problems = _shape_problems(parsed, field)
    if problems:
        return problems
    host = parsed.raw_host or ""
    if require_https and environment == Environment.PRODUCTION and parsed.scheme.lower() != "https":
        problems.append(FieldError(field, "must use https for production endpoints"))
    if not allow_private_targets and literal_host_blocked(host):
        problems.append(
            FieldError(
                field,
                f"host '{host}' is a private, loopback, link-local or reserved address",
            )
        )
    return problems


def redact_url(url: str) -> str:
    """The URL with its userinfo masked (``https://***:***@host/...``), the rest untouched.

    Works on the string rather than a re-serialized parse, so what the tenant sees is what
    they stored, byte for byte, minus the credentials.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    userinfo, at, hostport = rest[:end].rpartition("@")
    if not at:
        return url
    masked = f"{REDACTED}:{REDACTED}" if ":" in userinfo else REDACTED
    return f"{scheme}://{masked}@{hostport}{rest[end:]}"
