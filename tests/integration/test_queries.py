"""Every named query PREPAREs against the migrated schema: a renamed column fails here."""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import asyncpg
import pytest

from dispatcher.db import queries


def _statements(module: ModuleType) -> dict[str, str]:
    """*_COLUMNS and *_CTE are fragments of the statements, not statements."""
    return {
        name: value
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and not name.endswith(("_COLUMNS", "_CTE"))
    }


AREAS = [
    importlib.import_module(f"{queries.__name__}.{m.name}")
    for m in pkgutil.iter_modules(queries.__path__)
]
NAMED = {name: sql for area in AREAS for name, sql in _statements(area).items()}


def test_every_statement_of_every_area_is_re_exported() -> None:
    """Callers write `queries.X`: a statement missing from the package, or two areas naming
    two statements alike (one would shadow the other), fails here."""
    assert {m.__name__.rsplit(".", 1)[1] for m in AREAS} >= {"queue", "ingest", "history"}
    assert sum(len(_statements(area)) for area in AREAS) == len(NAMED)
    assert _statements(queries) == NAMED


@pytest.mark.parametrize("name", sorted(NAMED))
async def test_query_prepares(pool: asyncpg.Pool, name: str) -> None:
    async with pool.acquire() as conn:
        await conn.prepare(NAMED[name])


async def test_claim_uses_the_partial_queue_index(pool: asyncpg.Pool) -> None:
    """On the pending-only per-endpoint index, claim cost does not grow with settled history."""
    async with pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")
        values = {
            "1": "now()",
            "2": "256",
            "3": "64",
            "4": "16",
            "5": "5",
            "6": "now() + interval '1 minute'",
            "7": "''",
            "8": "1",
            "9": "'{}'::text[]",
            "10": "'{}'::int[]",
            "11": "32",
            "12": "1",
            "13": "8",
            "14": "100000",
            "15": "20000",
            "16": "'{}'::text[]",
            "17": "'{}'::int[]",
        }
        sql = re.sub(r"\$(\d+)", lambda m: values[m.group(1)], queries.CLAIM_DELIVERIES)
        plan = await conn.fetch("EXPLAIN " + sql)
        await conn.execute("RESET enable_seqscan")
    text = "\n".join(r[0] for r in plan)
    # the per-endpoint queue index serves the loose scan, the heads and the picks
    assert "delivery_queue_due" in text, text
    assert "Seq Scan on delivery_queue" not in text, text
