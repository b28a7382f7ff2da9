"""The delivery log and the event log (API and `dispatcher dead-letters`): reads, replay, retry."""

# ---- delivery log, replay and retry (API and `dispatcher dead-letters`) -------------------
# The `deliveries` view (migration 004) is each delivery's current state: its queue row while
# it is live, else its newest outcome in the history. A re-queued delivery (replay, retry)
# goes back into the queue with its id, its event and its attempt count, one generation up;
# it is due now and starts a fresh retry window (window start: age_origin; attempts_before_replay).

# $1 endpoint_id, $2 status (NULL for all), $3 cursor: deliveries older than this id (NULL for
# the first page), $4 limit, $5 event_type, $6 since, $7 until (each NULL: no filter; the time
# range [since, until) is on the delivery's creation) -> newest first.
# The view's rows, read from its two sources apart, each filtered and cut to one page first:
# live ones from the queue; final ones walking the endpoint's outcome index newest first,
# keeping each delivery's newest generation (a cheap sort within one id) unless it is queued
# again. Only the page's rows are joined to their events. Through the view, the planner could
# not stop early (it joined the endpoint's whole history, then sorted: about 1 s a page with
# 100,000 deliveries under asyncpg's cached generic plan).
LIST_ENDPOINT_DELIVERIES = """
WITH live AS (
    SELECT q.id, q.event_id, q.endpoint_id,
           CASE WHEN q.worker_id IS NULL THEN 'pending' ELSE 'in_flight' END AS status,
           q.attempts,
           -- as the view: not before the endpoint's circuit closes
           CASE WHEN q.worker_id IS NULL
                THEN GREATEST(q.next_attempt_at, (SELECT s.circuit_open_until
                                                  FROM endpoint_state s WHERE s.endpoint_id = $1))
                ELSE q.next_attempt_at END AS next_attempt_at,
           q.created_at, NULL::timestamptz AS completed_at,
           q.last_status_code, q.last_outcome, q.replayed_at, q.event_created_at
    FROM delivery_queue q
    WHERE q.endpoint_id = $1
      AND ($2::text IS NULL OR $2 = CASE WHEN q.worker_id IS NULL THEN 'pending' ELSE 'in_flight' END)
      AND ($3::bigint IS NULL OR q.id < $3)
      AND ($6::timestamptz IS NULL OR q.created_at >= $6)
      AND ($7::timestamptz IS NULL OR q.created_at < $7)
      AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM events e WHERE e.id = q.event_id
                                        AND e.created_at = q.event_created_at AND e.event_type = $5))
    ORDER BY q.id DESC
    LIMIT $4
),
done AS (
    SELECT o.id, o.event_id, o.endpoint_id, o.status, o.attempts, o.completed_at AS next_attempt_at,
           o.created_at, o.completed_at, o.last_status_code, o.last_outcome, o.replayed_at,
           o.created_at AS event_created_at
    FROM (SELECT DISTINCT ON (n.id) n.*
          FROM delivery_outcomes n
          WHERE hashtext(n.endpoint_id) = hashtext($1) AND n.endpoint_id = $1
            AND ($3::bigint IS NULL OR n.id < $3)
          ORDER BY n.id DESC, n.generation DESC) o
    WHERE ($2::text IS NULL OR o.status = $2)
      AND ($6::timestamptz IS NULL OR o.created_at >= $6)
      AND ($7::timestamptz IS NULL OR o.created_at < $7)
      -- a subquery per row, not an anti-join: with a large queue the planner would join the
      -- endpoint's whole history against it before the page is cut
      AND NOT (SELECT EXISTS (SELECT 1 FROM delivery_queue l WHERE l.id = o.id))
      AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM events e WHERE e.id = o.event_id
                                        AND e.created_at = o.created_at AND e.event_type = $5))
    ORDER BY o.id DESC
    LIMIT $4
),
page AS (
    SELECT * FROM live UNION ALL SELECT * FROM done ORDER BY id DESC LIMIT $4
)
SELECT d.id, d.event_id, ev.event_type, d.endpoint_id, d.status, d.attempts, d.next_attempt_at,
       d.created_at, d.completed_at, d.last_status_code, d.last_outcome, d.replayed_at
FROM page d
JOIN events ev ON ev.id = d.event_id AND ev.created_at = d.event_created_at
ORDER BY d.id DESC
"""

