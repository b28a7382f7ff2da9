"""Request signatures, pure: no clock, no I/O, so known-answer vectors can pin every byte.

An endpoint signs with shared HMAC secrets (``signing: "hmac"``, the default) or with
ed25519 key pairs (``signing: "ed25519"``). HMAC endpoints get, on every delivery:

- ``X-Bjet24-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]``: Stripe's scheme, HMAC-SHA256 over
  ``"<t>." + body`` keyed by the whole secret string, one ``v1`` per active secret.
- ``X-Signature: sha256=<hex>``: the e-invoice sorted-key scheme.
- optionally the Standard Webhooks headers ``webhook-id``/``-timestamp``/``-signature: v1,``.

Ed25519 endpoints hold no shared secret, so they get only the Standard Webhooks headers, with
``webhook-signature: v1a,<base64 ed25519 signature>``: receivers verify with the public key
(``whpk_``) and can forge nothing. During a rotation every active secret or key signs, the
oldest first and the newest last.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

DEFAULT_SIGNATURE_HEADER = "X-Bjet24-Signature"
SORTED_KEY_HEADER = "X-Signature"
SECRET_PREFIX = "whsec_"
SECRET_RANDOM_BYTES = 24
PRIVATE_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
ED25519_KEY_BYTES = 32
HMAC = "hmac"
ED25519 = "ed25519"
SIGNING_SCHEMES = (HMAC, ED25519)
DEFAULT_TOLERANCE_SECONDS = 300


def canonical_json(obj: Any) -> bytes:
    """One byte form per event, so every endpoint and every attempt gets identical bytes.

    Keys sorted at every level, no whitespace, UTF-8 with non-ASCII unescaped. Callers must
    pre-format datetimes (``...Z``) and keep integers within 64 bits: orjson refuses bigger.
    """
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _require_secrets(secrets: Sequence[str]) -> None:
    # A str is a Sequence[str]: signing with each character would be a silent disaster.
    if isinstance(secrets, str) or not secrets:
        raise ValueError("secrets must be a non-empty sequence of secret strings")


def sign_v1(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """Stripe-compatible header value; several ``v1`` let receivers rotate without a gap.

    ``secrets`` are oldest first, so the newest ``v1`` comes last: a receiver that keeps only
    the last ``v1=`` (the Bjet24 article's ``Object.fromEntries`` parser) verifies with the
    new secret as soon as it has it. The key is the whole secret string as UTF-8, prefix
    included, which is what ``stripe.WebhookSignature`` does with the secret it is given.
    """
    _require_secrets(secrets)
    signed = str(int(timestamp)).encode("ascii") + b"." + body
    parts = [f"t={int(timestamp)}"]
    parts.extend("v1=" + _hmac_sha256(secret.encode("utf-8"), signed).hex() for secret in secrets)
    return ",".join(parts)


def sign_sorted_key_sha256(secret: str, event: Mapping[str, Any]) -> str:
    """The e-invoice scheme: HMAC over ``json.dumps(event, sort_keys=True)``.

    Python's default separators and ASCII escapes are part of the scheme, so stdlib ``json``
    is used on purpose (orjson cannot produce that form).
    """
    text = json.dumps(event, sort_keys=True)
    return "sha256=" + _hmac_sha256(secret.encode("utf-8"), text.encode("utf-8")).hex()


def sign_sha256_body(secret: str, body: bytes) -> str:
    """``X-Signature`` for a body we send, as a receiver following the e-invoice docs checks it.

    Those receivers parse the body and re-serialize it with ``json.dumps(sort_keys=True)``
    before the HMAC; they never hash the raw bytes. Our canonical body (compact, non-ASCII
    unescaped) differs from that form, so signing the raw bytes would fail their check.
    Hence: parse with the stdlib (exactly as a Python receiver does) and sign the
    sorted-key re-serialization. Receivers wanting raw-body integrity use the v1 header.
    """
    return "sha256=" + _hmac_sha256(secret.encode("utf-8"), _sorted_key_form(body)).hex()


@lru_cache(maxsize=256)
def _sorted_key_form(body: bytes) -> bytes:
    """One event goes to several endpoints and attempts: re-serialize its body once."""
    return json.dumps(json.loads(body), sort_keys=True).encode("utf-8")


def _standard_webhooks_key(secret: str) -> bytes:
    """Derive the key exactly as the reference ``standardwebhooks.Webhook(str)`` does.

    Tenants may bring their own secrets, which need not be base64. Where the reference
    library cannot decode one (it raises, or yields no key), we fall back to the secret's
    raw UTF-8 bytes; such a receiver then passes ``secret.encode()`` to ``Webhook``.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        # Same lenient decode as the library: extra "==" tolerates unpadded secrets.
        key = base64.b64decode(encoded + "==")
    except (binascii.Error, ValueError):
        key = b""
    return key or secret.encode("utf-8")


def standard_webhooks_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Standard Webhooks headers; ``msg_id`` is the event id so retries share one id."""
    _require_secrets(secrets)
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    signatures = " ".join(
        "v1," + base64.b64encode(_hmac_sha256(_standard_webhooks_key(s), signed)).decode("ascii")
        for s in secrets
    )
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signatures,
    }


def build_signature_headers(
    *,
    secrets: Sequence[str],
    timestamp: int,
    body: bytes,
    event_id: str,
    header_name: str = DEFAULT_SIGNATURE_HEADER,
    standard_webhooks: bool,
    signing: str = HMAC,
) -> dict[str, str]:
    """Every signature header of one attempt, so the sender has a single call to make.

    ``secrets`` are oldest first: HMAC secrets, or ``whsk_`` private keys when ``signing`` is
    ``"ed25519"``. ``X-Signature`` uses only the newest (last) secret: the e-invoice scheme
    has one value.
    """
    _require_secrets(secrets)
    if signing == ED25519:
        return ed25519_headers(secrets, event_id, timestamp, body)
    if signing != HMAC:
        raise ValueError(f"unknown signing scheme {signing!r}")
    headers = {
        header_name: sign_v1(secrets, timestamp, body),
        SORTED_KEY_HEADER: sign_sha256_body(secrets[-1], body),
    }
    if standard_webhooks:
        headers.update(standard_webhooks_headers(secrets, event_id, timestamp, body))
    return headers


# ---- ed25519 (Standard Webhooks v1a) -------------------------------------------------------


def _private_key(private_key: str) -> Ed25519PrivateKey:
    if not private_key.startswith(PRIVATE_KEY_PREFIX):
        # An HMAC secret here would mean a mixed-up endpoint: refuse rather than guess.
        raise ValueError(f"an ed25519 private key starts with {PRIVATE_KEY_PREFIX!r}")
    raw = base64.b64decode(private_key.removeprefix(PRIVATE_KEY_PREFIX), validate=True)
    return Ed25519PrivateKey.from_private_bytes(raw)


def generate_ed25519_key(rng_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """``whsk_`` + base64 of a 32-byte ed25519 private key (the RFC 8032 seed)."""
    raw = rng_bytes(ED25519_KEY_BYTES)
    if len(raw) != ED25519_KEY_BYTES:
        raise ValueError(f"rng_bytes returned {len(raw)} bytes, wanted {ED25519_KEY_BYTES}")
    return PRIVATE_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def ed25519_public_key(private_key: str) -> str:
    """``whpk_`` + base64 of the raw 32-byte public key: what receivers verify with."""
    public = _private_key(private_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(public).decode("ascii")


def sign_v1a(private_keys: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature`` value: one ``v1a,<base64>`` per key, space separated.

    Ed25519 (RFC 8032) signatures are deterministic, so this stays pure and testable by
    known answers, like the HMAC schemes.
    """
    _require_secrets(private_keys)
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    return " ".join(
        "v1a," + base64.b64encode(_private_key(k).sign(signed)).decode("ascii")
        for k in private_keys
    )


def ed25519_headers(
    private_keys: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Standard Webhooks headers signed with ed25519; ``msg_id`` is the event id."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": sign_v1a(private_keys, msg_id, timestamp, body),
    }


def generate_secret(rng_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """``whsec_`` + 32 base64 chars (24 random bytes): valid for every scheme above."""
    raw = rng_bytes(SECRET_RANDOM_BYTES)
    if len(raw) != SECRET_RANDOM_BYTES:
        raise ValueError(f"rng_bytes returned {len(raw)} bytes, wanted {SECRET_RANDOM_BYTES}")
    return SECRET_PREFIX + base64.b64encode(raw).decode("ascii")
