-- Engine v2: a narrow hot queue, append-only history partitioned by day, worker liveness.
--
-- Takes a database written by migration 003 to the new layout in place: pending and in-flight
-- deliveries keep their schedule and attempt counts (in-flight ones become pending again:
-- stop every worker before migrating), final ones, events and attempts move to the history.
-- The roles of every table and the lock order are in docs/architecture.md.

-- ---- daily partitions ------------------------------------------------------------------------
-- <parent>_pYYYYMMDD covers [day 00:00 UTC, next day 00:00 UTC); no DEFAULT partition.
-- Created standalone then attached: ATTACH takes only SHARE UPDATE EXCLUSIVE on the parent,
-- so writers of the parent never wait for it. Idempotent; answers whether it created one.
CREATE FUNCTION dispatcher_ensure_partition(parent text, day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    name text := parent || '_p' || to_char(day, 'YYYYMMDD');
    low timestamptz := (day::timestamp AT TIME ZONE 'UTC');
BEGIN
    IF to_regclass(quote_ident(name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(7302);  -- one creator at a time; then look again
    IF to_regclass(quote_ident(name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   name, parent);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   parent, name, low, low + interval '1 day');
    RETURN true;
END $$;

-- ---- per-endpoint delivery state (the claim's per-endpoint conditions live here) --------------
CREATE TABLE endpoint_state (
    endpoint_id          text PRIMARY KEY REFERENCES endpoints (id) ON DELETE CASCADE,
    in_flight            integer NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    consecutive_failures integer NOT NULL DEFAULT 0,
    circuit_open_until   timestamptz
) WITH (fillfactor = 50);  -- narrow, unindexed but for its key: every update stays HOT

-- in_flight restarts at 0: every in-flight delivery goes back to pending below
INSERT INTO endpoint_state (endpoint_id, consecutive_failures, circuit_open_until)
SELECT id, consecutive_failures, circuit_open_until FROM endpoints;

CREATE FUNCTION dispatcher_endpoint_state_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO endpoint_state (endpoint_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER endpoints_state_row AFTER INSERT ON endpoints
    FOR EACH ROW EXECUTE FUNCTION dispatcher_endpoint_state_row();

DROP INDEX endpoints_busy;
ALTER TABLE endpoints DROP COLUMN in_flight, DROP COLUMN consecutive_failures,
                      DROP COLUMN circuit_open_until;

-- ---- the old tables step aside --------------------------------------------------------------
ALTER TABLE attempts RENAME TO attempts_003;
ALTER TABLE deliveries RENAME TO deliveries_003;
ALTER TABLE events RENAME TO events_003;

-- ---- history: append-only, partitioned by day ----------------------------------------------
CREATE TABLE events (
    id           text NOT NULL,                    -- evt_<ULID>
    tenant_id    text NOT NULL,
    environment  text NOT NULL,
    event_type   text NOT NULL,
    mailing_id   text,
    occurred_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,             -- accepted; the partition key
    body         bytea NOT NULL                    -- canonical JSON, serialized once, sent as is
) PARTITION BY RANGE (created_at);

-- each delivery's final outcome, written once when it leaves the queue (again after a replay:
-- the highest generation is the current one)
CREATE TABLE delivery_outcomes (
    id                bigint NOT NULL,
    generation        smallint NOT NULL,           -- 0, then +1 for every replay or retry
    status            text NOT NULL,               -- succeeded, dead or cancelled
    attempts          integer NOT NULL,
    endpoint_id       text NOT NULL,
    event_id          text NOT NULL,
    created_at        timestamptz NOT NULL,        -- also the event's created_at: its partition
    completed_at      timestamptz NOT NULL,        -- the partition key
    replayed_at       timestamptz,
    last_status_code  integer,
    last_outcome      text
) PARTITION BY RANGE (completed_at);

-- every attempt made, written once when it is settled
CREATE TABLE attempts (
    delivery_id    bigint NOT NULL,
    attempt        integer NOT NULL,
    started_at     timestamptz NOT NULL,           -- the partition key
    duration_ms    double precision NOT NULL,
    outcome        text NOT NULL,
    status_code    integer,
    error          text,
    response_body  text                            -- first 1 KiB, decoded leniently
) PARTITION BY RANGE (started_at);

DO $$
DECLARE day date;
BEGIN
    FOR day IN
        SELECT DISTINCT (t AT TIME ZONE 'UTC')::date FROM (
            SELECT created_at AS t FROM events_003
            UNION SELECT COALESCE(completed_at, next_attempt_at) FROM deliveries_003
                   WHERE status NOT IN ('pending', 'in_flight')
            UNION SELECT started_at FROM attempts_003
            UNION SELECT now() + make_interval(days => g) FROM generate_series(-1, 3) g) s
    LOOP
        PERFORM dispatcher_ensure_partition(p, day)
        FROM unnest(ARRAY['events', 'delivery_outcomes', 'attempts']) AS p;
    END LOOP;
END $$;

INSERT INTO events SELECT id, tenant_id, environment, event_type, mailing_id, occurred_at,
                          created_at, body FROM events_003;

INSERT INTO delivery_outcomes (id, generation, status, attempts, endpoint_id, event_id,
                               created_at, completed_at, replayed_at,
                               last_status_code, last_outcome)
SELECT d.id, 0, d.status, d.attempts, d.endpoint_id, d.event_id, e.created_at,
       COALESCE(d.completed_at, d.next_attempt_at), d.replayed_at, d.last_status_code,
       d.last_outcome
FROM deliveries_003 d JOIN events_003 e ON e.id = d.event_id
WHERE d.status NOT IN ('pending', 'in_flight');

INSERT INTO attempts SELECT delivery_id, attempt, started_at, duration_ms, outcome, status_code,
                            error, response_body FROM attempts_003;

-- ---- the hot queue: pending and in-flight deliveries only, deleted when final ---------------
CREATE SEQUENCE delivery_ids;

CREATE TABLE delivery_queue (
    id                      bigint PRIMARY KEY DEFAULT nextval('delivery_ids'),
    endpoint_id             text NOT NULL,
    tenant_id               text NOT NULL,
    event_id                text NOT NULL,
    event_created_at        timestamptz NOT NULL,  -- finds the event's partition; retention
                                                   -- keeps every partition a queue row needs
    created_at              timestamptz NOT NULL,
    next_attempt_at         timestamptz NOT NULL,
    age_origin              timestamptz NOT NULL,  -- acceptance or last replay: max age from it
    attempts                integer NOT NULL DEFAULT 0,
    attempts_before_replay  integer NOT NULL DEFAULT 0,
    generation              smallint NOT NULL DEFAULT 0,
    replayed_at             timestamptz,
    worker_id               bigint,                -- NULL: pending; else the worker holding it
    lease_expires_at        timestamptz,           -- backstop only; liveness frees it sooner
    last_status_code        integer,
    last_outcome            text
);
ALTER SEQUENCE delivery_ids OWNED BY delivery_queue.id;

INSERT INTO delivery_queue (id, endpoint_id, tenant_id, event_id, event_created_at, created_at,
                            next_attempt_at, age_origin, attempts, attempts_before_replay,
                            replayed_at, last_status_code, last_outcome)
SELECT d.id, d.endpoint_id, e.tenant_id, d.event_id, e.created_at, d.created_at,
       d.next_attempt_at, COALESCE(d.replayed_at, e.created_at), d.attempts,
       d.attempts_before_replay, d.replayed_at, d.last_status_code, d.last_outcome
FROM deliveries_003 d JOIN events_003 e ON e.id = d.event_id
WHERE d.status IN ('pending', 'in_flight');

SELECT setval('delivery_ids', GREATEST((SELECT max(id) FROM deliveries_003), 0) + 1, false);

DROP TABLE attempts_003, deliveries_003, events_003;

-- history indexes (on the parents: every partition gets them)
ALTER TABLE events ADD PRIMARY KEY (id, created_at);
-- a mailing's events (its tenant and environment are checked on the rows: ids rarely collide)
CREATE INDEX events_mailing ON events (mailing_id, created_at) WHERE mailing_id IS NOT NULL;
-- an endpoint's log and an event's deliveries: keyed by a 4-byte hash of the text id (half the
-- size of an index on the id itself; the queries check the id too)
CREATE INDEX delivery_outcomes_endpoint ON delivery_outcomes (hashtext(endpoint_id), id);
CREATE INDEX delivery_outcomes_event ON delivery_outcomes (hashtext(event_id));
CREATE INDEX delivery_outcomes_id ON delivery_outcomes (id);
-- dead letters: the few dead rows among the whole history
CREATE INDEX delivery_outcomes_dead ON delivery_outcomes (id) WHERE status = 'dead';
CREATE INDEX attempts_delivery ON attempts (delivery_id);

-- the claim: each endpoint's due deliveries in order, pending only (a loose index scan finds
-- the endpoints with pending work; a saturated endpoint's backlog is never walked past)
CREATE INDEX delivery_queue_due ON delivery_queue (endpoint_id, next_attempt_at, id)
    WHERE worker_id IS NULL;
-- when the next retry falls due (the idle worker's timer)
CREATE INDEX delivery_queue_next ON delivery_queue (next_attempt_at) WHERE worker_id IS NULL;
-- dead-lettering by the clock: pending deliveries past their max age
CREATE INDEX delivery_queue_age ON delivery_queue (age_origin) WHERE worker_id IS NULL;
-- what a dead worker held
CREATE INDEX delivery_queue_held ON delivery_queue (worker_id) WHERE worker_id IS NOT NULL;
-- the event views
CREATE INDEX delivery_queue_event ON delivery_queue (event_id);

-- ---- every delivery's current state: the queue row if live, else its newest outcome ---------
-- For reading (API, CLI, operators); nothing writes through it.
CREATE VIEW deliveries AS
SELECT q.id, q.event_id, q.endpoint_id,
       CASE WHEN q.worker_id IS NULL THEN 'pending' ELSE 'in_flight' END AS status,
       q.attempts, q.next_attempt_at, q.created_at, NULL::timestamptz AS completed_at,
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

-- ---- worker liveness --------------------------------------------------------------------------
-- A worker process inserts its row and takes the session advisory lock (class 7301, its id)
-- in one transaction, on a connection it keeps; the lock is free exactly when that session
-- is gone (process killed, machine lost: TCP keepalives end the session).
CREATE TABLE workers (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL
);

-- ---- settle: one call, one round trip, locks in the documented order ----------------------
-- 1. endpoint_state rows of the batch, in endpoint id order; 2. the batch's own queue rows
-- (fenced: still held by this worker at this attempt number); 3. history inserts.
CREATE FUNCTION dispatcher_settle(
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
    ),
    changed AS (
        UPDATE endpoint_state s
        SET in_flight = GREATEST(s.in_flight - t.released, 0),
            consecutive_failures = t.failures,
            circuit_open_until = CASE WHEN t.failures >= p_threshold
                THEN p_now + make_interval(secs => LEAST(
                     p_open_seconds * power(2, LEAST(t.failures - p_threshold, 20)),
                     p_max_open_seconds))
                END
        FROM streaks t
        WHERE s.endpoint_id = t.id
        RETURNING s.endpoint_id, s.circuit_open_until
    )
    -- an endpoint whose circuit is open: its backlog waits until it closes
    UPDATE delivery_queue q SET next_attempt_at = c.circuit_open_until
    FROM changed c
    WHERE c.circuit_open_until IS NOT NULL AND q.endpoint_id = c.endpoint_id
      AND q.worker_id IS NULL AND q.next_attempt_at < c.circuit_open_until;

    RETURN settled;
END $$;

-- ---- reap: deliveries of dead workers (and expired leases) back to the queue ----------------
-- A worker is dead when its advisory lock is free. Locks endpoint_state rows first (id order),
-- then skips queue rows someone holds (a late settle of the same rows wins; it is fenced).
CREATE FUNCTION dispatcher_reap(p_now timestamptz, p_limit int)
RETURNS TABLE (endpoint_id text, n int) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    dead bigint[];
    touched text[];
BEGIN
    dead := ARRAY(SELECT w.id FROM workers w
                  WHERE pg_try_advisory_xact_lock(7301, (w.id % 2147483647)::int));
    touched := ARRAY(SELECT DISTINCT q.endpoint_id FROM delivery_queue q
                     WHERE q.worker_id IS NOT NULL
                       AND (q.worker_id = ANY (dead) OR q.lease_expires_at < p_now
                            OR NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = q.worker_id)));
    IF cardinality(touched) > 0 THEN
        PERFORM 1 FROM endpoint_state s WHERE s.endpoint_id = ANY (touched)
        ORDER BY s.endpoint_id FOR NO KEY UPDATE;
    END IF;
    RETURN QUERY
    WITH back AS (
        UPDATE delivery_queue q
        SET worker_id = NULL, lease_expires_at = NULL, next_attempt_at = p_now
        WHERE q.id = ANY (ARRAY(
            SELECT r.id FROM delivery_queue r
            WHERE r.worker_id IS NOT NULL AND r.endpoint_id = ANY (touched)
              AND (r.worker_id = ANY (dead) OR r.lease_expires_at < p_now
                   OR NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = r.worker_id))
            LIMIT p_limit FOR UPDATE SKIP LOCKED))
        RETURNING q.endpoint_id
    ),
    counts AS (SELECT b.endpoint_id, count(*)::int AS n FROM back b GROUP BY b.endpoint_id),
    freed AS (
        UPDATE endpoint_state s SET in_flight = GREATEST(s.in_flight - c.n, 0)
        FROM counts c WHERE s.endpoint_id = c.endpoint_id
    )
    SELECT c.endpoint_id, c.n FROM counts c ORDER BY c.endpoint_id;
    DELETE FROM workers w WHERE w.id = ANY (dead)
      AND NOT EXISTS (SELECT 1 FROM delivery_queue q WHERE q.worker_id = w.id);
END $$;
