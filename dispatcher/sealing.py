"""Secrets at rest: values sealed with AES-256-GCM under DISPATCHER_ENCRYPTION_KEY.

A sealed value is the text ``v1:<key id>:<base64(nonce || ciphertext || tag)>``. The key id
(12 hex characters of a hash of the key) travels with every value, so a keyring holding the
current key and the old ones (DISPATCHER_ENCRYPTION_OLD_KEYS) reads values sealed under any
of them while `dispatcher secrets rekey` moves everything to the current one. Each value is
bound to where it is stored (the associated data names its kind and its endpoint), so a
ciphertext copied onto another endpoint's row does not open.

The process installs its keyring once at start-up (`install`), after checking it opens what
the database holds; the store reads it with `current()`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dispatcher.errors import ConfigError

KEY_VARIABLE = "DISPATCHER_ENCRYPTION_KEY"
OLD_KEYS_VARIABLE = "DISPATCHER_ENCRYPTION_OLD_KEYS"
KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = "v1"


class SealError(Exception):
    """A sealed value cannot be opened: unknown key id, tampered or misplaced ciphertext."""


def parse_key(text: str, variable: str = KEY_VARIABLE) -> bytes:
    """32 bytes from base64 (standard or URL-safe, padding optional); names the variable."""
    cleaned = text.strip()
    try:
        raw = base64.urlsafe_b64decode(
            cleaned.replace("+", "-").replace("/", "_") + "=" * (-len(cleaned) % 4)
        )
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ConfigError(
            f"{variable}: must be {KEY_BYTES} random bytes in base64 "
            "(generate one with `dispatcher secrets generate-key`)"
        )
    return raw


def valid_key(text: str) -> bool:
    try:
        parse_key(text)
    except ConfigError:
        return False
    return True


def generate_key() -> str:
    """A new key, as DISPATCHER_ENCRYPTION_KEY takes it."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"bjet24-dispatcher-key-id\x00" + key).hexdigest()[:12]


def key_id_of(sealed: str) -> str | None:
    """The key id a sealed value names, or None for a value that is not sealed."""
    version, sep, rest = sealed.partition(":")
    if version != VERSION or not sep:
        return None
    kid, sep, _ = rest.partition(":")
    return kid if sep else None


def is_sealed(value: str) -> bool:
    return key_id_of(value) is not None


@dataclass(frozen=True)
class Keyring:
    """The key that seals, and every key that may still open."""

    key: bytes = field(repr=False)
    old_keys: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def current_id(self) -> str:
        return key_id(self.key)

    def known_ids(self) -> set[str]:
        return {key_id(k) for k in (self.key, *self.old_keys)}

    def _cipher(self, kid: str) -> AESGCM:
        for k in (self.key, *self.old_keys):
            if key_id(k) == kid:
                return AESGCM(k)
        raise SealError(f"sealed under key {kid}, which is not configured")

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        body = AESGCM(self.key).encrypt(nonce, plaintext.encode(), context.encode())
        encoded = base64.b64encode(nonce + body).decode()
        return f"{VERSION}:{self.current_id}:{encoded}"

    def open(self, sealed: str, context: str) -> str:
        kid = key_id_of(sealed)
        if kid is None:
            raise SealError("the value is not sealed")
        try:
            raw = base64.b64decode(sealed.rsplit(":", 1)[1], validate=True)
            plain = self._cipher(kid).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()
            )
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise SealError("the sealed value does not open (tampered or misplaced)") from exc
        return plain.decode()


def keyring_from(key_text: str, old_texts: Iterable[str] = ()) -> Keyring:
    return Keyring(
        parse_key(key_text),
        tuple(parse_key(t, OLD_KEYS_VARIABLE) for t in old_texts if t.strip()),
    )


_installed: list[Keyring] = []


def install(keyring: Keyring) -> None:
    """The process's keyring, from now on (start-up, or a test session)."""
    _installed[:] = [keyring]


def current() -> Keyring:
    if not _installed:
        raise RuntimeError("no encryption keyring installed: the process skipped its start-up")
    return _installed[0]
