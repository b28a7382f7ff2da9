"""Which webhook URLs a tenant may register, and how a stored URL is shown back.

Pure: the route passes the environment and the two settings in, so every rule is a
table-driven unit test. Problems come back as a list, so one 422 names them all.

Decisions:
- The URL is read by ``dispatcher.urls.parse_url``, the same parser delivery uses, and
  stored in its normalised form (IDNA host, canonical IP literal, percent-encoded path).
- ``user:password@`` is allowed and sent as Basic auth; ``redact_url`` masks both parts,
  since a lone user is often a token too.
- Only literal hosts are judged here (``netguard.literal_host_blocked``); names are judged
  by what they resolve to, and by the address actually connected to, at delivery time.
"""

from __future__ import annotations

from dispatcher.errors import FieldError
from dispatcher.models import Environment
from dispatcher.netguard import literal_host_blocked
from dispatcher.urls import MAX_URL_LENGTH, InvalidUrl, WebhookUrl, parse_url

__all__ = ["MAX_URL_LENGTH", "REDACTED", "checked_url", "redact_url", "url_problems"]

REDACTED = "***"


def _policy_problems(
    parsed: WebhookUrl, *, environment: Environment, require_https: bool, allow_private: bool
) -> list[str]:
    problems = []
    credentials = parsed.credentials
    if credentials is not None and REDACTED in credentials:
        problems.append(
            "contains redacted credentials ('***'); send the real user and password, "
            "or omit url to keep the stored one"
        )
    if require_https and environment == Environment.PRODUCTION and parsed.scheme != "https":
        problems.append("must use https for production endpoints")
    if not allow_private and literal_host_blocked(parsed.host):
        problems.append(
            f"host '{parsed.host}' is a private, loopback, link-local or reserved address"
        )
    return problems


def checked_url(
    url: str,
    *,
    environment: Environment,
    require_https: bool,
    allow_private_targets: bool,
    field: str = "url",
) -> tuple[str | None, list[FieldError]]:
    """The URL as it is to be stored (normalised), or every reason it cannot be registered.

    Messages name the host at most, never the URL: it may carry credentials.
    """
    try:
        parsed = parse_url(url)
    except InvalidUrl as exc:
        return None, [FieldError(field, problem) for problem in exc.problems]
    problems = _policy_problems(
        parsed,
        environment=environment,
        require_https=require_https,
        allow_private=allow_private_targets,
    )
    if problems:
        return None, [FieldError(field, problem) for problem in problems]
    return parsed.text, []


def url_problems(
    url: str,
    *,
    environment: Environment,
    require_https: bool,
    allow_private_targets: bool,
    field: str = "url",
) -> list[FieldError]:
    """Every reason this URL cannot be registered; empty when it can."""
    return checked_url(
        url,
        environment=environment,
        require_https=require_https,
        allow_private_targets=allow_private_targets,
        field=field,
    )[1]


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
