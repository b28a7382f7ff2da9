"""The delivery queue: claim, settle, release, reap, expire; worker liveness."""

from dispatcher.db.queries.usage import USAGE_SETTLED_CTE

# ---- the delivery queue -------------------------------------------------------------------
# Lock order (docs/architecture.md): endpoint_state rows in endpoint id order, then queue rows
# (the claim, the reaper and the expiry sweep only ever SKIP LOCKED on queue rows), then
# history inserts. Nothing takes endpoint_state after a queue row it waits for.

# $1 now, $2 endpoints visited at most, $3 batch size, $4 concurrency ceiling, $5 breaker
# threshold, $6 lease expiry, $7 endpoint id to start after ('' for the first), $8 the claiming
# worker's id, $9 tenants with a reduced allowance, $10 their allowance (parallel arrays),
# $11 the allowance of every other tenant (its fair share of this worker's slots), $12
# concurrency floor, $13 initial concurrency limit, $14 rate-limit horizon and $15 its jitter
# allowance (microseconds), $16 endpoints with attempts of this worker that are finished but not
# yet settled and $17 how many (parallel arrays).
# Walks the endpoints that have pending work (a loose index scan, in id order after $7 and then
# from the start up to $7, so successive claims rotate over all of them), keeps those with
# something due that are below their concurrency limit, not behind an open circuit and with a
# rate-limit slot within the horizon, oldest head first, and takes each one's due deliveries
# from its own index range, a fair share of the batch each: the backlog of a saturated
# endpoint is never walked past. An endpoint's concurrency limit is its adaptive one
# (dispatcher/limiter.py) within [$12, $4], or 1 past the failure threshold; a rate-limited
# endpoint gets evenly spaced send slots (dispatcher/ratelimit.py), returned as not_before; an
# endpoint with ordering = 'mailing' skips a delivery while an earlier one of the same mailing
# is still in the queue. endpoint_state rows are locked in id order, so limits, slots and order
# are exact across workers. An attempt this worker has finished but not yet settled still
# counts in in_flight until its settle commits; its request is over, so its slot is free to
# this worker now ($16/$17): what is exact is the number of requests actually open (an
# endpoint past the failure threshold is the exception: its single probe must be settled
# before the next goes). Endpoints of suspended or deleted tenants are skipped (their work
# waits). Returns everything needed to send.
CLAIM_DELIVERIES = """
WITH RECURSIVE pending_endpoints (id, n) AS (
    (SELECT endpoint_id, 1 FROM delivery_queue
     WHERE worker_id IS NULL AND endpoint_id > $7 ORDER BY endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT d.endpoint_id FROM delivery_queue d
            WHERE d.worker_id IS NULL AND d.endpoint_id > p.id
            ORDER BY d.endpoint_id LIMIT 1), p.n + 1
    FROM pending_endpoints p WHERE p.id IS NOT NULL AND p.n < $2
),
wrapped_endpoints (id, n) AS (
    (SELECT endpoint_id, 1 FROM delivery_queue
     WHERE worker_id IS NULL AND endpoint_id <= $7 ORDER BY endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT d.endpoint_id FROM delivery_queue d
            WHERE d.worker_id IS NULL AND d.endpoint_id > w.id AND d.endpoint_id <= $7
            ORDER BY d.endpoint_id LIMIT 1), w.n + 1
    FROM wrapped_endpoints w WHERE w.id IS NOT NULL AND w.n < $2
),
visited AS (
    -- n: the place in the walk (after the cursor first, then from the start)
    SELECT id, n FROM pending_endpoints WHERE id IS NOT NULL
    UNION ALL
    SELECT id, n + $2 FROM wrapped_endpoints WHERE id IS NOT NULL
),
heads AS (
    SELECT p.id, p.n, h.head, h.tenant_id
    FROM visited p
    CROSS JOIN LATERAL (SELECT d.next_attempt_at AS head, d.tenant_id FROM delivery_queue d
                        WHERE d.worker_id IS NULL AND d.endpoint_id = p.id
                        ORDER BY d.next_attempt_at LIMIT 1) h
    LEFT JOIN unnest($9::text[], $10::int[]) AS t (tenant_id, allowance)
      ON t.tenant_id = h.tenant_id
    WHERE h.head <= $1 AND COALESCE(t.allowance, $11) > 0
),
finished AS (
    -- this worker's attempts that are over but not yet settled, per endpoint
    SELECT f.endpoint_id, f.n FROM unnest($16::text[], $17::int[]) AS f (endpoint_id, n)
),
candidates AS (
    SELECT heads.id FROM heads
    JOIN endpoint_state s ON s.endpoint_id = heads.id
    -- the tenant filter: a suspended or deleted tenant's deliveries wait unsent
    JOIN tenants t ON t.id = heads.tenant_id AND t.suspended_at IS NULL AND t.deleted_at IS NULL
    JOIN endpoints e ON e.id = heads.id
    LEFT JOIN finished f ON f.endpoint_id = heads.id
    WHERE s.in_flight - CASE WHEN s.consecutive_failures >= $5 THEN 0 ELSE COALESCE(f.n, 0) END
          < CASE WHEN s.consecutive_failures >= $5 THEN 1 ELSE LEAST($4::int,
              GREATEST($12::int, floor(COALESCE(s.concurrency_limit, $13::int))::int)) END
      AND (s.circuit_open_until IS NULL OR s.circuit_open_until <= $1)
      AND (e.rate_limit_per_second IS NULL OR s.rate_tat IS NULL
           OR s.rate_tat <= $1 + $14::bigint * interval '1 microsecond')
    -- in walk order: the next claim starts after the last endpoint served, so one left out
    -- here would wait a whole lap over the endpoints (a due date would be no better a rank:
    -- every head here is due)
    ORDER BY heads.n
    LIMIT $3
),
state AS (
    SELECT s.endpoint_id AS id, s.in_flight, s.consecutive_failures, s.concurrency_limit,
           GREATEST(COALESCE(s.rate_tat, $1), $1) AS slot0
    FROM endpoint_state s
    WHERE s.endpoint_id IN (SELECT id FROM candidates)
      AND (s.circuit_open_until IS NULL OR s.circuit_open_until <= $1)
    ORDER BY s.endpoint_id
    FOR NO KEY UPDATE
),
room AS (
    SELECT st.id, e.ordering = 'mailing' AS ordered, st.slot0, r.step, o.held,
           LEAST(CASE WHEN st.consecutive_failures >= $5 THEN 1 ELSE LEAST($4::int,
                     GREATEST($12::int, floor(COALESCE(st.concurrency_limit, $13::int))::int))
                 END - o.held,
                 CASE WHEN r.step IS NULL THEN $3
                      ELSE GREATEST(floor(($14::bigint - (extract(epoch FROM st.slot0 - $1)
                                            * 1000000)::bigint)::float8 / r.step)::int + 1, 0)
                 END) AS free
    FROM state st
    JOIN endpoints e ON e.id = st.id
    -- requests actually open: in flight, less this worker's finished ones (not for a probe)
    CROSS JOIN LATERAL (SELECT st.in_flight - CASE WHEN st.consecutive_failures >= $5 THEN 0
                               ELSE COALESCE((SELECT f.n FROM finished f
                                              WHERE f.endpoint_id = st.id), 0) END AS held) o
    -- microseconds between two send slots, rounded up (dispatcher/ratelimit.py)
    CROSS JOIN LATERAL (SELECT (1000000 + $15::bigint + e.rate_limit_per_second - 1)
                               / e.rate_limit_per_second AS step) r
),
share AS (
    SELECT ceil($3::float8 / GREATEST(count(*), 1))::int AS each FROM room
),
locked AS (
    SELECT d.id, d.endpoint_id, d.tenant_id, d.next_attempt_at, room.held
    FROM room
    CROSS JOIN share
    CROSS JOIN LATERAL (SELECT d.id, d.endpoint_id, d.tenant_id, d.next_attempt_at
                        FROM delivery_queue d
                        WHERE d.worker_id IS NULL AND d.endpoint_id = room.id
                          AND d.next_attempt_at <= $1
                          AND (NOT room.ordered OR d.mailing_id IS NULL OR NOT EXISTS (
                               SELECT 1 FROM delivery_queue o
                               WHERE o.endpoint_id = d.endpoint_id
                                 AND o.mailing_id = d.mailing_id AND o.id < d.id))
                        ORDER BY d.next_attempt_at, d.id
                        LIMIT LEAST(GREATEST(room.free, 0), share.each)
                        FOR UPDATE SKIP LOCKED) d
),
fair AS (
    -- least in flight first: a delivery's rank is what its endpoint holds already plus its
    -- place in that endpoint's line, so when slots are scarce (this worker's, or its tenant's
    -- share) an endpoint holding few goes before one holding many (a slow one, say)
    SELECT l.*, l.held + row_number() OVER (PARTITION BY l.endpoint_id
                                            ORDER BY l.next_attempt_at, l.id) AS turn
    FROM locked l
),
picked AS (
    -- per-tenant conditions go here: the fair share of this worker's slots (and, e.g., a
    -- suspended tenant's allowance of 0)
    SELECT r.id, r.endpoint_id, r.next_attempt_at
    FROM (SELECT f.*, row_number() OVER (PARTITION BY f.tenant_id
                                         ORDER BY f.turn, f.next_attempt_at, f.id) AS k
          FROM fair f) r
    LEFT JOIN unnest($9::text[], $10::int[]) AS t (tenant_id, allowance)
      ON t.tenant_id = r.tenant_id
    WHERE r.k <= COALESCE(t.allowance, $11)
    ORDER BY r.turn, r.next_attempt_at, r.id
    LIMIT $3
),
ranked AS (
    SELECT p.id, row_number() OVER (PARTITION BY p.endpoint_id
                                    ORDER BY p.next_attempt_at, p.id) AS rn
    FROM picked p
),
counted AS (
    UPDATE endpoint_state s
    SET in_flight = s.in_flight + p.n,
        rate_tat = CASE WHEN room.step IS NULL THEN s.rate_tat
                        ELSE room.slot0 + (p.n * room.step) * interval '1 microsecond' END
    FROM (SELECT endpoint_id, count(*) AS n FROM picked GROUP BY endpoint_id) p
    JOIN room ON room.id = p.endpoint_id
    WHERE s.endpoint_id = p.endpoint_id
),
claimed AS (
    UPDATE delivery_queue d
    SET worker_id = $8, attempts = d.attempts + 1, lease_expires_at = $6
    FROM picked
    WHERE d.id = picked.id
    RETURNING d.id, d.event_id, d.event_created_at, d.endpoint_id, d.tenant_id, d.attempts,
              d.age_origin, d.attempts_before_replay
)
SELECT c.id, c.event_id, c.endpoint_id, c.tenant_id, c.attempts, ev.event_type,
       c.event_created_at, c.age_origin, c.attempts - c.attempts_before_replay AS backoff_step,
       ev.body, ep.url, ep.url_credentials, ep.standard_webhooks, ep.signing, ep.environment,
       ARRAY(SELECT s.secret FROM endpoint_secrets s
             WHERE s.endpoint_id = c.endpoint_id AND (s.expires_at IS NULL OR s.expires_at > $1)
             ORDER BY s.created_at, s.id) AS secrets,
       CASE WHEN room.step IS NOT NULL
            THEN room.slot0 + ((rk.rn - 1) * room.step) * interval '1 microsecond' END AS not_before
FROM claimed c
JOIN ranked rk ON rk.id = c.id
JOIN room ON room.id = c.endpoint_id
JOIN events ev ON ev.id = c.event_id AND ev.created_at = c.event_created_at
JOIN endpoints ep ON ep.id = c.endpoint_id
"""

