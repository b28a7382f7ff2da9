"""Migrations: fresh apply, no-op re-run, edited file refused, concurrent runs serialized."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from dispatcher.db.migrate import ensure_migrated, load_migrations, migrate, migrations_dir
from dispatcher.errors import DatabaseNotMigrated, MigrationError


async def test_fresh_database_is_refused_then_migrated(scratch_url: str) -> None:
    conn = await asyncpg.connect(scratch_url)
    try:
        with pytest.raises(DatabaseNotMigrated, match="dispatcher migrate"):
            await ensure_migrated(conn)
        applied = await migrate(conn)
        assert applied == [m.name for m in load_migrations()]
        await ensure_migrated(conn)
        assert await migrate(conn) == []
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {
            "tenants",
            "api_keys",
            "endpoints",
            "endpoint_secrets",
            "events",
            "delivery_queue",
            "delivery_outcomes",
            "endpoint_state",
            "workers",
            "attempts",
            "mailings",
            "idempotency_keys",
            "schema_migrations",
        } <= tables
    finally:
        await conn.close()


async def test_edited_migration_is_refused(scratch_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), folder)
    conn = await asyncpg.connect(scratch_url)
    try:
        await migrate(conn, folder)
        first = sorted(folder.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await migrate(conn, folder)
    finally:
        await conn.close()


async def test_failed_migration_rolls_back_and_is_not_recorded(
    scratch_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), folder)
    (folder / "999_broken.sql").write_text("CREATE TABLE half_done (id int); SELECT 1/0;")
    conn = await asyncpg.connect(scratch_url)
    try:
        with pytest.raises(MigrationError, match=r"999_broken\.sql failed"):
            await migrate(conn, folder)
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        names = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        assert "999_broken.sql" not in names
    finally:
        await conn.close()


async def test_concurrent_migrate_applies_each_file_once(scratch_url: str) -> None:
    conns = [await asyncpg.connect(scratch_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = [name for result in results for name in result]
        assert sorted(applied) == sorted(m.name for m in load_migrations())
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(load_migrations())
    finally:
        for c in conns:
            await c.close()