# $1 delivery id, $2 endpoint_id -> the id when it is a delivery of that endpoint (page cursor)
GET_DELIVERY_CURSOR = "SELECT id FROM deliveries WHERE id = $1 AND endpoint_id = $2::text"

# $1 delivery ids, $2 attempts kept per delivery (the newest) -> oldest first per delivery
ATTEMPTS_OF_DELIVERIES = """
SELECT a.delivery_id, a.attempt, a.started_at, a.duration_ms, a.outcome, a.status_code, a.error,
       a.response_body
FROM unnest($1::bigint[]) AS d (id)
CROSS JOIN LATERAL (
    SELECT * FROM attempts WHERE attempts.delivery_id = d.id
    ORDER BY attempts.attempt DESC, attempts.started_at DESC
    LIMIT $2
) a
ORDER BY a.delivery_id, a.attempt, a.started_at
"""

# $1 event ids -> their deliveries, by event then endpoint
DELIVERIES_OF_EVENTS = """
SELECT d.id, d.event_id, ev.event_type, d.endpoint_id, d.status, d.attempts, d.next_attempt_at,
       d.created_at, d.completed_at, d.last_status_code, d.last_outcome, d.replayed_at
FROM deliveries d
JOIN events ev ON ev.id = d.event_id AND ev.created_at = d.event_created_at
WHERE d.event_id = ANY($1::text[])
  AND hashtext(d.event_id) = ANY(ARRAY(SELECT hashtext(e) FROM unnest($1::text[]) AS e))
ORDER BY d.event_id, d.endpoint_id
"""

# $1 delivery id, $2 tenant_id, $3 environment -> the delivery and its endpoint's state
GET_DELIVERY = """
SELECT d.id, d.event_id, ev.event_type, d.endpoint_id, d.status, d.attempts, d.next_attempt_at,
       d.created_at, d.completed_at, d.last_status_code, d.last_outcome, d.replayed_at,
       ep.enabled AS endpoint_enabled, ep.deleted_at IS NOT NULL AS endpoint_deleted
FROM deliveries d
JOIN endpoints ep ON ep.id = d.endpoint_id
JOIN events ev ON ev.id = d.event_id AND ev.created_at = d.event_created_at
WHERE d.id = $1 AND ep.tenant_id = $2 AND ep.environment = $3
"""

# Re-queues final deliveries (rows of the `deliveries` view in `targets`, with the endpoint's
# tenant as tenant_id): back into the queue with their id, due at now ($NOW).
_requeue_final = """
INSERT INTO delivery_queue (id, endpoint_id, tenant_id, event_id, event_created_at, created_at,
                            next_attempt_at, age_origin, attempts, attempts_before_replay,
                            generation, replayed_at, last_status_code, last_outcome, mailing_id)
SELECT t.id, t.endpoint_id, t.tenant_id, t.event_id, t.event_created_at, t.created_at, $NOW,
       $NOW, t.attempts, t.attempts, t.generation + 1, $NOW, t.last_status_code, t.last_outcome,
       -- an ordered endpoint's replay takes its place in its mailing's order again
       (SELECT ev.mailing_id FROM events ev JOIN endpoints ep ON ep.id = t.endpoint_id
        WHERE ev.id = t.event_id AND ev.created_at = t.event_created_at
          AND ep.ordering = 'mailing')
FROM targets t
WHERE t.status IN ('succeeded', 'dead', 'cancelled')
  -- retention may have removed the event of an old outcome: nothing left to send
  AND EXISTS (SELECT 1 FROM events ev
              WHERE ev.id = t.event_id AND ev.created_at = t.event_created_at)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""

# Starts a pending delivery over now (rows of `targets` that are still pending in the queue).
_restart_pending = """
UPDATE delivery_queue q
SET next_attempt_at = $NOW, age_origin = $NOW, replayed_at = $NOW,
    attempts_before_replay = q.attempts
