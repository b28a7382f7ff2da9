"""Ingest: locking and reading the reported mailings, writing events and their fan-out."""

from dispatcher.db.queries.usage import USAGE_EVENTS_CTE

# ---- mailings and events (ingest) ---------------------------------------------------------

# $1 lock keys (bigint[]) -> serializes writers of the same mailings; sorted to avoid deadlocks
LOCK_MAILINGS = """
SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT unnest($1::bigint[]) AS k ORDER BY 1) s
"""

# $1 tenant ids (distinct), $2 tenant_ids, $3 environments, $4 mailing_ids (parallel arrays)
# -> a row per live tenant of $1 (mailing_id NULL), then a row per stored mailing: what ingest
# judges the reported transitions against, in one round trip.
# One primary-key lookup per reported mailing, whatever the statistics: the LATERAL ... LIMIT 1
# is never flattened into a join, so a plan cached while `mailings` was small (a fresh or
# emptied table: a process that starts before the load) cannot become a hash join over a
# sequential scan of the whole table.
READ_INGEST = """
SELECT t.id AS tenant_id, NULL::text AS environment, NULL::text AS mailing_id,
       NULL::text AS status, NULL::text AS mail_type, NULL::text AS last_event_id
FROM tenants t WHERE t.id = ANY($1::text[]) AND t.deleted_at IS NULL
UNION ALL
SELECT m.tenant_id, m.environment, m.mailing_id, m.status, m.mail_type, m.last_event_id
FROM unnest($2::text[], $3::text[], $4::text[]) AS k (tenant_id, environment, mailing_id)
CROSS JOIN LATERAL (
    SELECT * FROM mailings m
    WHERE m.tenant_id = k.tenant_id AND m.environment = k.environment
      AND m.mailing_id = k.mailing_id
    LIMIT 1
) m
"""

# ---- writing accepted transitions -------------------------------------------------------

# Writes a batch of accepted transitions in ONE statement: the mailings' new status (one row
# per mailing: the caller keeps each mailing's last transition), the events, and one delivery
# per matching live endpoint (an endpoint whose circuit is open starts when it closes);
# NOTIFYs the workers when there is anything to deliver (it fires on commit).
# A mailing is written only if it still is what the caller read ($15: its last event id,
# NULL for a new one) and its tenant is live, and only written mailings' events are: a
# concurrent change leaves that mailing (and, for one mailing, the whole statement) unwritten,
# and the caller reads again. The mailings' advisory locks ($16) are taken first, so a writer
# holding them in a transaction (LOCK_MAILINGS, then READ_INGEST) is never overtaken; that
# writer passes none ($16 empty), holding them already.
# Events: $1 ids, $2 tenant_ids, $3 environments, $4 event_types, $5 mailing_ids,
#   $6 occurred_ats, $7 bodies. $8 now (created_at, and when deliveries fall due).
# Mailings: $9 tenant_ids, $10 environments, $11 mailing_ids, $12 statuses, $13 mail_types,
#   $14 last event ids, $15 the last event ids read, as a JSON object (text) keyed by
#   tenant_id, environment and mailing_id joined by U+001F (null: none; a keyed lookup, where
#   a scan of the arrays per updated mailing made a batch of updates quadratic; parsed once,
#   in a sub-select, since a cached generic plan would cast the parameter again per row),
#   $16 lock keys (bigint[]),
#   $17 per mailing of $9.., a lock key to TRY instead (bigint[], or empty): a mailing whose
#   lock another session holds is then not written, rather than waited for (group commit:
#   one busy mailing must not hold up the others of its batch).
# -> deliveries created, mailings written, the written mailings' (tenant_id, environment,
#    mailing_id) when not all were, events written
WRITE_EVENTS = (
    """
WITH locked AS (
    SELECT count(pg_advisory_xact_lock(k)) AS n
    FROM (SELECT DISTINCT unnest($16::bigint[]) AS k ORDER BY 1) s
),
mailings_now AS (
    INSERT INTO mailings (tenant_id, environment, mailing_id, status, mail_type, last_event_id, updated_at)
    SELECT t.tenant_id, t.environment, t.mailing_id, t.status, t.mail_type, t.event_id, $8
    FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                $17::bigint[])
         AS t (tenant_id, environment, mailing_id, status, mail_type, event_id, try_key)
    JOIN tenants tn ON tn.id = t.tenant_id AND tn.deleted_at IS NULL
    CROSS JOIN locked
    WHERE t.try_key IS NULL OR pg_try_advisory_xact_lock(t.try_key)
    ON CONFLICT (tenant_id, environment, mailing_id) DO UPDATE SET
        status = EXCLUDED.status, mail_type = EXCLUDED.mail_type,
        last_event_id = EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at
    WHERE mailings.last_event_id IS NOT DISTINCT FROM (SELECT $15::text::jsonb) ->> (
        mailings.tenant_id || chr(31) || mailings.environment || chr(31) || mailings.mailing_id)
    RETURNING tenant_id, environment, mailing_id
),
new_events AS (
    INSERT INTO events (id, tenant_id, environment, event_type, mailing_id, occurred_at,
                        created_at, body)
    SELECT t.id, t.tenant_id, t.environment, t.event_type, t.mailing_id, t.occurred_at, $8, t.body
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                $7::bytea[]) AS t (id, tenant_id, environment, event_type, mailing_id, occurred_at, body)
    JOIN mailings_now w
      ON w.tenant_id = t.tenant_id AND w.environment = t.environment AND w.mailing_id = t.mailing_id
    RETURNING id, tenant_id, environment, event_type, mailing_id
),
fanned AS (
    -- in event order, so that delivery ids follow it (ordering per mailing relies on that)
    INSERT INTO delivery_queue (endpoint_id, tenant_id, event_id, event_created_at, created_at,
                                next_attempt_at, age_origin, mailing_id)
    SELECT ep.id, ev.tenant_id, ev.id, $8, $8, $8, $8,
           CASE WHEN ep.ordering = 'mailing' THEN ev.mailing_id END
    FROM new_events ev
    JOIN unnest($1::text[]) WITH ORDINALITY AS o (id, n) ON o.id = ev.id
    JOIN endpoints ep
      ON ep.tenant_id = ev.tenant_id AND ep.environment = ev.environment
     AND ep.enabled AND ep.deleted_at IS NULL
     AND ep.event_types && ARRAY['*', split_part(ev.event_type, '.', 1) || '.*', ev.event_type]
    ORDER BY o.n, ep.id
    RETURNING 1
),"""
    + USAGE_EVENTS_CTE.format(now="$8")
    + """,
created AS (SELECT count(*)::int AS n FROM fanned)
SELECT n AS deliveries,
       (SELECT count(*)::int FROM mailings_now) AS mailings,
       CASE WHEN (SELECT count(*) FROM mailings_now) < cardinality($9::text[]) THEN
           (SELECT array_agg(ARRAY[tenant_id, environment, mailing_id]) FROM mailings_now)
       END AS written,
       (SELECT count(*)::int FROM new_events) AS events,
       CASE WHEN n > 0 THEN pg_notify('dispatcher_deliveries', '') END AS notified
FROM created
"""
)

# wakes every listening worker; sent inside the ingest transaction, so it fires on commit
NOTIFY_DELIVERIES = "SELECT pg_notify('dispatcher_deliveries', '')"