# Settles a batch of attempts in ONE call (one round trip, no transaction held open by the
# busy worker); dispatcher_settle (migration 004) takes its locks in the documented order,
# then the usage counters are bumped (usage_daily rows come last in the lock order).
# Attempts: $3 delivery_ids, $4 attempt numbers, $5 started_ats, $6 durations_ms, $7 outcomes,
#   $8 status_codes, $9 errors, $10 response bodies (only the attempts actually made).
# Deliveries: $11 ids, $12 attempt numbers, $13 new statuses, $14 next_attempt_ats,
#   $15 status codes, $16 outcomes. Fenced: only rows still held by worker $1 at that attempt.
# Endpoints: $17 ids, $18 reset (a success came last), $19 failures after the last success.
# $2 now, $20 breaker threshold, $21 base open seconds, $22 max open seconds.
# Usage: $23..$27, see USAGE_SETTLED_CTE.
# -> the number of deliveries settled (one taken back from a worker declared dead is not)
SETTLE = (
    "WITH "
    + USAGE_SETTLED_CTE.format(now="$2", after="")
    + """
SELECT dispatcher_settle($1, $2, $3::bigint[], $4::int[], $5::timestamptz[], $6::float8[],
                         $7::text[], $8::int[], $9::text[], $10::text[], $11::bigint[],
                         $12::int[], $13::text[], $14::timestamptz[], $15::int[], $16::text[],
                         $17::text[], $18::bool[], $19::int[], $20::int, $21::float8, $22::float8)
"""
)

