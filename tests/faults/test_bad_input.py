"""Hand-written hostile requests: never a 5xx, and every refusal in the `{"error": ...}` shape.

Oversized, non-UTF-8, deeply nested and duplicate-key bodies, huge metadata, impossible
dates, NUL and control characters in URLs, ids and strings, and the wrong content types.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from dispatcher.models import Environment, Principal
from dispatcher.store import endpoints as endpoint_store
from tests.conftest import PLATFORM_TOKEN, TenantKeys
from tests.faults.conftest import error_shape_problem
from tests.figures import Recorder

Client = TestClient[Any, Any]
PLATFORM = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
LIMIT = 1_048_576  # DISPATCHER_MAX_BODY_BYTES's default, as in the test settings


@dataclass
class Prober:
    """Sends requests, checks every answer, and counts them for the report."""

    client: Client
    figures: Recorder
    sent: int = 0
    problems: list[str] = field(default_factory=list)

    async def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        headers: dict[str, str] | None = None,
        expect: Iterable[int] = (),
    ) -> tuple[int, Any]:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        response = await self.client.request(method, path, data=body, headers=all_headers)
        raw = await response.read()
        self.sent += 1
        status, label = response.status, f"{method} {path[:80]} {(body or b'')[:60]!r}"
        if status >= 500:
            self.figures.add(responses_5xx=1)
            self.problems.append(f"{label}: {status} {raw[:300]!r}")
        elif status >= 400:
            problem = error_shape_problem(status, response.content_type, raw)
            if problem:
                self.problems.append(f"{label}: {problem}")
        wanted = set(expect)
        if wanted and status not in wanted:
            self.problems.append(f"{label}: {status}, expected {sorted(wanted)}: {raw[:300]!r}")
        data = orjson.loads(raw) if response.content_type == "application/json" and raw else None
        return status, data

    def verdict(self) -> None:
        self.figures.add(malformed_inputs=self.sent)
        assert not self.problems, "\n".join(self.problems)


@pytest.fixture
async def probe(client: Client, figures: Recorder) -> Prober:
    return Prober(client, figures)


@pytest.fixture
async def keys(make_tenant: Any) -> TenantKeys:
    tenant: TenantKeys = await make_tenant()
    return tenant


async def _endpoint(probe: Prober, keys: TenantKeys) -> str:
    body = orjson.dumps({"url": "https://hooks.example.com/in", "events": ["*"]})
    status, created = await probe.send("POST", "/v1/webhooks", body, headers=keys.headers())
    assert status == 201, created
    return str(created["id"])


def _transition(tenant_id: str, **fields: Any) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "environment": "sandbox", "status": "created", **fields}


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


async def test_bodies_over_the_size_limit_are_413(probe: Prober, keys: TenantKeys) -> None:
    over = b'{"url": "https://hooks.example.com/", "events": ["*"], "description": "'
    over += b"x" * LIMIT + b'"}'
    for path, headers in (
        ("/v1/webhooks", keys.headers()),
        ("/internal/v1/transitions", PLATFORM),
        ("/internal/v1/mailings/ml_1/transitions", PLATFORM),
    ):
        _status, answer = await probe.send("POST", path, over, headers=headers, expect=[413])
        assert answer["error"]["type"] == "payload_too_large"
    # refused by size before authentication: no key needed to be told
    await probe.send("POST", "/v1/webhooks", over, expect=[401, 413])
    probe.verdict()


async def test_undecodable_and_unparseable_bodies_are_400(probe: Prober, keys: TenantKeys) -> None:
    bodies = [
        b'{"url": "https://hooks.example.com/\xff\xfe", "events": ["*"]}',  # invalid UTF-8
        b'{"url": "https://hooks.example.com/", "events": ["\xc3\x28"]}',
        b'{"description": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"description": "\\ud800"}',  # a lone surrogate escape
        b"\xef\xbb\xbf{}",  # a byte-order mark
        b"[" * 10_000 + b"]" * 10_000,  # 10,000 levels
        _nested(10_000),
        b'{"url": "https://hooks.example.com/", "events": ["*"], "metadata": ' + _nested(5000),
        b"{",
        b'{"url": "https://hooks.example.com/", }',
        b"NaN",
        b"\x00\x00\x00",
        b"{'single': 'quotes'}",
    ]
    for body in bodies:
        await probe.send("POST", "/v1/webhooks", body, headers=keys.headers(), expect=[400, 422])
        await probe.send(
            "POST", "/internal/v1/transitions", body, headers=PLATFORM, expect=[400, 422]
        )
    probe.verdict()


async def test_json_that_is_not_an_object_is_refused(probe: Prober, keys: TenantKeys) -> None:
    for body in (b"[]", b"null", b"true", b"42", b'"text"', b"1e400", b"[{}]"):
        for path, headers in (
            ("/v1/webhooks", keys.headers()),
            ("/internal/v1/transitions", PLATFORM),
            ("/internal/v1/mailings/ml_1/transitions", PLATFORM),
        ):
            await probe.send("POST", path, body, headers=headers, expect=[400, 422])
    probe.verdict()


async def test_deep_but_parseable_nesting_is_answered(probe: Prober, keys: TenantKeys) -> None:
    """Below the parser's depth limit, nesting reaches the validators and the database."""
    for depth in (100, 300, 1000):
        meta = _nested(depth)
        body = b'{"url": "https://hooks.example.com/", "events": ["*"], "metadata": %s}' % meta
        await probe.send("POST", "/v1/webhooks", body, headers=keys.headers(), expect=[201, 422])
        item = orjson.dumps(_transition(keys.tenant_id))[:-1] + b', "metadata": %s}' % meta
        await probe.send(
            "POST",
            "/internal/v1/mailings/ml_deep/transitions",
            item,
            headers=PLATFORM,
            expect=[200, 202, 422],
        )
    probe.verdict()


