"""Our signatures checked the way a careful receiver checks them: for `dispatcher receive`
and the tests. Pure: the clock is a parameter.

A verdict tells the cases apart because receivers answer them differently (docs/receiving.md):
a missing or malformed header or a stale timestamp is a 400, a signature that matches none
of the secrets or keys held is a 401.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dispatcher.signing import DEFAULT_TOLERANCE_SECONDS, PUBLIC_KEY_PREFIX


class Verdict(StrEnum):
    OK = "ok"
    MALFORMED = "malformed"  # header missing or unreadable
    STALE = "stale"  # timestamp outside the tolerance, either way
    MISMATCH = "mismatch"  # well formed and fresh, but no signature matches

    @property
    def status(self) -> int:
        """What a receiver answers: 200, 400 for a bad request, 401 for a bad signature."""
        return {"ok": 200, "mismatch": 401}.get(self.value, 400)


def _parse_v1_header(header: str) -> tuple[int, list[str]] | None:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return None
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return None
    return timestamp, signatures


def check_v1(
    header: str,
    secrets: Sequence[str],
    body: bytes,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> Verdict:
    """``X-Bjet24-Signature``: any ``v1`` matching any secret held passes."""
    parsed = _parse_v1_header(header)
    if parsed is None or isinstance(secrets, str):
        return Verdict.MALFORMED
    timestamp, signatures = parsed
    if abs(now - timestamp) > tolerance:
        return Verdict.STALE
    signed = str(timestamp).encode("ascii") + b"." + body
    expected = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    # Compare all pairs without early exit: no timing hint about which secret matched.
    matched = False
    for candidate in signatures:
        for want in expected:
            matched |= hmac.compare_digest(candidate.encode("ascii", "replace"), want.encode())
    return Verdict.OK if matched else Verdict.MISMATCH


def verify_v1(
    header: str,
    secrets: Sequence[str],
    body: bytes,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """``check_v1`` for callers that only need yes or no."""
    return check_v1(header, secrets, body, now, tolerance) is Verdict.OK


def public_key(whpk: str) -> Ed25519PublicKey:
    """The key behind a ``whpk_`` string; ValueError when it is not one."""
    if not whpk.startswith(PUBLIC_KEY_PREFIX):
        raise ValueError(f"an ed25519 public key starts with {PUBLIC_KEY_PREFIX!r}")
    try:
        raw = base64.b64decode(whpk.removeprefix(PUBLIC_KEY_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("an ed25519 public key is base64 after its prefix") from None
    return Ed25519PublicKey.from_public_bytes(raw)  # ValueError unless 32 bytes


def check_v1a(
    headers: Mapping[str, str],
    public_keys: Sequence[Ed25519PublicKey],
    body: bytes,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> Verdict:
    """Standard Webhooks ``v1a``: any entry verifying with any public key held passes.

    ``headers`` must be keyed in lower case (``webhook-id``, ...).
    """
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not msg_id or not timestamp.isdigit() or not signatures:
        return Verdict.MALFORMED
    if abs(now - int(timestamp)) > tolerance:
        return Verdict.STALE
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for entry in signatures.split(" "):
        version, _, encoded = entry.partition(",")
        if version != "v1a":
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        for key in public_keys:
            try:
                key.verify(signature, signed)
                return Verdict.OK
            except InvalidSignature:
                continue
    return Verdict.MISMATCH
