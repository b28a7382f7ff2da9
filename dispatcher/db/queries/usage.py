"""Usage counters: the CTEs that ingest and settle bump, and the per-day read."""

# ---- usage counters (GET /internal/v1/tenants/{id}/usage) ----------------------------------
# Bumped inside the ingest and settle statements (no extra round trip), into the row of the
# database session (shard = backend pid) for the UTC day of `now`: no two live sessions share a
# row, so a transaction left open (a platform's outbox) never holds up another session's
# counting. Rows are grouped and sorted before the upsert, so a statement locks them in order.
# Housekeeping folds the rows of closed days into shard 0 (FOLD_USAGE); a read sums a day's rows.

# the shard of a folded row: no backend has pid 0
FOLDED_SHARD = 0

# a CTE for WRITE_EVENTS: counts `new_events` (tenant_id, environment) at day_param
USAGE_EVENTS_CTE = """
usage_events AS (
    INSERT INTO usage_daily AS u (tenant_id, environment, day, shard, events_accepted)
    SELECT tenant_id, environment, (({now})::timestamptz AT TIME ZONE 'UTC')::date,
           pg_backend_pid(), count(*)
    FROM new_events GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (tenant_id, day, environment, shard)
    DO UPDATE SET events_accepted = u.events_accepted + EXCLUDED.events_accepted
)"""

# a CTE for SETTLE: the batch's counts per tenant and environment, computed by the worker
# ($23 tenant ids, $24 environments, $25 deliveries succeeded, $26 failed attempts, $27 dead
# letters), at {now}; {after} may name the CTE it must follow
USAGE_SETTLED_CTE = """
usage_settled AS (
    INSERT INTO usage_daily AS u (tenant_id, environment, day, shard, deliveries_succeeded,
                                  failed_attempts, dead_letters)
    SELECT c.tenant_id, c.environment, (({now})::timestamptz AT TIME ZONE 'UTC')::date,
           pg_backend_pid(), c.succeeded, c.failed, c.dead
    FROM unnest($23::text[], $24::text[], $25::int[], $26::int[], $27::int[])
         AS c (tenant_id, environment, succeeded, failed, dead) {after}
    ORDER BY 1, 2
    ON CONFLICT (tenant_id, day, environment, shard)
    DO UPDATE SET deliveries_succeeded = u.deliveries_succeeded + EXCLUDED.deliveries_succeeded,
                  failed_attempts = u.failed_attempts + EXCLUDED.failed_attempts,
                  dead_letters = u.dead_letters + EXCLUDED.dead_letters
)"""

# $1 tenant_id, $2 first day, $3 last day (inclusive) -> per day and environment
USAGE = """
SELECT day, environment, sum(events_accepted)::bigint AS events_accepted,
       sum(deliveries_succeeded)::bigint AS deliveries_succeeded,
       sum(failed_attempts)::bigint AS failed_attempts,
       sum(dead_letters)::bigint AS dead_letters
FROM usage_daily
WHERE tenant_id = $1 AND day BETWEEN $2 AND $3
GROUP BY day, environment
ORDER BY day, environment
"""

# $1 the first day not folded (today, UTC) -> the rows folded. A closed day's per-session rows
# become one row per tenant and environment (shard 0, added to one folded earlier). Rows a
# session still holds (a transaction open across midnight) are skipped, folded next time.
FOLD_USAGE = f"""
WITH gone AS (
    DELETE FROM usage_daily
    WHERE (tenant_id, day, environment, shard) IN (
        SELECT tenant_id, day, environment, shard FROM usage_daily
        WHERE day < $1 AND shard <> {FOLDED_SHARD}
        FOR UPDATE SKIP LOCKED)
    RETURNING *
),
folded AS (
    INSERT INTO usage_daily AS u (tenant_id, environment, day, shard, events_accepted,
                                  deliveries_succeeded, failed_attempts, dead_letters)
    SELECT tenant_id, environment, day, {FOLDED_SHARD}, sum(events_accepted),
           sum(deliveries_succeeded), sum(failed_attempts), sum(dead_letters)
    FROM gone GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, day, environment, shard)
    DO UPDATE SET events_accepted = u.events_accepted + EXCLUDED.events_accepted,
                  deliveries_succeeded = u.deliveries_succeeded + EXCLUDED.deliveries_succeeded,
                  failed_attempts = u.failed_attempts + EXCLUDED.failed_attempts,
                  dead_letters = u.dead_letters + EXCLUDED.dead_letters
)
SELECT count(*)::int FROM gone
"""