async def test_duplicate_keys_take_one_value_and_never_fail(
    probe: Prober, keys: TenantKeys
) -> None:
    body = (
        b'{"url": "https://a.example.com/", "url": "https://b.example.com/", '
        b'"events": ["*"], "events": "not a list"}'
    )
    await probe.send("POST", "/v1/webhooks", body, headers=keys.headers(), expect=[422])
    body = b'{"url": "https://a.example.com/", "events": ["*"], "enabled": true, "enabled": false}'
    _status, created = await probe.send(
        "POST", "/v1/webhooks", body, headers=keys.headers(), expect=[201]
    )
    assert created["enabled"] is False, "the last of duplicate keys wins, as in JSON.parse"
    item = (
        b'{"tenant_id": "%s", "tenant_id": "ten_nobody", "environment": "sandbox", '
        b'"status": "created", "status": "paid"}' % keys.tenant_id.encode()
    )
    await probe.send(
        "POST", "/internal/v1/mailings/ml_dup/transitions", item, headers=PLATFORM, expect=[422]
    )
    probe.verdict()


async def test_huge_metadata_is_422(probe: Prober, keys: TenantKeys) -> None:
    big = {"k": "x" * 900_000}
    many = {f"key_{i}": i for i in range(40_000)}
    for meta in (big, many, {"k": "x" * (16 * 1024)}):
        body = orjson.dumps(
            {"url": "https://hooks.example.com/", "events": ["*"], "metadata": meta}
        )
        _, _answer = await probe.send(
            "POST", "/v1/webhooks", body, headers=keys.headers(), expect=[413, 422]
        )
        item = orjson.dumps(_transition(keys.tenant_id, metadata=meta, recipient=meta))
        await probe.send(
            "POST",
            "/internal/v1/mailings/ml_big/transitions",
            item,
            headers=PLATFORM,
            expect=[413, 422],
        )
    probe.verdict()


