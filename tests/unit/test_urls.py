"""URL rules for webhook endpoints, as a table: what a tenant may register, and what not."""

from __future__ import annotations

import pytest

from api.urls import MAX_URL_LENGTH, redact_url, url_problems
from dispatcher.models import Environment

SANDBOX = Environment.SANDBOX
PRODUCTION = Environment.PRODUCTION


def problems(
    url: str,
    environment: Environment = SANDBOX,
    *,
    require_https: bool = True,
    allow_private_targets: bool = False,
) -> list[str]:
    found = url_problems(
        url,
        environment=environment,
        require_https=require_https,
        allow_private_targets=allow_private_targets,
    )
    assert all(p.field == "url" for p in found)
    return [p.message for p in found]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hooks",
        "http://example.com/hooks",  # sandbox: http is fine
        "https://example.com:8443/a/b?c=d&e=f",
        "https://user:pa%40ss@example.com/hooks",
        "https://token@example.com/hooks",
        "https://:only-password@example.com/",
        "https://bücher.de/hooks",
        "https://EXAMPLE.com./",
        "https://[2606:4700:4700::1111]/hooks",
        "https://8.8.8.8/hooks",
        "https://my_host.example.com/",
        "https://example.com/" + "a" * (MAX_URL_LENGTH - len("https://example.com/")),
    ],
)
def test_accepted(url: str) -> None:
    assert problems(url) == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", "must not be empty"),
        ("ftp://example.com/x", "scheme 'ftp' is not allowed"),
        ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("/relative/path", "must be an absolute http or https URL"),
        ("example.com/hooks", "must be an absolute http or https URL"),
        ("http:///no-host", "must include a host"),
        ("https://example.com/a b", "whitespace or control characters"),
        ("https://example.com/\x00", "whitespace or control characters"),
        ("https://example.com/\u200bx", "whitespace or control characters"),
        ("https://evil.com\\@127.0.0.1/", "backslash"),
        ("https://example.com/#frag", "must not contain a fragment"),
        ("https://example.com:99999/", "is not a valid URL"),
        ("https://example.com:abc/", "is not a valid URL"),
        ("https://[::1/", "is not a valid URL"),
        ("https://example.com:0/", "port 0"),
        ("https://exa%00mple.com/", "not a valid hostname"),
        ("https://a..b/", "not a valid hostname"),
        ("https://" + "a" * 64 + ".com/", "not a valid hostname"),
        ("https://" + "a." * 127 + "com/", "not a valid hostname"),
        ("https://***:***@example.com/", "redacted credentials"),
        ("https://***@example.com/", "redacted credentials"),
        ("https://example.com/" + "a" * MAX_URL_LENGTH, f"at most {MAX_URL_LENGTH} characters"),
    ],
)
def test_refused(url: str, expected: str) -> None:
    found = problems(url)
    assert any(expected in message for message in found), found


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "[::1]",
        "[fe80::1]",
        "[fd00::1]",
        "[::ffff:127.0.0.1]",
        "localhost",
        "api.localhost",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
    ],
)
def test_private_literal_hosts_refused_unless_allowed(host: str) -> None:
    url = f"https://{host}/hooks"
    assert any("private, loopback, link-local or reserved" in m for m in problems(url))
    assert problems(url, allow_private_targets=True) == []


def test_names_pass_even_if_they_may_resolve_privately() -> None:
    """Names are judged at delivery time, by what they resolve to."""
    assert problems("https://internal.example.com/") == []


def test_production_requires_https_unless_disabled() -> None:
    assert problems("http://example.com/", PRODUCTION) == [
        "must use https for production endpoints"
    ]
    assert problems("http://example.com/", PRODUCTION, require_https=False) == []
    assert problems("https://example.com/", PRODUCTION) == []


def test_every_problem_is_reported_at_once() -> None:
    found = problems("http://127.0.0.1/", PRODUCTION)
    assert len(found) == 2


def test_messages_never_echo_credentials() -> None:
    for url in (
        "http://user:hunter2@127.0.0.1/#x",
        "ftp://user:hunter2@example.com/",
        "https://user:hunter2@[hunter2]/",
        "https://user:hunter2@host:hunter2/",
    ):
        for message in problems(url, PRODUCTION):
            assert "hunter2" not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:secret@example.com/a?b=c", "https://***:***@example.com/a?b=c"),
        ("https://token@example.com/", "https://***@example.com/"),
        ("https://:pw@example.com", "https://***:***@example.com"),
        ("https://u:p%40ss@example.com:8443/x", "https://***:***@example.com:8443/x"),
        ("https://example.com/path@with-at", "https://example.com/path@with-at"),
        ("https://example.com/?q=a@b", "https://example.com/?q=a@b"),
        ("https://example.com/", "https://example.com/"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
