"""URL rules for webhook endpoints, as a table: what a tenant may register, and what not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from api.urls import MAX_URL_LENGTH, checked_url, redact_url, url_problems
from dispatcher.models import Environment
from dispatcher.urls import InvalidUrl, parse_url

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
        ("https://[::1/", "not a valid hostname"),
        # a bracket holds an IPv6 address and nothing else: aiohttp took any host with a
        # ":" for an IP literal and let the operating system resolve it (issue 16)
        ("http://[x:vm]:19001/hook", "not a valid hostname"),
        ("http://[vm]/hook", "not a valid hostname"),
        ("http://[127.0.0.1]/", "not a valid hostname"),
        ("http://[v1.x]/", "not a valid hostname"),
        ("http://[::1%25]:8080/", "not a valid hostname"),  # zone ids, encoded or not
        ("http://[fe80::1%25eth0]/", "not a valid hostname"),
        ("http://[2606:4700::1%eth0]/", "not a valid hostname"),
        ("http://[::1]x/", "not a valid hostname"),
        ("http://ex%61mple.com/", "not a valid hostname"),
        ("http://1.2.3.999/", "not a valid hostname"),  # ends in a number, yet no IPv4
        ("http://example.123/", "not a valid hostname"),
        ("http://xn--abc.com/", "not a valid hostname"),  # a fake A-label
        ("http://a\u2488b.com/", "not a valid hostname"),  # UTS 46 disallows it
        ("http://vm\uff1a19001/", "not a valid hostname"),  # a fullwidth colon is no port
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
        "\uff11\uff12\uff17\u3002\uff10\uff0e\uff10\uff0e\uff11",  # fullwidth 127.0.0.1
        "localhost.",
    ],
)
def test_private_literal_hosts_refused_unless_allowed(host: str) -> None:
    url = f"https://{host}/hooks"
    assert any("private, loopback, link-local or reserved" in m for m in problems(url))
    assert problems(url, allow_private_targets=True) == []


@pytest.mark.parametrize(
    "host", ["127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "134744072", "0x8.0x8.0x8.0x8"]
)
def test_ip_literals_must_be_canonical(host: str) -> None:
    """inet_aton forms are refused, whatever they point at: resolvers read them as IPv4."""
    for allow_private_targets in (False, True):
        found = problems(f"https://{host}/hooks", allow_private_targets=allow_private_targets)
        assert found == ["an IPv4 address must be written as four decimal numbers (a.b.c.d)"]


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


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://bücher.de/hooks", "https://xn--bcher-kva.de/hooks"),
        ("https://B\u00dcCHER.de/", "https://xn--bcher-kva.de/"),
        ("http://\uff56\uff4d:19001/", "http://vm:19001/"),  # fullwidth "vm"
        ("http://\u0440\u0444.example\u3002com/", "http://xn--p1ai.example.com/"),
        ("HTTPS://EXAMPLE.com./", "https://example.com./"),
        ("https://example.com", "https://example.com/"),
        ("https://example.com?a=b", "https://example.com/?a=b"),
        ("https://example.com/x?", "https://example.com/x"),  # clients drop an empty query
        ("https://example.com:/x", "https://example.com/x"),
        ("https://example.com:08443/x", "https://example.com:8443/x"),
        ("https://8.8.8.8/", "https://8.8.8.8/"),
        ("https://8.8.8.8./", "https://8.8.8.8/"),
        ("https://[2606:4700:4700:0:0:0:0:1111]/", "https://[2606:4700:4700::1111]/"),
        ("https://example.com/b\u00fccher?q=\u00fc", "https://example.com/b%C3%BCcher?q=%C3%BC"),
        ("https://example.com/a%zz/%41", "https://example.com/a%25zz/%41"),
        ('https://example.com/<x>"{y}"|^`', "https://example.com/%3Cx%3E%22%7By%7D%22%7C%5E%60"),
        ("https://u:p%40ss@example.com/", "https://u:p%40ss@example.com/"),
        ("https://j\u00fcrgen:p@ss@example.com/", "https://j%C3%BCrgen:p%40ss@example.com/"),
    ],
)
def test_stored_normalised(url: str, stored: str) -> None:
    parsed = parse_url(url)
    assert parsed.text == stored
    assert parse_url(parsed.text) == parsed, "normalising twice changes nothing"
    found, problems = checked_url(
        url, environment=SANDBOX, require_https=True, allow_private_targets=False
    )
    assert (found, problems) == (stored, [])


def test_credentials_are_decoded_for_basic_auth() -> None:
    assert parse_url("https://j\u00fcrgen:p@ss@example.com/").credentials == ("jürgen", "p@ss")
    assert parse_url("https://token@example.com/").credentials == ("token", None)
    assert parse_url("https://example.com/").credentials is None


def test_idna_maps_onto_loopback_and_localhost_are_refused() -> None:
    for url in (
        "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",
        "http://LOCALHOST/",
    ):
        assert any("private, loopback" in m for m in problems(url)), url


_URL_CHARACTERS = st.sampled_from(
    list("aZ09-._~:/?#[]@!$&'()*+,;=%\\ \t\x00\u00e9\u6f22\uff56\u3002")
)


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from(["http://", "https://", "HTTP://", "http:/", "h://"]),
    st.text(alphabet=_URL_CHARACTERS, max_size=40),
)
def test_the_http_client_sees_what_the_parser_saw(scheme: str, rest: str) -> None:
    """Whatever the text, an accepted URL reaches aiohttp's URL type with the same host,
    port, path and query that were judged: the two never disagree (issue 16's root cause)."""
    try:
        parsed = parse_url(scheme + rest)
    except InvalidUrl:
        return
    assert parse_url(parsed.text) == parsed, "normalising is stable"
    sent = URL(parsed.without_credentials, encoded=True)
    host = parsed.host.removeprefix("[").removesuffix("]")
    assert (sent.raw_host, sent.explicit_port) == (host, parsed.port)
    assert sent.raw_path_qs == parsed.target