MALFORMED_DATES: list[Any] = [
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-05-11T24:00:00Z",
    "2026-05-11T08:61:00Z",
    "2026-05-11T08:42:60Z",  # a leap second
    "2026-05-11T08:42:13",  # naive
    "2026-05-11",
    "08:42:13Z",
    "2026-05-11T08:42:13+24:00",
    "2026-05-11T08:42:13-99:99",
    "0000-00-00T00:00:00Z",
    "+275760-09-13T00:00:00Z",
    "2026-05-11T08:42:13Z\n",
    "2026-05-11T08:42:13Z\u0000",
    "\u0662\u0660\u0662\u0666-05-11T08:42:13Z",  # Arabic-Indic digits
    "",
    "now",
    1_715_000_000,
    1e300,
    -1,
    True,
    [],
    {},
]
# Well-formed, but not a plausible time for a transition (a replay range may use them).
IMPLAUSIBLE_DATES = [
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "1999-12-31T23:59:59Z",
    "2026-05-11T08:42:13.1234567891Z",
]


async def test_bad_dates_are_422(probe: Prober, keys: TenantKeys) -> None:
    endpoint = await _endpoint(probe, keys)
    for value in [*MALFORMED_DATES, *IMPLAUSIBLE_DATES]:
        item = orjson.dumps(_transition(keys.tenant_id, occurred_at=value))
        await probe.send(
            "POST",
            "/internal/v1/mailings/ml_date/transitions",
            item,
            headers=PLATFORM,
            expect=[422],
        )
        batch = orjson.dumps(
            {"transitions": [{**_transition(keys.tenant_id, occurred_at=value), "mailing_id": "m"}]}
        )
        await probe.send("POST", "/internal/v1/transitions", batch, headers=PLATFORM, expect=[422])
        for name in ("since", "until"):
            await probe.send(
                "POST",
                f"/v1/webhooks/{endpoint}/replay",
                orjson.dumps({name: value}),
                headers=keys.headers(),
                expect=[422] if value in MALFORMED_DATES else [202, 422],
            )
    probe.verdict()


BAD_URLS = [
    "https://hooks.example.com/\u0000",
    "https://hooks.exa\u0000mple.com/",
    "https://hooks.example.com/\r\nX-Injected: 1",
    "https://hooks.example.com/\n",
    "https://hooks.example.com\t/in",
    "https://hooks.example.com/\u0007",
    "https://hooks.example.com/\u007f",
    "https://hooks.example.com/\u200b",
    "https://\u202ehooks.example.com/",
    "https://hooks example.com/",
    "https://user:pa\u0000ss@hooks.example.com/",
    "https://hooks.example.com:99999/",
    "https://hooks.example.com:-1/",
    "https://[::1/",
    "https:///path-only",
    "//hooks.example.com/",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "gopher://hooks.example.com/",
    "https://" + "a" * 64 + ".example.com/",
    "https://hooks.example.com/" + "p" * 3000,
    "https://hooks.example.com/\\..\\",
    "\u0000",
    "",
]


async def test_control_characters_in_urls_are_422(probe: Prober, keys: TenantKeys) -> None:
    endpoint = await _endpoint(probe, keys)
    for url in BAD_URLS:
        body = orjson.dumps({"url": url, "events": ["*"]})
        await probe.send("POST", "/v1/webhooks", body, headers=keys.headers(), expect=[422])
        patch = orjson.dumps({"url": url})
        await probe.send(
            "PATCH", f"/v1/webhooks/{endpoint}", patch, headers=keys.headers(), expect=[422]
        )
    probe.verdict()


