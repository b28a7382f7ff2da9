"""Every secret value the database keeps goes in and out through this module, sealed.

- ``seal_secret`` / ``open_secret``: THE pair for signing material (HMAC secrets, and any
  other per-endpoint private key): every write of ``endpoint_secrets`` seals through the
  first, every read opens through the second.
- ``split_url`` / ``join_url``: an endpoint URL is stored without its ``user:password``,
  which is kept sealed in ``endpoints.url_credentials``.
- ``load_keyring``: the start-up check. A key that cannot open what the database holds
  stops the process naming the variable; with no key configured, one is generated once in
  DATA_DIR, but never when sealed data exists (that would lose every secret).
- ``reseal``: `dispatcher secrets rekey` and the start-up upgrade of legacy plain rows:
  re-seals, in short batches, every value not yet under the current key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from dispatcher import sealing
from dispatcher.db import queries as q
from dispatcher.errors import ConfigError
from dispatcher.sealing import KEY_VARIABLE, OLD_KEYS_VARIABLE, Keyring, SealError
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE = "encryption.key"
RESEAL_BATCH = 500


def seal_secret(endpoint_id: str, value: str) -> str:
    """What `endpoint_secrets.secret` stores for this endpoint's signing material."""
    return sealing.current().seal(value, f"endpoint_secret:{endpoint_id}")


def open_secret(endpoint_id: str, stored: str) -> str:
    return sealing.current().open(stored, f"endpoint_secret:{endpoint_id}")


def _seal_credentials(keyring: Keyring, endpoint_id: str, userinfo: str) -> str:
    return keyring.seal(userinfo, f"url_credentials:{endpoint_id}")


def seal_credentials(endpoint_id: str, userinfo: str) -> str:
    return _seal_credentials(sealing.current(), endpoint_id, userinfo)


def open_credentials(endpoint_id: str, stored: str) -> str:
    return sealing.current().open(stored, f"url_credentials:{endpoint_id}")


def split_url(url: str) -> tuple[str, str | None]:
    """(the URL without userinfo, the userinfo or None); string surgery, byte-exact."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url, None
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    userinfo, at, hostport = rest[:end].rpartition("@")
    if not at:
        return url, None
    return f"{scheme}://{hostport}{rest[end:]}", userinfo


def join_url(url: str, userinfo: str | None) -> str:
    if userinfo is None:
        return url
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{userinfo}@{rest}"


def store_url(endpoint_id: str, url: str) -> tuple[str, str | None]:
    """(url column, url_credentials column) for a URL as the tenant gave it."""
    bare, userinfo = split_url(url)
    return bare, seal_credentials(endpoint_id, userinfo) if userinfo is not None else None


def stored_url(endpoint_id: str, url: str, credentials: str | None) -> str:
    """The URL as the tenant gave it, credentials and all (to send to, or to redact)."""
    if credentials is None:
        return url
    return join_url(url, open_credentials(endpoint_id, credentials))


# ---- start-up -----------------------------------------------------------------------------


def _key_from_file(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _write_key_file(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as sink:
        sink.write(key + "\n")


async def load_keyring(conn: asyncpg.Connection, settings: Settings) -> Keyring:
    """The keyring this process must use; ConfigError naming the variable when it cannot be.

    Every key id found in the database must be the current key's or one of the old keys':
    a wrong key fails here, at start-up, not at the first delivery.
    """
    in_use = {r["key_id"] for r in await conn.fetch(q.SEALED_KEY_IDS)}
    olds = settings.encryption_old_keys.get_secret_value() if settings.encryption_old_keys else ""
    if settings.encryption_key is not None:
        keyring = sealing.keyring_from(settings.encryption_key.get_secret_value(), olds.split(","))
    else:
        path = settings.data_dir / KEY_FILE
        text = _key_from_file(path)
        if text is None:
            if in_use:
                raise ConfigError(
                    f"{KEY_VARIABLE} is not set and {path} does not exist, but the database "
                    "holds encrypted secrets: set it to the key they were encrypted with"
                )
            text = sealing.generate_key()
            _write_key_file(path, text)
            log.warning(f"generated an encryption key in {path}; back it up")
        if settings.database_url is not None:
            log.warning(
                f"{KEY_VARIABLE} is not set: using the key in {path}; every process sharing "
                f"this database needs the same key, so set {KEY_VARIABLE} instead"
            )
        try:
            keyring = sealing.keyring_from(text, olds.split(","))
        except ConfigError:
            raise ConfigError(f"{path} does not hold a valid encryption key") from None
    unknown = in_use - keyring.known_ids()
    if unknown:
        raise ConfigError(
            f"{KEY_VARIABLE}: the database holds secrets encrypted under key id(s) "
            f"{', '.join(sorted(unknown))}, which neither {KEY_VARIABLE} (key id "
            f"{keyring.current_id}) nor {OLD_KEYS_VARIABLE} provides"
        )
    return keyring


# ---- re-sealing ---------------------------------------------------------------------------


@dataclass
class ResealReport:
    secrets: int = 0
    credentials: int = 0
    unreadable: int = 0


async def reseal(
    conn: asyncpg.Connection,
    keyring: Keyring,
    *,
    batch: int = RESEAL_BATCH,
    progress: Callable[[ResealReport], None] | None = None,
    legacy_only: bool = False,
) -> ResealReport:
    """Seal under the current key every value that is not yet (with `legacy_only`, only the
    plain values written before migration 006): one short statement per row, compare-and-set
    on the value read, so a concurrent rotation or edit is never undone."""
    report = ResealReport()
    keep = f"{sealing.VERSION}:%" if legacy_only else f"{sealing.VERSION}:{keyring.current_id}:%"
    after = 0
    while rows := await conn.fetch(q.SECRETS_TO_SEAL, keep, after, batch):
        for row in rows:
            after = row["id"]
            context = f"endpoint_secret:{row['endpoint_id']}"
            value = row["secret"]
            try:
                plain = keyring.open(value, context) if sealing.is_sealed(value) else value
            except SealError:
                report.unreadable += 1
                continue
            done = await conn.execute(
                q.RESEAL_SECRET, row["id"], value, keyring.seal(plain, context)
            )
            report.secrets += done.endswith(" 1")
        if progress:
            progress(report)
    last_id = ""
    while rows := await conn.fetch(q.CREDENTIALS_TO_SEAL, keep, last_id, batch):
        for row in rows:
            last_id = row["id"]
            url, sealed = row["url"], row["url_credentials"]
            context = f"url_credentials:{row['id']}"
            if sealed is None:
                bare, userinfo = split_url(url)
                if userinfo is None:
                    continue
            else:
                bare = url
                try:
                    userinfo = keyring.open(sealed, context)
                except SealError:
                    report.unreadable += 1
                    continue
            done = await conn.execute(
                q.RESEAL_CREDENTIALS, row["id"], url, sealed, bare, keyring.seal(userinfo, context)
            )
            report.credentials += done.endswith(" 1")
        if progress:
            progress(report)
    return report


async def reseal_legacy(conn: asyncpg.Connection, keyring: Keyring) -> int:
    """Seal what was stored in plain text before migration 006 (start-up)."""
    report = await reseal(conn, keyring, legacy_only=True)
    return report.secrets + report.credentials
