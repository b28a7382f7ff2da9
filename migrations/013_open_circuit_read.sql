-- An open circuit is read where it matters instead of written into its backlog.
--
-- dispatcher_settle used to postpone every queued delivery of an endpoint whose circuit had
-- just (re)opened: a dead endpoint's backlog (1,000 transitions/s make 30,000 rows in 30 s)
-- was rewritten, index entries and all, inside the settle of a batch that also held other
-- endpoints' state rows, each time its circuit re-opened; their claims waited on those rows.
-- Now the circuit is applied where a due time is read: the claim skips endpoints whose
-- circuit is open (it always did), NEXT_DUE (dispatcher/db/queries/queue.py) takes the later
-- of an endpoint's head and its circuit, and the `deliveries` view shows a pending
-- delivery's next attempt no earlier than its endpoint's circuit closes. New deliveries are
-- queued due now (the fan-out no longer reads the circuit), so a tenant who re-enables an
-- endpoint (which closes its circuit) has its backlog sent at once.

CREATE OR REPLACE FUNCTION dispatcher_settle(
    p_worker bigint, p_now timestamptz,
    a_ids bigint[], a_attempts int[], a_started timestamptz[], a_durations float8[],
    a_outcomes text[], a_codes int[], a_errors text[], a_bodies text[],
    d_ids bigint[], d_attempts int[], d_statuses text[], d_next timestamptz[], d_codes int[],
    d_outcomes text[],
    e_ids text[], e_reset boolean[], e_fails int[],
    p_threshold int, p_open_seconds float8, p_max_open_seconds float8
) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    settled int;
    released_eps text[];
BEGIN
    PERFORM 1 FROM endpoint_state WHERE endpoint_id = ANY (e_ids)
    ORDER BY endpoint_id FOR NO KEY UPDATE;

    INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, outcome, status_code,
                          error, response_body)
    SELECT * FROM unnest(a_ids, a_attempts, a_started, a_durations, a_outcomes, a_codes,
                         a_errors, a_bodies);

    WITH u AS (
        SELECT * FROM unnest(d_ids, d_attempts, d_statuses, d_next, d_codes, d_outcomes)
            AS u (id, attempt, status, next_at, code, outcome)
    ),
    retried AS (
        UPDATE delivery_queue q
        SET worker_id = NULL, lease_expires_at = NULL, next_attempt_at = u.next_at,
            last_status_code = u.code, last_outcome = u.outcome
        FROM u
        WHERE q.id = u.id AND u.status = 'pending' AND q.worker_id = p_worker
          AND q.attempts = u.attempt
        RETURNING q.endpoint_id
    ),
    finished AS (
        DELETE FROM delivery_queue q
        USING u
        WHERE q.id = u.id AND u.status <> 'pending' AND q.worker_id = p_worker
          AND q.attempts = u.attempt
        RETURNING q.*, u.status AS final_status, u.code AS final_code, u.outcome AS final_outcome
    ),
    logged AS (
        INSERT INTO delivery_outcomes (id, generation, status, attempts, endpoint_id, event_id,
                                       created_at, completed_at, replayed_at,
                                       last_status_code, last_outcome)
        SELECT id, generation, final_status, attempts, endpoint_id, event_id, created_at, p_now,
               replayed_at, final_code, final_outcome
        FROM finished ORDER BY endpoint_id, id  -- each endpoint's run appended in order
    )
    SELECT COALESCE(array_agg(x.endpoint_id), '{}') INTO released_eps
    FROM (SELECT r.endpoint_id FROM retried r UNION ALL SELECT f.endpoint_id FROM finished f) x;

    settled := cardinality(released_eps);

    WITH released AS (
        SELECT r.id AS endpoint_id, count(*)::int AS n FROM unnest(released_eps) AS r (id)
        GROUP BY r.id
    ),
    streaks AS (
        SELECT p.id, CASE WHEN p.reset THEN p.fails
                          ELSE s.consecutive_failures + p.fails END AS failures,
               COALESCE(r.n, 0) AS released
        FROM unnest(e_ids, e_reset, e_fails) AS p (id, reset, fails)
        JOIN endpoint_state s ON s.endpoint_id = p.id
        LEFT JOIN released r ON r.endpoint_id = p.id
    )
    UPDATE endpoint_state s
    SET in_flight = GREATEST(s.in_flight - t.released, 0),
        consecutive_failures = t.failures,
        circuit_open_until = CASE WHEN t.failures >= p_threshold
            THEN p_now + make_interval(secs => LEAST(
                 p_open_seconds * power(2, LEAST(t.failures - p_threshold, 20)),
                 p_max_open_seconds))
            END
    FROM streaks t
    WHERE s.endpoint_id = t.id;

    RETURN settled;
END $$;

-- a pending delivery is not attempted before its endpoint's circuit closes
CREATE OR REPLACE VIEW deliveries AS
SELECT q.id, q.event_id, q.endpoint_id,
       CASE WHEN q.worker_id IS NULL THEN 'pending' ELSE 'in_flight' END AS status,
       q.attempts,
       CASE WHEN q.worker_id IS NULL
            THEN GREATEST(q.next_attempt_at, (SELECT s.circuit_open_until FROM endpoint_state s
                                              WHERE s.endpoint_id = q.endpoint_id))
            ELSE q.next_attempt_at END AS next_attempt_at,
       q.created_at, NULL::timestamptz AS completed_at,
       q.last_status_code, q.last_outcome, q.replayed_at, q.event_created_at, q.generation
FROM delivery_queue q
UNION ALL
SELECT o.id, o.event_id, o.endpoint_id, o.status, o.attempts, o.completed_at, o.created_at,
       o.completed_at, o.last_status_code, o.last_outcome, o.replayed_at, o.created_at,
       o.generation
FROM delivery_outcomes o
WHERE NOT EXISTS (SELECT 1 FROM delivery_queue q WHERE q.id = o.id)
  AND NOT EXISTS (SELECT 1 FROM delivery_outcomes n
                  WHERE n.id = o.id AND n.generation > o.generation);

-- the idle worker's timer walked this index; NEXT_DUE now asks each pending endpoint's head
-- (delivery_queue_due), so it was one more index written by every fan-out, claim and retry
DROP INDEX delivery_queue_next;