# Hosts the one URL parser refuses (issue 16): brackets holding anything but an IPv6 address,
# zone ids, names that end in a number but are no IPv4, fake or disallowed IDNA, and every
# spelling of a private address, fullwidth and IDNA forms included (private targets are off).
ODD_HOSTS = [
    "[x:vm]:19001",
    "[vm]",
    "[::1%25]",
    "[::1%25eth0]",
    "[fe80::1%25lo]",
    "[127.0.0.1]",
    "[v1.x]",
    "[::1]x",
    "1.2.3.999",
    "example.123",
    "ex%61mple.com",
    "xn--abc.com",
    "a\u2488b.com",
    "vm\uff1a19001",
    "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54",
    "\uff11\uff12\uff17\u3002\uff10\uff0e\uff10\uff0e\uff11",
    "localhost.",
    "api.localhost",
    "0x7f.1",
    "2130706433",
    "0177.0.0.1",
    "[::ffff:127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
    "[::127.0.0.1]",
    "169.254.169.254",
    "0.0.0.0",
]


async def test_odd_and_private_hosts_are_422_on_url(probe: Prober, keys: TenantKeys) -> None:
    endpoint = await _endpoint(probe, keys)
    for host in ODD_HOSTS:
        url = f"http://{host}/hook"
        body = orjson.dumps({"url": url, "events": ["*"]})
        for method, path, payload in (
            ("POST", "/v1/webhooks", body),
            ("PATCH", f"/v1/webhooks/{endpoint}", orjson.dumps({"url": url})),
        ):
            status, answer = await probe.send(
                method, path, payload, headers=keys.headers(), expect=[422]
            )
            if status == 422 and [e["field"] for e in answer["error"]["errors"]] != ["url"]:
                probe.problems.append(f"{url}: the 422 does not name url: {answer}")
    probe.verdict()


async def test_integers_beyond_64_bits_are_422(probe: Prober, keys: TenantKeys) -> None:
    endpoint = await _endpoint(probe, keys)
    for big in ("9223372036854775808", "-9223372036854775809", "1" + "0" * 40):
        metadata = b'{"metadata": {"n": ' + big.encode() + b"}}"
        await probe.send(
            "PATCH", f"/v1/webhooks/{endpoint}", metadata, headers=keys.headers(), expect=[422]
        )
        transition = orjson.dumps(_transition(keys.tenant_id, metadata={"n": 0}))
        transition = transition.replace(b'"n":0', b'"n":' + big.encode())
        await probe.send(
            "POST",
            "/internal/v1/mailings/ml_big/transitions",
            transition,
            headers=PLATFORM,
            expect=[422],
        )
    probe.verdict()


NUL_STRINGS = ["\u0000", "a\u0000b", "\u0000" * 100, "\ufffe\uffff", "\U0010ffff", "\u202e"]


async def test_nul_and_odd_characters_in_strings_never_reach_the_database_raw(
    probe: Prober, keys: TenantKeys, pool: asyncpg.Pool
) -> None:
    """PostgreSQL refuses NUL in text and in jsonb: it must be a 422, not a 500."""
    endpoint = await _endpoint(probe, keys)
    offline = await _offline_endpoint(pool, keys)
    auth = keys.headers()
    for text in NUL_STRINGS:
        fields: list[dict[str, Any]] = [
            {"description": text},
            {"metadata": {"k": text}},
            {"metadata": {text: 1}},
            {"metadata": {"nested": [{"k": text}]}},
            {"events": [text]},
        ]
        for extra in fields:
            body = orjson.dumps({"url": "https://hooks.example.com/", "events": ["*"], **extra})
            await probe.send("POST", "/v1/webhooks", body, headers=auth, expect=[201, 422])
            await probe.send(
                "PATCH",
                f"/v1/webhooks/{endpoint}",
                orjson.dumps(extra),
                headers=auth,
                expect=[200, 422],
            )
        body = orjson.dumps(
            {"url": "https://hooks.example.com/", "events": ["*"], "secret": "s" * 20 + text}
        )
        await probe.send("POST", "/v1/webhooks", body, headers=auth, expect=[422])
        for extra in (
            {"tracking_number": text},
            {"metadata": {"k": text}},
            {"recipient": {text: text}},
            {"tenant_id": text},
            {"environment": text},
            {"status": text},
            {"mail_type": text},
        ):
            item = orjson.dumps({**_transition(keys.tenant_id), **extra})
            await probe.send(
                "POST",
                "/internal/v1/mailings/ml_nul/transitions",
                item,
                headers=PLATFORM,
                expect=[200, 202, 409, 422],
            )
        test = orjson.dumps({"event_type": "webhook.test", "data": {"k": text}})
        await probe.send("POST", f"/v1/webhooks/{offline}/test", test, headers=auth)
    probe.verdict()