# $1 endpoint_ids -> their adaptive-concurrency state and requests in flight, locked in id
# order (first in the lock order) until the new state is saved
LOCK_LIMITERS = """
SELECT endpoint_id AS id, in_flight, concurrency_limit, limit_threshold, latency_baseline,
       baseline_at, limit_decreased_at, latency_recent
FROM endpoint_state WHERE endpoint_id = ANY($1::text[]) ORDER BY endpoint_id FOR NO KEY UPDATE
"""

# $1 endpoint_ids, $2 limits, $3 thresholds (NULL: slow start), $4 baselines (seconds),
# $5 baseline_ats, $6 decreased_ats, $7 recent latencies (seconds)
SAVE_LIMITERS = """
UPDATE endpoint_state s
SET concurrency_limit = u.lim, limit_threshold = u.threshold, latency_baseline = u.baseline,
    baseline_at = u.baseline_at, limit_decreased_at = u.decreased_at, latency_recent = u.recent
FROM unnest($1::text[], $2::float8[], $3::float8[], $4::float8[], $5::timestamptz[],
            $6::timestamptz[], $7::float8[])
     AS u (id, lim, threshold, baseline, baseline_at, decreased_at, recent)
WHERE s.endpoint_id = u.id
"""

# $1 endpoint_ids -> locks their delivery state in id order (first in the lock order)
LOCK_ENDPOINT_STATE = """
SELECT endpoint_id FROM endpoint_state WHERE endpoint_id = ANY($1::text[])
ORDER BY endpoint_id FOR NO KEY UPDATE
"""

