"""Migration 004 upgrades a database written through the 003 schema in place: live
deliveries keep their schedule and attempt counts, the rest moves to the partitioned history,
and the upgraded queue is claimable at once."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from dispatcher import sealing
from dispatcher.db.migrate import migrate, migrations_dir
from dispatcher.queue import QueueLimits, claim
from dispatcher.store.secrets import reseal_legacy

T0 = datetime(2026, 5, 9, 10, 0, tzinfo=UTC)  # two days before the fake clock's default
T1 = datetime(2026, 5, 10, 23, 30, tzinfo=UTC)


FILL_003 = """
INSERT INTO tenants VALUES ('ten_1', 'ACME', $1);
INSERT INTO endpoints (id, tenant_id, environment, url, event_types, created_at, updated_at,
                       in_flight, consecutive_failures, circuit_open_until)
VALUES ('ep_1', 'ten_1', 'sandbox', 'http://127.0.0.1:9/a', '{*}', $1, $1, 2, 3, NULL),
       ('ep_2', 'ten_1', 'sandbox', 'http://127.0.0.1:9/b', '{*}', $1, $1, 0, 6,
        $2 + interval '1 hour');
INSERT INTO endpoint_secrets (endpoint_id, secret, created_at)
VALUES ('ep_1', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', $1);
INSERT INTO events VALUES
    ('evt_old', 'ten_1', 'sandbox', 'mailing.created', 'ml_1', $1, $1, '{"n":1}'),
    ('evt_new', 'ten_1', 'sandbox', 'mailing.printed', 'ml_1', $2, $2, '{"n":2}');
INSERT INTO mailings VALUES ('ten_1', 'sandbox', 'ml_1', 'printed', 'standard', 'evt_new', $2);
-- 1 pending, replayed once, 2 attempts; 2 in flight; 3 succeeded; 4 dead; 5 pending, new
INSERT INTO deliveries (event_id, endpoint_id, status, attempts, next_attempt_at,
                        lease_expires_at, created_at, completed_at, last_status_code,
                        last_outcome, replayed_at, attempts_before_replay)
OVERRIDING SYSTEM VALUE
SELECT * FROM (VALUES
    ('evt_old', 'ep_1', 'pending', 2, $2 + interval '90 seconds', NULL::timestamptz, $1,
     NULL::timestamptz, 500, 'http_5xx', $2 - interval '1 minute', 1),
    ('evt_new', 'ep_1', 'in_flight', 1, $2, $2 + interval '60 seconds', $2, NULL, NULL, NULL,
     NULL, 0),
    ('evt_old', 'ep_2', 'succeeded', 1, $1, NULL, $1, $1 + interval '1 second', 200, 'success',
     NULL, 0),
    ('evt_new', 'ep_2', 'dead', 3, $2, NULL, $2, $2 + interval '5 minutes', 500, 'http_5xx',
     NULL, 0)) AS v;
INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, outcome, status_code)
VALUES (1, 1, $1, 3.5, 'http_5xx', 500), (1, 2, $2 - interval '1 minute', 2.5, 'http_5xx', 500),
       (3, 1, $1, 1.0, 'success', 200), (4, 1, $2, 1, 'http_5xx', 500),
       (4, 2, $2, 1, 'http_5xx', 500), (4, 3, $2, 1, 'http_5xx', 500);
"""


async def test_004_upgrades_a_003_database_in_place(scratch_url: str, tmp_path: Path) -> None:
    old = tmp_path / "migrations"
    old.mkdir()
    for path in sorted(migrations_dir().glob("00[123]_*.sql")):
        shutil.copy(path, old / path.name)
    conn = await asyncpg.connect(scratch_url)
    try:
        assert await migrate(conn, old) == [p.name for p in sorted(old.glob("*.sql"))]
        script = FILL_003.replace("$1", f"'{T0.isoformat()}'::timestamptz")
        await conn.execute(script.replace("$2", f"'{T1.isoformat()}'::timestamptz"))

        applied = await migrate(conn)
        assert "004_engine_v2.sql" in applied

        queue = {r["id"]: r for r in await conn.fetch("SELECT * FROM delivery_queue")}
        assert set(queue) == {1, 2}
        pending = queue[1]
        assert pending["worker_id"] is None
        assert pending["next_attempt_at"] == T1 + timedelta(seconds=90)  # schedule kept
        assert pending["attempts"] == 2 and pending["attempts_before_replay"] == 1
        assert pending["age_origin"] == T1 - timedelta(minutes=1)  # the replay's fresh window
        assert pending["event_created_at"] == T0 and pending["tenant_id"] == "ten_1"
        held = queue[2]  # in flight under 003: back to pending, its attempt count kept
        assert held["worker_id"] is None and held["attempts"] == 1

        states = {r["id"]: r["status"] for r in await conn.fetch("SELECT * FROM deliveries")}
        assert states == {1: "pending", 2: "pending", 3: "succeeded", 4: "dead"}
        attempts = await conn.fetch(
            "SELECT delivery_id, attempt FROM attempts ORDER BY delivery_id, attempt"
        )
        assert [(r[0], r[1]) for r in attempts] == [(1, 1), (1, 2), (3, 1), (4, 1), (4, 2), (4, 3)]

        state = {r["endpoint_id"]: r for r in await conn.fetch("SELECT * FROM endpoint_state")}
        assert state["ep_1"]["in_flight"] == 0  # nothing is in flight after the upgrade
        assert state["ep_1"]["consecutive_failures"] == 3
        assert state["ep_2"]["circuit_open_until"] == T1 + timedelta(hours=1)

        partitions = {
            r[0]
            for r in await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events'"
            )
        }
        assert {"events_p20260509", "events_p20260510"} <= partitions
        assert await conn.fetchval("SELECT count(*) FROM events") == 2
        mailing = await conn.fetchrow("SELECT last_event_id, status FROM mailings")
        assert tuple(mailing) == ("evt_new", "printed")
        assert await conn.fetchval("SELECT nextval('delivery_ids')") == 5

        # the upgraded queue works (once start-up has sealed the secrets written before
        # encryption at rest): at its due time the replayed delivery is claimed with its
        # attempt count and backoff step carried over
        await reseal_legacy(conn, sealing.current())
        claimed = await claim(conn, T1 + timedelta(seconds=90), 10, QueueLimits(), worker_id=0)
        by_id = {j.delivery_id: j for j in claimed}
        assert by_id[1].attempt == 3 and by_id[1].backoff_step == 2
        assert by_id[1].body == b'{"n":1}' and by_id[1].secrets
    finally:
        await conn.close()