FROM targets t
WHERE q.id = t.id AND t.status = 'pending' AND q.worker_id IS NULL
RETURNING q.id
"""

# $1 delivery id, $2 tenant_id, $3 environment, $4 now -> the id when re-queued; nothing when
# it is another tenant's, in flight, or its endpoint is disabled or deleted
RETRY_DELIVERY = f"""
WITH targets AS (
    SELECT d.*, ep.tenant_id FROM deliveries d
    JOIN endpoints ep ON ep.id = d.endpoint_id
    WHERE d.id = $1 AND ep.tenant_id = $2 AND ep.environment = $3
      AND ep.enabled AND ep.deleted_at IS NULL AND d.status <> 'in_flight'
),
revived AS ({_requeue_final.replace("$NOW", "$4")}),
restarted AS ({_restart_pending.replace("$NOW", "$4")})
SELECT id FROM revived UNION ALL SELECT id FROM restarted
"""

# $1 endpoint_id, $2 since (NULL: unbounded), $3 until (NULL: unbounded), $4 now -> re-queues
# the endpoint's dead deliveries created in [since, until); -> how many
REPLAY_DEAD_DELIVERIES = f"""
WITH targets AS (
    SELECT d.*, ep.tenant_id FROM deliveries d
    JOIN endpoints ep ON ep.id = d.endpoint_id
    WHERE d.endpoint_id = $1 AND hashtext(d.endpoint_id) = hashtext($1) AND d.status = 'dead'
      AND ($2::timestamptz IS NULL OR d.created_at >= $2)
      AND ($3::timestamptz IS NULL OR d.created_at < $3)
),
revived AS ({_requeue_final.replace("$NOW", "$4")})
SELECT count(*)::int FROM revived
"""

# $1 endpoint_id, $2 since (NULL: unbounded), $3 until (NULL: unbounded), $4 now -> re-queues
# every failed delivery created in [since, until): dead, cancelled, and pending ones that
# have failed at least once (they start over now instead of waiting for their backoff)
REPLAY_FAILED_DELIVERIES = f"""
WITH targets AS (
    SELECT d.*, ep.tenant_id FROM deliveries d
    JOIN endpoints ep ON ep.id = d.endpoint_id
    WHERE d.endpoint_id = $1 AND hashtext(d.endpoint_id) = hashtext($1)
      AND (d.status IN ('dead', 'cancelled') OR (d.status = 'pending' AND d.attempts > 0))
      AND ($2::timestamptz IS NULL OR d.created_at >= $2)
      AND ($3::timestamptz IS NULL OR d.created_at < $3)
),
revived AS ({_requeue_final.replace("$NOW", "$4")}),
restarted AS ({_restart_pending.replace("$NOW", "$4")})
SELECT (SELECT count(*) FROM revived)::int + (SELECT count(*) FROM restarted)::int
"""

# $1 endpoint_id, $2 since (NULL: unbounded), $3 until (NULL: unbounded), $4 'dead' or
# 'failed' -> how many deliveries the same replay would re-queue (its dry run)
COUNT_REPLAYABLE_DELIVERIES = """
SELECT count(*)::int FROM deliveries d
WHERE d.endpoint_id = $1
  AND (d.status = 'dead' OR ($4::text = 'failed'
       AND (d.status = 'cancelled' OR (d.status = 'pending' AND d.attempts > 0))))
  AND ($2::timestamptz IS NULL OR d.created_at >= $2)
  AND ($3::timestamptz IS NULL OR d.created_at < $3)