async def _offline_endpoint(pool: asyncpg.Pool, keys: TenantKeys) -> str:
    """An endpoint whose test sends are refused before any traffic (a loopback literal)."""
    owner = Principal(keys.tenant_id, Environment.SANDBOX, "key_bad_input")  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        endpoint = await endpoint_store.create_endpoint(
            conn,
            owner,
            url="http://127.0.0.1:9/offline",
            event_types=["*"],
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            now=datetime.now(UTC),
        )
    return endpoint.id


ODD_IDS = ["%00", "a%00b", "%0d%0a", "%ff", "%c3%28", "%e2%80%ae", "..", "%2e%2e", "x" * 5000, "🦄"]


async def test_odd_ids_in_paths_and_queries_are_404_or_422(probe: Prober, keys: TenantKeys) -> None:
    auth = keys.headers()
    for raw in ODD_IDS:
        for method, path in (
            ("GET", f"/v1/webhooks/{raw}"),
            ("PATCH", f"/v1/webhooks/{raw}"),
            ("DELETE", f"/v1/webhooks/{raw}"),
            ("POST", f"/v1/webhooks/{raw}/rotate-secret"),
            ("POST", f"/v1/webhooks/{raw}/test"),
            ("POST", f"/v1/webhooks/{raw}/replay"),
            ("GET", f"/v1/webhooks/{raw}/deliveries"),
            ("POST", f"/v1/deliveries/{raw}/retry"),
            ("POST", f"/v1/deliveries/dlv_{raw}/retry"),
            ("GET", f"/v1/events/{raw}"),
            ("GET", f"/v1/events?mailing_id={raw}"),
            ("GET", f"/v1/webhooks?starting_after={raw}"),
            ("GET", f"/v1/webhooks?limit={raw}"),
        ):
            body = b"{}" if method in ("PATCH", "POST") else None
            await probe.send(method, path, body, headers=auth, expect=[200, 404, 405, 422])
        item = orjson.dumps(_transition(keys.tenant_id))
        await probe.send(
            "POST",
            f"/internal/v1/mailings/{raw}/transitions",
            item,
            headers=PLATFORM,
            expect=[404, 422],
        )
    for query in (
        "limit=1e309",
        "limit=-1",
        "limit=0",
        "limit=101",
        "limit=99999999999999999999",
        "limit=1&limit=2",
        "status=bogus",
        "status=",
        "starting_after=",
    ):
        await probe.send("GET", f"/v1/webhooks?{query}", headers=auth, expect=[200, 422])
        await probe.send("GET", "/v1/events?mailing_id=m&" + query, headers=auth, expect=[200, 422])
    probe.verdict()


async def test_wrong_content_types_and_encodings_are_answered(
    probe: Prober, keys: TenantKeys
) -> None:
    good = orjson.dumps({"url": "https://hooks.example.com/", "events": ["*"]})
    auth = keys.headers()
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/json; charset=latin-1",
        "application/xml",
        "",
        "garbage/\u00e9",
    ):
        headers = {**auth, "Content-Type": content_type}
        await probe.send("POST", "/v1/webhooks", good, headers=headers, expect=[201, 415, 422])
    await probe.send(
        "POST",
        "/v1/webhooks",
        b"url=https://x.example.com/",
        headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
        expect=[400, 415],
    )
    await probe.send(
        "POST",
        "/v1/webhooks",
        b"not gzip at all",
        headers={**auth, "Content-Encoding": "gzip"},
        expect=[400, 415],
    )
    await probe.send(
        "POST",
        "/v1/webhooks",
        gzip.compress(good),
        headers={**auth, "Content-Encoding": "gzip"},
        expect=[201, 400, 415],
    )
    bomb = gzip.compress(b"{" + b" " * (20 * LIMIT) + b"}")  # 20 MiB of JSON in a few KiB
    await probe.send(
        "POST",
        "/v1/webhooks",
        bomb,
        headers={**auth, "Content-Encoding": "gzip"},
        expect=[400, 413, 415],
    )
    probe.verdict()


