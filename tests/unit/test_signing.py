"""Signing is proved by known answers (the shared vectors) and by the real verifiers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import stripe
from standardwebhooks import Webhook, WebhookVerificationError

from dispatcher.signing import (
    build_signature_headers,
    canonical_json,
    generate_secret,
    sign_sha256_body,
    sign_sorted_key_sha256,
    sign_v1,
    standard_webhooks_headers,
    verify_v1,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "signatures.json"
# The contract's copy, when the repository sits beside it: ours must not drift from it.
CONTRACT_VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "signatures.json"


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return data


def test_vectors_are_the_contracts_copy() -> None:
    if not CONTRACT_VECTORS.is_file():
        pytest.skip("no contract checkout beside the repository")
    assert json.loads(VECTORS.read_text("utf-8")) == json.loads(CONTRACT_VECTORS.read_text("utf-8"))


@pytest.fixture(scope="module")
def body(vectors: dict[str, Any]) -> bytes:
    return canonical_json(vectors["canonical_body"]["event"])


# -- known answers -------------------------------------------------------------------------


def test_canonical_body_matches_vector(vectors: dict[str, Any], body: bytes) -> None:
    assert body == vectors["canonical_body"]["body_utf8"].encode("utf-8")


def test_canonical_body_equals_stdlib_compact_form(vectors: dict[str, Any], body: bytes) -> None:
    event = vectors["canonical_body"]["event"]
    stdlib = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert body == stdlib.encode("utf-8")


def test_v1_single_secret_vector(vectors: dict[str, Any], body: bytes) -> None:
    v = vectors["v1_single_secret"]
    assert sign_v1([v["secret"]], v["timestamp"], body) == v["header"]


def test_v1_rotation_vector_newest_last(vectors: dict[str, Any], body: bytes) -> None:
    v = vectors["v1_rotation"]
    assert sign_v1(v["secrets_oldest_first"], v["timestamp"], body) == v["header"]


def _article_parser(header: str) -> dict[str, str]:
    """The Bjet24 article's Node parser, ``Object.fromEntries(h.split(",").map(kv =>
    kv.split("=")))``, in Python: a later key overwrites an earlier one, and a value holding
    "=" is cut at it (JavaScript's destructuring keeps the first two pieces)."""
    return {kv.split("=")[0]: kv.split("=")[1] for kv in header.split(",")}


def test_article_parser_keeps_the_newest_during_rotation(body: bytes) -> None:
    header = sign_v1([OLD, NEW], 1_000_000, body)
    parts = _article_parser(header)
    signed = b"1000000." + body
    assert parts["t"] == "1000000"
    assert parts["v1"] == hmac.new(NEW.encode(), signed, hashlib.sha256).hexdigest()


def test_sorted_key_vector(vectors: dict[str, Any]) -> None:
    v = vectors["sorted_key_sha256"]
    assert json.dumps(v["event"], sort_keys=True) == v["canonical"]
    assert sign_sorted_key_sha256(v["secret"], v["event"]) == v["header"]


def test_sorted_key_vector_from_body_bytes(vectors: dict[str, Any]) -> None:
    """Whatever byte form the event travels in, X-Signature is the same."""
    v = vectors["sorted_key_sha256"]
    for wire in (canonical_json(v["event"]), json.dumps(v["event"], indent=2).encode()):
        assert sign_sha256_body(v["secret"], wire) == v["header"]


def test_standard_webhooks_vector(vectors: dict[str, Any], body: bytes) -> None:
    v = vectors["standard_webhooks"]
    headers = standard_webhooks_headers([v["secret"]], v["webhook_id"], v["timestamp"], body)
    assert headers == {
        "webhook-id": v["webhook_id"],
        "webhook-timestamp": str(v["timestamp"]),
        "webhook-signature": v["webhook_signature"],
    }


def test_vectors_agree_with_reference_libraries(vectors: dict[str, Any], body: bytes) -> None:
    """Guards the vectors themselves: the real libraries accept them."""
    v1 = vectors["v1_single_secret"]
    assert stripe.WebhookSignature.verify_header(body, v1["header"], v1["secret"], None)
    sw = vectors["standard_webhooks"]
    signed = Webhook(sw["secret"]).sign(
        sw["webhook_id"], datetime.fromtimestamp(sw["timestamp"], UTC), body.decode()
    )
    assert signed == sw["webhook_signature"]


# -- round trips through the real verifiers ------------------------------------------------

NEW = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _now() -> int:
    # The verifiers read the real clock themselves; the code under test never does.
    return int(time.time())


@pytest.mark.parametrize("secret", [NEW, OLD])
def test_stripe_verifies_every_active_secret(body: bytes, secret: str) -> None:
    header = sign_v1([OLD, NEW], _now(), body)
    assert stripe.WebhookSignature.verify_header(body, header, secret, 300)


def test_stripe_rejects_other_secret_and_tampered_body(body: bytes) -> None:
    header = sign_v1([NEW], _now(), body)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body, header, OLD, 300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body + b" ", header, NEW, 300)


def test_stripe_accepts_custom_header_name(body: bytes) -> None:
    headers = build_signature_headers(
        secrets=[NEW], timestamp=_now(), body=body, event_id="evt_1",
        header_name="X-Acme-Signature", standard_webhooks=False,
    )  # fmt: skip
    assert "X-Bjet24-Signature" not in headers
    assert stripe.WebhookSignature.verify_header(body, headers["X-Acme-Signature"], NEW, 300)


@pytest.mark.parametrize("secret", [NEW, OLD])
def test_standardwebhooks_verifies_every_active_secret(body: bytes, secret: str) -> None:
    headers = standard_webhooks_headers([OLD, NEW], "evt_42", _now(), body)
    assert headers["webhook-signature"].count("v1,") == 2
    assert Webhook(secret).verify(body, headers) == json.loads(body)