"""

# $1 tenant_id, $2 endpoint_id, $3 since, $4 until (each NULL: no filter), $5 limit
# -> dead letters, newest first
LIST_DEAD_LETTERS = """
SELECT d.id, ep.tenant_id, ep.environment, d.endpoint_id, d.event_id, ev.event_type, d.attempts,
       d.last_status_code, d.last_outcome, d.created_at, d.completed_at,
       ep.enabled AND ep.deleted_at IS NULL AS endpoint_live
FROM deliveries d
JOIN endpoints ep ON ep.id = d.endpoint_id
JOIN events ev ON ev.id = d.event_id AND ev.created_at = d.event_created_at
WHERE d.status = 'dead'
  AND ($1::text IS NULL OR ep.tenant_id = $1) AND ($2::text IS NULL OR d.endpoint_id = $2)
  AND ($3::timestamptz IS NULL OR d.created_at >= $3)
  AND ($4::timestamptz IS NULL OR d.created_at < $4)
ORDER BY d.id DESC
LIMIT $5
"""

# $1 tenant_id, $2 endpoint_id, $3 since, $4 until (each NULL: no filter) -> dead letters a
# replay takes, and those it skips because their endpoint is disabled or deleted
COUNT_DEAD_LETTERS = """
SELECT count(*) FILTER (WHERE ep.enabled AND ep.deleted_at IS NULL)::int AS replayable,
       count(*) FILTER (WHERE NOT ep.enabled OR ep.deleted_at IS NOT NULL)::int AS skipped
FROM deliveries d
JOIN endpoints ep ON ep.id = d.endpoint_id
WHERE d.status = 'dead'
  AND ($1::text IS NULL OR ep.tenant_id = $1) AND ($2::text IS NULL OR d.endpoint_id = $2)
  AND ($3::timestamptz IS NULL OR d.created_at >= $3)
  AND ($4::timestamptz IS NULL OR d.created_at < $4)
"""

# $1 tenant_id, $2 endpoint_id, $3 since, $4 until (each NULL: no filter), $5 after this id,
# $6 chunk size, $7 now -> re-queues the next chunk of dead letters of live endpoints, in id
# order; answers how many rows it scanned, the last id scanned and how many it re-queued
REPLAY_DEAD_LETTERS_CHUNK = f"""
WITH targets AS (
    SELECT d.*, ep.tenant_id FROM deliveries d
    JOIN endpoints ep ON ep.id = d.endpoint_id
    WHERE d.status = 'dead' AND d.id > $5 AND ep.enabled AND ep.deleted_at IS NULL
      AND ($1::text IS NULL OR ep.tenant_id = $1) AND ($2::text IS NULL OR d.endpoint_id = $2)
      AND ($3::timestamptz IS NULL OR d.created_at >= $3)
      AND ($4::timestamptz IS NULL OR d.created_at < $4)
    ORDER BY d.id
    LIMIT $6
),
revived AS ({_requeue_final.replace("$NOW", "$7")})
SELECT (SELECT count(*) FROM targets)::int AS scanned,
       (SELECT max(id) FROM targets) AS last_id,
       (SELECT count(*) FROM revived)::int AS requeued
"""

# ---- event log (GET /v1/events) -----------------------------------------------------------

# $1 event id, $2 tenant_id, $3 environment
GET_EVENT = """
SELECT id, event_type, mailing_id, occurred_at, created_at, body FROM events
WHERE id = $1 AND tenant_id = $2 AND environment = $3
"""

# $1 tenant_id, $2 environment, $3 mailing_id, $4 cursor created_at (NULL for the first page),
# $5 cursor id, $6 limit -> newest first
LIST_MAILING_EVENTS = """
SELECT id, event_type, mailing_id, occurred_at, created_at, body FROM events
WHERE tenant_id = $1 AND environment = $2 AND mailing_id = $3
  AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
ORDER BY created_at DESC, id DESC
LIMIT $6
"""

# $1 event id, $2 tenant_id, $3 environment, $4 mailing_id -> the sort key of a page cursor
GET_EVENT_CURSOR = """
SELECT created_at, id FROM events
WHERE id = $1 AND tenant_id = $2 AND environment = $3 AND mailing_id = $4
"""
