"""Signing is proved by known answers (the shared vectors) and by the real verifiers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import stripe
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook, WebhookVerificationError

from dispatcher.signing import (
    build_signature_headers,
    canonical_json,
    ed25519_headers,
    ed25519_public_key,
    generate_ed25519_key,
    generate_secret,
    sign_sha256_body,
    sign_sorted_key_sha256,
    sign_v1,
    sign_v1a,
    standard_webhooks_headers,
)
from dispatcher.verification import verify_v1
from tests.tooling import require_tool

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


# -- ed25519 (Standard Webhooks v1a) -------------------------------------------------------

# RFC 8032 section 7.1, test 1: the private key (seed) and the public key it must give.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_EMPTY_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
ED_OLD = "whsk_" + base64.b64encode(RFC8032_SEED).decode()
ED_NEW = generate_ed25519_key(lambda n: bytes(range(n)))


def _public(whpk: str) -> Ed25519PublicKey:
    assert whpk.startswith("whpk_")
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(whpk.removeprefix("whpk_")))


def test_ed25519_keys_follow_rfc_8032() -> None:
    assert ed25519_public_key(ED_OLD) == "whpk_" + base64.b64encode(RFC8032_PUBLIC).decode()
    # The primitive itself, on the RFC's own message (empty): a known answer.
    _public(ed25519_public_key(ED_OLD)).verify(RFC8032_EMPTY_SIGNATURE, b"")


def test_generate_ed25519_key_shape_and_rng() -> None:
    assert "whsk_" + base64.b64encode(bytes(range(32))).decode() == ED_NEW
    keys = {generate_ed25519_key() for _ in range(10)}
    assert len(keys) == 10
    assert all(re.fullmatch(r"whsk_[A-Za-z0-9+/]{43}=", k) for k in keys)
    assert re.fullmatch(r"whpk_[A-Za-z0-9+/]{43}=", ed25519_public_key(keys.pop()))
    with pytest.raises(ValueError):
        generate_ed25519_key(lambda n: b"\x00" * (n - 1))


def _v1a_entries(value: str) -> list[bytes]:
    entries = value.split(" ")
    assert all(e.startswith("v1a,") for e in entries)
    return [base64.b64decode(e.removeprefix("v1a,")) for e in entries]


def test_v1a_verifies_with_each_public_key_newest_last(body: bytes) -> None:
    headers = ed25519_headers([ED_OLD, ED_NEW], "evt_42", 1_762_780_249, body)
    assert headers["webhook-id"] == "evt_42"
    assert headers["webhook-timestamp"] == "1762780249"
    old_sig, new_sig = _v1a_entries(headers["webhook-signature"])
    signed = b"evt_42.1762780249." + body
    _public(ed25519_public_key(ED_OLD)).verify(old_sig, signed)
    _public(ed25519_public_key(ED_NEW)).verify(new_sig, signed)
    with pytest.raises(InvalidSignature):
        _public(ed25519_public_key(ED_NEW)).verify(old_sig, signed)
    with pytest.raises(InvalidSignature):
        _public(ed25519_public_key(ED_OLD)).verify(old_sig, signed + b" ")


def test_v1a_is_deterministic(body: bytes) -> None:
    """Pure like the HMAC schemes: same key, id, time and body give the same signature."""
    first = sign_v1a([ED_OLD], "evt_1", 1, body)
    assert first == sign_v1a([ED_OLD], "evt_1", 1, body)
    assert first != sign_v1a([ED_OLD], "evt_1", 2, body)


def test_ed25519_endpoint_headers_carry_no_shared_secret_scheme(body: bytes) -> None:
    headers = build_signature_headers(
        secrets=[ED_OLD], timestamp=5, body=body, event_id="evt_7",
        standard_webhooks=False, signing="ed25519",
    )  # fmt: skip
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1a,")


def test_v1a_verified_by_node_crypto(body: bytes, tmp_path: Path) -> None:
    """An independent implementation (OpenSSL through node:crypto) accepts our signatures."""
    node = require_tool("node")
    headers = ed25519_headers([ED_OLD, ED_NEW], "evt_9", 1_700_000_000, body)
    (tmp_path / "body").write_bytes(body)
    script = """
const crypto = require("node:crypto"), fs = require("node:fs");
const [bodyPath, id, ts, sigs, ...keys] = process.argv.slice(1);
const msg = Buffer.concat([Buffer.from(`${id}.${ts}.`), fs.readFileSync(bodyPath)]);
const entries = sigs.split(" ").map(e => Buffer.from(e.split(",")[1], "base64"));
for (const whpk of keys) {
  const key = crypto.createPublicKey({format: "jwk", key: {kty: "OKP", crv: "Ed25519",
      x: Buffer.from(whpk.slice(5), "base64").toString("base64url")}});
  console.log(entries.map(s => crypto.verify(null, msg, key, s)).join(","));
}
"""
    done = subprocess.run(
        [node, "-e", script, str(tmp_path / "body"), "evt_9", "1700000000",
         headers["webhook-signature"], ed25519_public_key(ED_OLD), ed25519_public_key(ED_NEW)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stdout.split() == ["true,false", "false,true"]


@pytest.mark.parametrize("bad", [OLD, "whsk_not base64!", "whsk_" + "A" * 10])
def test_v1a_refuses_what_is_not_an_ed25519_private_key(bad: str) -> None:
    with pytest.raises(ValueError):
        sign_v1a([bad], "evt", 1, b"{}")


def test_the_examples_in_receiving_md_are_real_signatures(
    vectors: dict[str, Any], body: bytes
) -> None:
    """docs/receiving.md shows header values; each must verify, or readers copy a lie."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "receiving.md").read_text("utf-8")
    assert "X-Bjet24-Signature: " + vectors["v1_single_secret"]["header"] in page
    assert "X-Signature: " + vectors["sorted_key_sha256"]["header"] in page
    assert "webhook-signature: " + vectors["standard_webhooks"]["webhook_signature"] in page
    (v1a,) = re.findall(r"webhook-signature: (v1a,\S+)", page)
    (whpk,) = re.findall(r"`(whpk_\S+)`", page)
    assert whpk == ed25519_public_key(ED_OLD)
    signed = b"evt_01JD3K8Q6Z4X7V2N9M5B1C0A8E.1762780249." + body
    _public(whpk).verify(base64.b64decode(v1a.removeprefix("v1a,")), signed)