async def test_wrong_types_everywhere_are_422(probe: Prober, keys: TenantKeys) -> None:
    endpoint = await _endpoint(probe, keys)
    auth = keys.headers()
    odd: list[Any] = [None, True, 0, -1, 2**70, 1.5, "", "x" * 10_000, [], {}, [None], {"a": None}]
    fields = ("url", "events", "description", "enabled", "secret", "metadata", "standard_webhooks")
    for name in fields:
        for value in odd:
            body = {"url": "https://hooks.example.com/", "events": ["*"], name: value}
            await probe.send("POST", "/v1/webhooks", json.dumps(body).encode(), headers=auth)
            await probe.send(
                "PATCH",
                f"/v1/webhooks/{endpoint}",
                json.dumps({name: value}).encode(),
                headers=auth,
            )
    for name in ("overlap_seconds", "secret"):
        for value in odd:
            await probe.send(
                "POST",
                f"/v1/webhooks/{endpoint}/rotate-secret",
                json.dumps({name: value}).encode(),
                headers=auth,
            )
    for name in (
        "tenant_id",
        "environment",
        "status",
        "occurred_at",
        "mail_type",
        "tracking_number",
        "recipient",
        "metadata",
    ):
        for value in odd:
            item = {**_transition(keys.tenant_id), name: value}
            await probe.send(
                "POST",
                "/internal/v1/mailings/ml_types/transitions",
                json.dumps(item).encode(),
                headers=PLATFORM,
            )
    for value in odd:
        await probe.send(
            "POST",
            "/internal/v1/transitions",
            json.dumps({"transitions": value}).encode(),
            headers=PLATFORM,
        )
    probe.verdict()


async def test_odd_headers_are_401_or_422(probe: Prober, keys: TenantKeys) -> None:
    good = orjson.dumps({"url": "https://hooks.example.com/", "events": ["*"]})
    for header in (
        "Bearer " + "k" * 4000,
        "Bearer sk_sandbox_\u00e9\u00e9",
        "Bearer  ",
        "Basic dXNlcjpwYXNz",
        "bearer " + keys.sandbox + " extra",
        "Bearer\t" + keys.sandbox,
        keys.sandbox,
    ):
        await probe.send(
            "POST", "/v1/webhooks", good, headers={"Authorization": header}, expect=[201, 401]
        )
        await probe.send(
            "POST",
            "/internal/v1/transitions",
            good,
            headers={"Authorization": header},
            expect=[401],
        )
    for key in ("", " ", "k" * 300, "caf\u00e9", "a\tb"):
        headers = {**keys.headers(), "Idempotency-Key": key}
        await probe.send("POST", "/v1/webhooks", good, headers=headers, expect=[201, 422])
    probe.verdict()


async def test_unknown_methods_and_paths_have_the_error_shape(
    probe: Prober, keys: TenantKeys
) -> None:
    auth = keys.headers()
    for method, path in (
        ("PUT", "/v1/webhooks"),
        ("DELETE", "/v1/event-types"),
        ("POST", "/healthz"),
        ("PATCH", "/internal/v1/transitions"),
        ("GET", "/v1/nowhere"),
        ("GET", "/v1/webhooks/"),
        ("GET", "/" + "a" * 4000),
        ("OPTIONS", "/v1/webhooks"),
    ):
        await probe.send(method, path, b"{}", headers=auth, expect=[404, 405])
    probe.verdict()