def test_standardwebhooks_rejects_other_secret(body: bytes) -> None:
    headers = standard_webhooks_headers([NEW], "evt_42", _now(), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(body, headers)


@pytest.mark.parametrize("secret", ["my own secret!", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
def test_standardwebhooks_tenant_secret_the_library_can_decode(body: bytes, secret: str) -> None:
    headers = standard_webhooks_headers([secret], "evt_1", _now(), body)
    Webhook(secret).verify(body, headers)


@pytest.mark.parametrize("secret", ["whsec_a", "whsec_!!!", "plain", "whsec_"])
def test_standardwebhooks_undecodable_secret_falls_back_to_raw_bytes(
    body: bytes, secret: str
) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the library raises several kinds
        Webhook(secret)
    headers = standard_webhooks_headers([secret], "evt_1", _now(), body)
    Webhook(secret.encode("utf-8")).verify(body, headers)


def test_build_headers_all_schemes_verify(body: bytes) -> None:
    ts = _now()
    headers = build_signature_headers(
        secrets=[OLD, NEW], timestamp=ts, body=body, event_id="evt_7", standard_webhooks=True
    )
    assert set(headers) == {
        "X-Bjet24-Signature", "X-Signature", "webhook-id", "webhook-timestamp",
        "webhook-signature",
    }  # fmt: skip
    assert headers["webhook-id"] == "evt_7"
    assert stripe.WebhookSignature.verify_header(body, headers["X-Bjet24-Signature"], OLD, 300)
    Webhook(OLD).verify(body, headers)
    assert headers["X-Signature"] == _einvoice_receiver_signature(NEW, body)


def test_build_headers_without_standard_webhooks(body: bytes) -> None:
    headers = build_signature_headers(
        secrets=[NEW], timestamp=1, body=body, event_id="evt_7", standard_webhooks=False
    )
    assert set(headers) == {"X-Bjet24-Signature", "X-Signature"}


def _einvoice_receiver_signature(secret: str, raw: bytes) -> str:
    """The receiver procedure the e-invoice docs publish: parse, re-serialize, HMAC."""
    text = json.dumps(json.loads(raw), sort_keys=True)
    return "sha256=" + hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def test_x_signature_is_not_over_raw_bytes(body: bytes) -> None:
    """Documents the choice: the raw compact body is not what e-invoice receivers hash."""
    raw_mac = "sha256=" + hmac.new(NEW.encode(), body, hashlib.sha256).hexdigest()
    assert sign_sha256_body(NEW, body) != raw_mac
    assert sign_sha256_body(NEW, body) == _einvoice_receiver_signature(NEW, body)


@pytest.mark.parametrize("bad", [[], "whsec_abc", ()])
def test_signing_needs_a_list_of_secrets(bad: Any) -> None:
    with pytest.raises(ValueError):
        sign_v1(bad, 1, b"{}")
    with pytest.raises(ValueError):
        standard_webhooks_headers(bad, "evt", 1, b"{}")
    with pytest.raises(ValueError):
        build_signature_headers(
            secrets=bad, timestamp=1, body=b"{}", event_id="e", standard_webhooks=True
        )


# -- secrets ----------------------------------------------------------------------------------


def test_generate_secret_is_deterministic_given_rng() -> None:
    secret = generate_secret(lambda n: bytes(range(n)))
    assert secret == "whsec_" + base64.b64encode(bytes(range(24))).decode()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{32}", secret)


def test_generate_secret_default_shape_and_usable_everywhere(body: bytes) -> None:
    secrets = {generate_secret() for _ in range(20)}
    assert len(secrets) == 20
    secret = secrets.pop()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{32}", secret)
    headers = build_signature_headers(
        secrets=[secret], timestamp=_now(), body=body, event_id="e", standard_webhooks=True
    )
    Webhook(secret).verify(body, headers)
    assert stripe.WebhookSignature.verify_header(body, headers["X-Bjet24-Signature"], secret, 300)


def test_generate_secret_refuses_short_rng() -> None:
    with pytest.raises(ValueError):
        generate_secret(lambda n: b"\x00" * (n - 1))


# -- verify_v1 ---------------------------------------------------------------------------------


def test_verify_v1_accepts_vector(vectors: dict[str, Any], body: bytes) -> None:
    v = vectors["v1_rotation"]
    for secret in v["secrets_oldest_first"]:
        assert verify_v1(v["header"], [secret], body, now=v["timestamp"])
    assert verify_v1(v["header"], ["whsec_other", OLD], body, now=v["timestamp"] + 300)


@pytest.mark.parametrize("skew", [-301, 301, 10_000])
def test_verify_v1_enforces_tolerance_both_ways(body: bytes, skew: int) -> None:
    header = sign_v1([NEW], 1_000_000, body)
    assert not verify_v1(header, [NEW], body, now=1_000_000 + skew)


def test_verify_v1_rejects_tampering_and_wrong_secret(body: bytes) -> None:
    header = sign_v1([NEW], 1_000_000, body)
    assert verify_v1(header, [NEW], body, now=1_000_000)
    assert not verify_v1(header, [OLD], body, now=1_000_000)
    assert not verify_v1(header, [NEW], body + b"x", now=1_000_000)
    forged = header.replace("t=1000000", "t=1000001")
    assert not verify_v1(forged, [NEW], body, now=1_000_000)


@pytest.mark.parametrize(
    "header",
    ["", "garbage", "t=abc,v1=00", "v1=00", "t=1000000", "t=1000000,v1=é", "t=1000000,v0=00"],
)
def test_verify_v1_rejects_malformed_headers(body: bytes, header: str) -> None:
    assert not verify_v1(header, [NEW], body, now=1_000_000)
