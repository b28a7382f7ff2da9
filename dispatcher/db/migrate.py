"""Numbered SQL migrations, each applied once, in its own transaction, under a blocking lock."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from dispatcher.errors import DatabaseNotMigrated, MigrationError

# Any constant works; it only has to be the same in every process of this product.
_LOCK_KEY = 0x6A657432_0001
_NAME = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    """Installed wheels carry the files inside the package; a checkout has them at the top."""
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    folder = directory or migrations_dir()
    if not folder.is_dir():
        raise MigrationError(f"migrations folder not found: {folder}")
    found = []
    for path in sorted(folder.glob("*.sql")):
        if not _NAME.match(path.name):
            raise MigrationError(f"migration file name not of the form NNN_name.sql: {path.name}")
        found.append(Migration(path.name, path.read_text(encoding="utf-8")))
    numbers = [m.name.split("_", 1)[0] for m in found]
    if len(set(numbers)) != len(numbers):
        raise MigrationError("two migration files share a number")
    return found


async def _applied(conn: asyncpg.Connection) -> dict[str, str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT name, checksum FROM schema_migrations")
    return {r["name"]: r["checksum"] for r in rows}


def _check_checksums(applied: dict[str, str], files: list[Migration]) -> None:
    by_name = {m.name: m for m in files}
    for name, checksum in applied.items():
        migration = by_name.get(name)
        if migration is None:
            raise MigrationError(f"applied migration {name} is missing from the migrations folder")
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {name} was edited after it was applied; add a new file instead"
            )


async def migrate(conn: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    """Apply what is missing and return the names applied; a no-op when up to date."""
    files = load_migrations(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_BOOKKEEPING)
        applied = await _applied(conn)
        _check_checksums(applied, files)
        done = []
        for migration in files:
            if migration.name in applied:
                continue
            async with conn.transaction():
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {migration.name} failed: {exc}") from exc
                await conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                    migration.name,
                    migration.checksum,
                )
            done.append(migration.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def pending(conn: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    files = load_migrations(directory)
    applied = await _applied(conn)
    _check_checksums(applied, files)
    return [m.name for m in files if m.name not in applied]


async def ensure_migrated(conn: asyncpg.Connection) -> None:
    missing = await pending(conn)
    if missing:
        raise DatabaseNotMigrated(
            f"database is not migrated ({len(missing)} pending: {', '.join(missing)}); "
            "run 'dispatcher migrate' or start with --migrate"
        )