# $1 delivery_ids, $2 attempts, $3 worker id -> hands unsent work back (shutdown); the attempt
# did not happen
RELEASE_DELIVERIES = """
UPDATE delivery_queue d
SET worker_id = NULL, lease_expires_at = NULL, attempts = d.attempts - 1
FROM unnest($1::bigint[], $2::int[]) AS u (id, attempt)
WHERE d.id = u.id AND d.worker_id = $3 AND d.attempts = u.attempt
RETURNING d.id, d.endpoint_id
"""

# $1 endpoint_ids, $2 counts
RELEASE_ENDPOINT_SLOTS = """
UPDATE endpoint_state s SET in_flight = GREATEST(s.in_flight - u.n, 0)
FROM unnest($1::text[], $2::int[]) AS u (id, n)
WHERE s.endpoint_id = u.id
"""

# $1 now, $2 limit -> deliveries of dead workers and expired leases back to pending, their
# endpoints' slots freed; per endpoint, how many
REAP = "SELECT endpoint_id, n FROM dispatcher_reap($1, $2)"

# -> dead row versions in the hot queue, as the statistics last counted them
QUEUE_DEAD_ROWS = """
SELECT COALESCE((SELECT n_dead_tup FROM pg_stat_user_tables
                 WHERE relid = 'delivery_queue'::regclass), 0)
"""

# $1 now, $2 oldest window start still alive, $3 limit -> pending deliveries past their max
# age become dead letters, whatever their endpoint's state (circuit open, at its cap,
# disabled), counted in the tenant's usage; -> how many
EXPIRE_PENDING = """
WITH expired AS (
    DELETE FROM delivery_queue q
    WHERE q.id = ANY (ARRAY(
        SELECT id FROM delivery_queue
        WHERE worker_id IS NULL AND age_origin <= $2
        ORDER BY age_origin LIMIT $3 FOR UPDATE SKIP LOCKED))
    RETURNING q.*
),
logged AS (
    INSERT INTO delivery_outcomes (id, generation, status, attempts, endpoint_id, event_id,
                                   created_at, completed_at, replayed_at,
                                   last_status_code, last_outcome)
    SELECT id, generation, 'dead', attempts, endpoint_id, event_id, created_at,
           $1, replayed_at, last_status_code, COALESCE(last_outcome, 'expired')
    FROM expired
),
per_tenant AS (
    SELECT x.tenant_id, ep.environment, count(*)::int AS dead
    FROM expired x JOIN endpoints ep ON ep.id = x.endpoint_id
    GROUP BY 1, 2
),
usage_dead AS (
    INSERT INTO usage_daily AS u (tenant_id, environment, day, shard, deliveries_succeeded,
                                  failed_attempts, dead_letters)
    SELECT tenant_id, environment, ($1::timestamptz AT TIME ZONE 'UTC')::date,
           pg_backend_pid(), 0, 0, dead
    FROM per_tenant ORDER BY 1, 2
    ON CONFLICT (tenant_id, day, environment, shard)
    DO UPDATE SET dead_letters = u.dead_letters + EXCLUDED.dead_letters
)
SELECT count(*)::int FROM expired
"""

# -> when the next pending delivery falls due (NULL when the queue is empty): per endpoint with
# pending work (the claim's loose index scan), its head or, later, when its circuit closes. An
# open circuit is never written into the backlog (migration 013), so the plain min() would be
# "now" for as long as a dead endpoint has one.
NEXT_DUE = """
WITH RECURSIVE pending_endpoints (id) AS (
    (SELECT endpoint_id FROM delivery_queue WHERE worker_id IS NULL ORDER BY endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT d.endpoint_id FROM delivery_queue d
            WHERE d.worker_id IS NULL AND d.endpoint_id > p.id
            ORDER BY d.endpoint_id LIMIT 1)
    FROM pending_endpoints p WHERE p.id IS NOT NULL
)
SELECT min(GREATEST(h.head, s.circuit_open_until))
FROM pending_endpoints p
CROSS JOIN LATERAL (SELECT min(d.next_attempt_at) AS head FROM delivery_queue d
                    WHERE d.worker_id IS NULL AND d.endpoint_id = p.id) h
LEFT JOIN endpoint_state s ON s.endpoint_id = p.id
WHERE p.id IS NOT NULL
"""

# ---- worker liveness ----------------------------------------------------------------------

# $1 host, $2 pid, $3 started_at -> the worker's id; run in one transaction with LOCK_WORKER
REGISTER_WORKER = """
INSERT INTO workers (host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $3) RETURNING id
"""

# $1 worker id -> held by the worker's session for as long as it lives
LOCK_WORKER = "SELECT pg_advisory_lock(7301, ($1::bigint % 2147483647)::int)"

# $1 worker id -> the last sign of life (for operators; the lock decides liveness)
HEARTBEAT = "UPDATE workers SET heartbeat_at = clock_timestamp() WHERE id = $1"

# $1 worker id -> a worker stopping cleanly says goodbye
UNREGISTER_WORKER = """
WITH gone AS (DELETE FROM workers WHERE id = $1)
SELECT pg_advisory_unlock(7301, ($1::bigint % 2147483647)::int)
"""
