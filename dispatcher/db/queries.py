"""Every DML statement of the product, named, with its parameters in the comment above it.

Kept together so a schema change is reviewed in one file, and so `tests/integration/
test_queries.py` can PREPARE each one against the migrated schema.
"""

from __future__ import annotations

# ---- tenants and API keys ---------------------------------------------------------------

TENANT_COLUMNS = "id, uid, name, created_at, suspended_at"

# $1 id, $2 name, $3 created_at, $4 uid (NULL: none) -> the tenant, or nothing when a live
# tenant already has this uid
INSERT_TENANT = f"""
INSERT INTO tenants (id, name, created_at, uid) VALUES ($1, $2, $3, $4)
ON CONFLICT (uid) WHERE deleted_at IS NULL DO NOTHING
RETURNING {TENANT_COLUMNS}
"""

# $1 id -> a live tenant (a deleted one is gone, even while its rows are being removed)
GET_TENANT = f"SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 AND deleted_at IS NULL"

# $1 uid
GET_TENANT_BY_UID = f"SELECT {TENANT_COLUMNS} FROM tenants WHERE uid = $1 AND deleted_at IS NULL"

LIST_TENANTS = f"""
SELECT {TENANT_COLUMNS} FROM tenants WHERE deleted_at IS NULL ORDER BY created_at, id
"""

# $1 uid (NULL: all), $2 cursor created_at (NULL for the first page), $3 cursor id, $4 limit
# -> newest first
LIST_TENANTS_PAGE = f"""
SELECT {TENANT_COLUMNS} FROM tenants
WHERE deleted_at IS NULL AND ($1::text IS NULL OR uid = $1)
  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
ORDER BY created_at DESC, id DESC
LIMIT $4
"""

# $1 id -> the sort key of a page cursor
GET_TENANT_CURSOR = "SELECT created_at, id FROM tenants WHERE id = $1"

# $1 id, $2 name (NULL: keep), $3 suspended (NULL: keep), $4 now. Suspending keeps the first
# suspension time; resuming clears it.
UPDATE_TENANT = f"""
UPDATE tenants SET
    name = COALESCE($2, name),
    suspended_at = CASE WHEN $3::bool IS NULL THEN suspended_at
                        WHEN $3 THEN COALESCE(suspended_at, $4) END
WHERE id = $1 AND deleted_at IS NULL
RETURNING {TENANT_COLUMNS}
"""

# $1 id, $2 now -> marks the tenant deleted: from this commit its keys, its ingest and its
# deliveries stop (each checks deleted_at); the rows go in batches (tenant_purge.py)
MARK_TENANT_DELETED = """
UPDATE tenants SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL RETURNING id
"""

# $1 tenant ids -> those that exist, locked against deletion until commit (platform ingest)
LOCK_TENANTS = """
SELECT id FROM tenants WHERE id = ANY($1::text[]) AND deleted_at IS NULL FOR KEY SHARE
"""

# $1 id, $2 tenant_id, $3 environment, $4 key_hash, $5 key_prefix, $6 created_at, $7 name
INSERT_API_KEY = """
INSERT INTO api_keys (id, tenant_id, environment, key_hash, key_prefix, created_at, name)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

# $1 key_hash -> the live key's tenant and environment, and whether the tenant is suspended
AUTHENTICATE_KEY = """
SELECT k.id, k.tenant_id, k.environment, k.key_hash, k.last_used_at,
       t.suspended_at IS NOT NULL AS suspended
FROM api_keys k
JOIN tenants t ON t.id = k.tenant_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND t.deleted_at IS NULL
"""

# $1 id, $2 now, $3 written before this -> at most one write a minute per key
TOUCH_API_KEY = """
UPDATE api_keys SET last_used_at = $2
WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)
"""

API_KEY_COLUMNS = (
    "id, tenant_id, environment, name, key_prefix, created_at, last_used_at, revoked_at"
)

# $1 tenant_id (NULL for all)
LIST_API_KEYS = f"""
SELECT {API_KEY_COLUMNS} FROM api_keys
WHERE $1::text IS NULL OR tenant_id = $1
ORDER BY created_at, id
"""

# $1 tenant_id -> its live keys, newest first
LIST_LIVE_API_KEYS = f"""
SELECT {API_KEY_COLUMNS} FROM api_keys
WHERE tenant_id = $1 AND revoked_at IS NULL
ORDER BY created_at DESC, id DESC
"""

# $1 id, $2 revoked_at -> the revoked key, or nothing when unknown or already revoked
REVOKE_API_KEY = """
UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL
RETURNING id, tenant_id, environment
"""

# $1 id, $2 tenant_id, $3 revoked_at -> the same, for one tenant's key only
REVOKE_TENANT_API_KEY = """
UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL
RETURNING id
"""

# ---- portal sessions (the tenant portal's links and cookies) -------------------------------

# $1 id, $2 tenant_id, $3 environment, $4 token_hash, $5 created_at, $6 expires_at
INSERT_PORTAL_SESSION = """
INSERT INTO portal_sessions (id, tenant_id, environment, token_hash, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
"""

# $1 token_hash, $2 cookie_hash, $3 now -> the session, when its link was live and unused
# and its tenant is not being deleted; the link is spent by this exchange
EXCHANGE_PORTAL_TOKEN = """
UPDATE portal_sessions s SET exchanged_at = $3, cookie_hash = $2
FROM tenants t
WHERE s.token_hash = $1 AND s.exchanged_at IS NULL AND s.revoked_at IS NULL
  AND s.expires_at > $3 AND t.id = s.tenant_id AND t.deleted_at IS NULL
RETURNING s.id, s.tenant_id, s.environment, s.expires_at, s.token_hash,
          t.suspended_at IS NOT NULL AS suspended
"""

# $1 cookie_hash, $2 now -> the live session of a portal cookie, unless its tenant is being
# deleted, and whether the tenant is suspended
AUTHENTICATE_PORTAL_COOKIE = """
SELECT s.id, s.tenant_id, s.environment, s.expires_at, s.cookie_hash,
       t.suspended_at IS NOT NULL AS suspended
FROM portal_sessions s
JOIN tenants t ON t.id = s.tenant_id
WHERE s.cookie_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2
  AND t.deleted_at IS NULL
"""

# $1 id, $2 now -> the id when a live session was revoked
REVOKE_PORTAL_SESSION = """
UPDATE portal_sessions SET revoked_at = $2
WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2
RETURNING id
"""

# ---- endpoints ----------------------------------------------------------------------------

ENDPOINT_COLUMNS = """
id, tenant_id, environment, url, url_credentials, description, event_types, enabled,
disabled_reason, metadata, standard_webhooks, created_at, updated_at, signing, public_key
"""

# $1 id, $2 tenant_id, $3 environment, $4 url (without credentials), $5 description,
# $6 event_types, $7 enabled, $8 metadata, $9 standard_webhooks, $10 created_at, $11 signing,
# $12 public_key (ed25519), $13 sealed URL credentials (NULL: none)
INSERT_ENDPOINT = f"""
INSERT INTO endpoints (id, tenant_id, environment, url, description, event_types, enabled,
                       metadata, standard_webhooks, created_at, updated_at, signing, public_key,
                       url_credentials)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13)
RETURNING {ENDPOINT_COLUMNS}
"""

# $1 id, $2 tenant_id, $3 environment
GET_ENDPOINT = f"""
SELECT {ENDPOINT_COLUMNS} FROM endpoints
WHERE id = $1 AND tenant_id = $2 AND environment = $3 AND deleted_at IS NULL
"""

# $1 tenant_id, $2 environment, $3 cursor created_at (NULL for the first page), $4 cursor id,
# $5 limit
LIST_ENDPOINTS = f"""
SELECT {ENDPOINT_COLUMNS} FROM endpoints
WHERE tenant_id = $1 AND environment = $2 AND deleted_at IS NULL
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
ORDER BY created_at DESC, id DESC
LIMIT $5
"""

# $1 id, $2 tenant_id, $3 environment, $4 url, $5 description, $6 event_types, $7 enabled,
# $8 metadata, $9 standard_webhooks, $10 updated_at. NULL keeps the column as it is, except
# description, which $11 (true) clears. A new url ($4, without credentials) replaces the
# sealed credentials too ($12, NULL when it has none).
UPDATE_ENDPOINT = f"""
UPDATE endpoints SET
    url = COALESCE($4, url),
    url_credentials = CASE WHEN $4 IS NULL THEN url_credentials ELSE $12 END,
    description = CASE WHEN $11 THEN NULL ELSE COALESCE($5, description) END,
    event_types = COALESCE($6, event_types),
    enabled = COALESCE($7, enabled),
    disabled_reason = CASE WHEN $7 IS NULL THEN disabled_reason
                           WHEN $7 THEN NULL ELSE 'disabled by tenant' END,
    consecutive_failures = CASE WHEN $7 THEN 0 ELSE consecutive_failures END,
    circuit_open_until = CASE WHEN $7 THEN NULL ELSE circuit_open_until END,
    metadata = COALESCE($8, metadata),
    standard_webhooks = COALESCE($9, standard_webhooks),
    updated_at = $10
WHERE id = $1 AND tenant_id = $2 AND environment = $3 AND deleted_at IS NULL
RETURNING {ENDPOINT_COLUMNS}
"""

# $1 id, $2 tenant_id, $3 environment, $4 deleted_at -> the row stays for the delivery
# history, without the URL's user info (credentials are wiped with the endpoint)
DELETE_ENDPOINT = """
UPDATE endpoints SET deleted_at = $4, enabled = false, updated_at = $4,
       url = regexp_replace(url, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@', '\\1'),
       url_credentials = NULL
WHERE id = $1 AND tenant_id = $2 AND environment = $3 AND deleted_at IS NULL
RETURNING id
"""

# $1 endpoint_id -> a deleted endpoint keeps no signing secret
WIPE_ENDPOINT_SECRETS = """
DELETE FROM endpoint_secrets WHERE endpoint_id = $1
"""

# $1 id, $2 tenant_id, $3 environment -> the list sort key of a page cursor; deleted
# endpoints included, so a page walk survives a delete of the previous page's last item
GET_ENDPOINT_CURSOR = """
SELECT created_at, id FROM endpoints WHERE id = $1 AND tenant_id = $2 AND environment = $3
"""

# $1 endpoint_id, $2 completed_at -> cancels what has not been sent yet
CANCEL_PENDING_DELIVERIES = """
UPDATE deliveries SET status = 'cancelled', completed_at = $2, next_attempt_at = $2
WHERE endpoint_id = $1 AND status = 'pending'
"""

# $1 endpoint_id, $2 reason, $3 updated_at
DISABLE_ENDPOINT = """
UPDATE endpoints SET enabled = false, disabled_reason = $2, updated_at = $3
WHERE id = $1 AND deleted_at IS NULL
"""

# $1 endpoint_id -> its live delivery counters and the number of deliveries waiting
# (pending: due or scheduled for a retry), counted on the endpoint's own queue index
ENDPOINT_DELIVERY_STATE = """
SELECT e.in_flight, e.consecutive_failures, e.circuit_open_until,
       (SELECT count(*)::int FROM deliveries d
        WHERE d.endpoint_id = e.id AND d.status = 'pending') AS pending
FROM endpoints e WHERE e.id = $1
"""

# ---- endpoint secrets ---------------------------------------------------------------------

# $1 endpoint_id, $2 secret, $3 created_at
INSERT_SECRET = """
INSERT INTO endpoint_secrets (endpoint_id, secret, created_at) VALUES ($1, $2, $3)
"""

# $1 endpoint_id, $2 public key (NULL for HMAC endpoints) -> the key the endpoint shows
SET_PUBLIC_KEY = """
UPDATE endpoints SET public_key = $2 WHERE id = $1
"""

# $1 endpoint_id, $2 expires_at -> retires the live secrets (they still sign until then)
EXPIRE_SECRETS = """
UPDATE endpoint_secrets SET expires_at = $2
WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $2)
"""

# $1 endpoint_ids, $2 now -> active secrets, oldest first (newest last) per endpoint
ACTIVE_SECRETS = """
SELECT endpoint_id, secret FROM endpoint_secrets
WHERE endpoint_id = ANY($1::text[]) AND (expires_at IS NULL OR expires_at > $2)
ORDER BY endpoint_id, created_at, id
"""

# ---- idempotency --------------------------------------------------------------------------

# $1 scope, $2 key
GET_IDEMPOTENT_RESPONSE = """
SELECT request_hash, response_status, response_body FROM idempotency_keys
WHERE scope = $1 AND key = $2
"""

# $1 scope, $2 key, $3 request_hash, $4 response_status, $5 response_body, $6 created_at
SAVE_IDEMPOTENT_RESPONSE = """
INSERT INTO idempotency_keys (scope, key, request_hash, response_status, response_body, created_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (scope, key) DO NOTHING
"""

# $1 scope, $2 key -> waits until a concurrent request with the same key has committed
LOCK_IDEMPOTENCY_KEY = "SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))"

# ---- mailings and events (ingest) ---------------------------------------------------------

# $1 lock keys (bigint[]) -> serializes writers of the same mailings; sorted to avoid deadlocks
LOCK_MAILINGS = """
SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT unnest($1::bigint[]) AS k ORDER BY 1) s
"""

# $1 tenant_ids, $2 environments, $3 mailing_ids (parallel arrays) -> their current status
CURRENT_MAILINGS = """
SELECT m.tenant_id, m.environment, m.mailing_id, m.status, m.mail_type, m.last_event_id,
       e.event_type AS last_event_type
FROM mailings m
JOIN unnest($1::text[], $2::text[], $3::text[]) AS k (tenant_id, environment, mailing_id)
  ON m.tenant_id = k.tenant_id AND m.environment = k.environment AND m.mailing_id = k.mailing_id
JOIN events e ON e.id = m.last_event_id
"""

# ---- usage counters (GET /internal/v1/tenants/{id}/usage) ----------------------------------
# Bumped inside the ingest and settle statements (no extra round trip), into the row of the
# backend's shard for the UTC day of `now`, so concurrent workers rarely wait on one row.
# Rows are grouped and sorted before the upsert, so two statements lock them in one order.

USAGE_SHARDS = 8

# a CTE for WRITE_EVENTS: counts `new_events` (tenant_id, environment) at day_param
USAGE_EVENTS_CTE = f"""
usage_events AS (
    INSERT INTO usage_daily AS u (tenant_id, environment, day, shard, events_accepted)
    SELECT tenant_id, environment, (({{now}})::timestamptz AT TIME ZONE 'UTC')::date,
           pg_backend_pid() % {USAGE_SHARDS}, count(*)
    FROM new_events GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (tenant_id, day, environment, shard)
    DO UPDATE SET events_accepted = u.events_accepted + EXCLUDED.events_accepted
)"""

# a CTE for SETTLE: the batch's counts per tenant and environment, computed by the worker
# ($23 tenant ids, $24 environments, $25 deliveries succeeded, $26 failed attempts, $27 dead
# letters), at {now}; {after} may name the CTE it must follow
USAGE_SETTLED_CTE = f"""
usage_settled AS (
    INSERT INTO usage_daily AS u (tenant_id, environment, day, shard, deliveries_succeeded,
                                  failed_attempts, dead_letters)
    SELECT c.tenant_id, c.environment, (({{now}})::timestamptz AT TIME ZONE 'UTC')::date,
           pg_backend_pid() % {USAGE_SHARDS}, c.succeeded, c.failed, c.dead
    FROM unnest($23::text[], $24::text[], $25::int[], $26::int[], $27::int[])
         AS c (tenant_id, environment, succeeded, failed, dead) {{after}}
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

# Writes a batch of accepted transitions in ONE statement: the events, the mailings' new
# status (one row per mailing: the caller keeps each mailing's last transition), and one
# delivery per matching live endpoint (an endpoint whose circuit is open starts when it
# closes); NOTIFYs the workers when there is anything to deliver (it fires on commit).
# Events: $1 ids, $2 tenant_ids, $3 environments, $4 event_types, $5 mailing_ids,
#   $6 occurred_ats, $7 bodies. $8 now (created_at, and when deliveries fall due).
# Mailings: $9 tenant_ids, $10 environments, $11 mailing_ids, $12 statuses, $13 mail_types,
#   $14 last event ids.
# -> the number of deliveries created
WRITE_EVENTS = (
    """
WITH new_events AS (
    INSERT INTO events (id, tenant_id, environment, event_type, mailing_id, occurred_at,
                        created_at, body)
    SELECT id, tenant_id, environment, event_type, mailing_id, occurred_at, $8, body
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                $7::bytea[]) AS t (id, tenant_id, environment, event_type, mailing_id, occurred_at, body)
    RETURNING id, tenant_id, environment, event_type
),
mailings_now AS (
    INSERT INTO mailings (tenant_id, environment, mailing_id, status, mail_type, last_event_id, updated_at)
    SELECT tenant_id, environment, mailing_id, status, mail_type, event_id, $8
    FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
         AS t (tenant_id, environment, mailing_id, status, mail_type, event_id)
    ON CONFLICT (tenant_id, environment, mailing_id) DO UPDATE SET
        status = EXCLUDED.status, mail_type = EXCLUDED.mail_type,
        last_event_id = EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at
),
fanned AS (
    INSERT INTO deliveries (event_id, endpoint_id, next_attempt_at, created_at)
    SELECT ev.id, ep.id, GREATEST($8, COALESCE(ep.circuit_open_until, $8)), $8
    FROM new_events ev
    JOIN endpoints ep
      ON ep.tenant_id = ev.tenant_id AND ep.environment = ev.environment
     AND ep.enabled AND ep.deleted_at IS NULL
     AND ep.event_types && ARRAY['*', split_part(ev.event_type, '.', 1) || '.*', ev.event_type]
    RETURNING 1
),"""
    + USAGE_EVENTS_CTE.format(now="$8")
    + """,
created AS (SELECT count(*)::int AS n FROM fanned)
SELECT n, CASE WHEN n > 0 THEN pg_notify('dispatcher_deliveries', '') END AS notified
FROM created
"""
)

# wakes every listening worker; sent inside the ingest transaction, so it fires on commit
NOTIFY_DELIVERIES = "SELECT pg_notify('dispatcher_deliveries', '')"

# ---- the delivery queue -------------------------------------------------------------------

# $1 now, $2 endpoints visited at most, $3 batch size, $4 per-endpoint cap, $5 breaker
# threshold, $6 lease expiry, $7 endpoint id to start after ('' for the first). Walks the
# endpoints that have pending work (a loose index scan, in id order after $7 and then from the
# start up to $7, so successive claims rotate over all of them), keeps those with something due that are below their cap
# and not behind an open circuit, oldest head first, and takes each one's due deliveries from
# its own index range, a fair share of the batch each: the backlog of a saturated endpoint is
# never walked past. Endpoints of suspended or deleted tenants are skipped (their work
# waits). The endpoint rows are locked in id order, so the cap is exact across workers.
# Returns everything a worker needs to send.
CLAIM_DELIVERIES = """
WITH RECURSIVE pending_endpoints (id, n) AS (
    (SELECT endpoint_id, 1 FROM deliveries
     WHERE status = 'pending' AND endpoint_id > $7 ORDER BY endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT d.endpoint_id FROM deliveries d
            WHERE d.status = 'pending' AND d.endpoint_id > p.id
            ORDER BY d.endpoint_id LIMIT 1), p.n + 1
    FROM pending_endpoints p WHERE p.id IS NOT NULL AND p.n < $2
),
wrapped_endpoints (id, n) AS (
    (SELECT endpoint_id, 1 FROM deliveries
     WHERE status = 'pending' AND endpoint_id <= $7 ORDER BY endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT d.endpoint_id FROM deliveries d
            WHERE d.status = 'pending' AND d.endpoint_id > w.id AND d.endpoint_id <= $7
            ORDER BY d.endpoint_id LIMIT 1), w.n + 1
    FROM wrapped_endpoints w WHERE w.id IS NOT NULL AND w.n < $2
),
visited AS (
    SELECT id FROM pending_endpoints WHERE id IS NOT NULL
    UNION ALL
    SELECT id FROM wrapped_endpoints WHERE id IS NOT NULL
),
heads AS (
    SELECT p.id, h.head
    FROM visited p
    CROSS JOIN LATERAL (SELECT d.next_attempt_at AS head FROM deliveries d
                        WHERE d.status = 'pending' AND d.endpoint_id = p.id
                        ORDER BY d.next_attempt_at LIMIT 1) h
    WHERE h.head <= $1
),
candidates AS (
    SELECT heads.id FROM heads
    JOIN endpoints e ON e.id = heads.id
    -- the tenant filter: a suspended or deleted tenant's deliveries wait unsent
    JOIN tenants t ON t.id = e.tenant_id AND t.suspended_at IS NULL AND t.deleted_at IS NULL
    WHERE e.in_flight < CASE WHEN e.consecutive_failures >= $5 THEN 1 ELSE $4 END
      AND (e.circuit_open_until IS NULL OR e.circuit_open_until <= $1)
    ORDER BY heads.head
    LIMIT $3
),
room AS (
    SELECT e.id,
           CASE WHEN e.consecutive_failures >= $5 THEN 1 ELSE $4 END - e.in_flight AS free
    FROM endpoints e
    WHERE e.id IN (SELECT id FROM candidates)
      AND (e.circuit_open_until IS NULL OR e.circuit_open_until <= $1)
    ORDER BY e.id
    FOR UPDATE
),
share AS (
    SELECT ceil($3::float8 / GREATEST(count(*), 1))::int AS each FROM room
),
picked AS (
    SELECT d.id, d.endpoint_id
    FROM room
    CROSS JOIN share
    CROSS JOIN LATERAL (SELECT d.id, d.endpoint_id, d.next_attempt_at FROM deliveries d
                        WHERE d.status = 'pending' AND d.endpoint_id = room.id
                          AND d.next_attempt_at <= $1
                        ORDER BY d.next_attempt_at, d.id
                        LIMIT LEAST(GREATEST(room.free, 0), share.each)
                        FOR UPDATE SKIP LOCKED) d
    ORDER BY d.next_attempt_at, d.id
    LIMIT $3
),
counted AS (
    UPDATE endpoints e SET in_flight = e.in_flight + p.n
    FROM (SELECT endpoint_id, count(*) AS n FROM picked GROUP BY endpoint_id) p
    WHERE e.id = p.endpoint_id
),
claimed AS (
    UPDATE deliveries d
    SET status = 'in_flight', attempts = d.attempts + 1, lease_expires_at = $6
    FROM picked
    WHERE d.id = picked.id
    RETURNING d.id, d.event_id, d.endpoint_id, d.attempts, d.replayed_at, d.attempts_before_replay
)
SELECT c.id, c.event_id, c.endpoint_id, c.attempts, ev.event_type, ev.created_at AS event_created_at,
       COALESCE(c.replayed_at, ev.created_at) AS age_origin,
       c.attempts - c.attempts_before_replay AS schedule_attempt,
       ev.body, ep.url, ep.url_credentials, ep.standard_webhooks, ep.signing,
       ep.tenant_id, ep.environment,
       ARRAY(SELECT s.secret FROM endpoint_secrets s
             WHERE s.endpoint_id = c.endpoint_id AND (s.expires_at IS NULL OR s.expires_at > $1)
             ORDER BY s.created_at, s.id) AS secrets
FROM claimed c
JOIN events ev ON ev.id = c.event_id
JOIN endpoints ep ON ep.id = c.endpoint_id
"""

# Settles a batch of attempts in ONE statement (one round trip, no transaction held open by
# the busy worker): records the attempts, moves the deliveries on (fenced by attempt number:
# a lease reclaimed meanwhile has a newer one), frees the endpoints' slots (locked in id
# order, like the claim, so the two never deadlock), updates their failure streaks, opens
# circuits, and postpones the backlog of endpoints whose circuit just opened.
# Attempts: $1 delivery_ids, $2 attempt numbers, $3 started_ats, $4 durations_ms, $5 outcomes,
#   $6 status_codes, $7 errors, $8 response bodies (only the attempts actually made).
# Deliveries: $9 ids, $10 attempt numbers, $11 new statuses, $12 next_attempt_ats,
#   $13 completed_ats, $14 status codes, $15 outcomes.
# Endpoints: $16 ids, $17 reset (a success came last), $18 failures after the last success.
# $19 now, $20 breaker threshold, $21 base open seconds, $22 max open seconds.
# Usage: $23..$27, see USAGE_SETTLED_CTE.
# -> the number of deliveries settled (a lease reclaimed meanwhile is not)
SETTLE = (
    """
WITH streaks AS (
    SELECT p.id, p.reset, p.fails,
           CASE WHEN p.reset THEN p.fails ELSE e.consecutive_failures + p.fails END AS failures
    FROM unnest($16::text[], $17::bool[], $18::int[]) AS p (id, reset, fails)
    JOIN endpoints e ON e.id = p.id
),
opened AS (
    SELECT id, CASE WHEN failures >= $20::int
                    THEN $19::timestamptz + make_interval(secs => LEAST(
                         $21::float8 * power(2, LEAST(failures - $20::int, 20)), $22::float8))
               END AS until
    FROM streaks
),
recorded AS (
    INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, outcome, status_code,
                          error, response_body)
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::float8[], $5::text[],
                         $6::int[], $7::text[], $8::text[])
),
settled AS (
    UPDATE deliveries d
    SET status = u.status,
        next_attempt_at = CASE WHEN u.status = 'pending'
            THEN GREATEST(u.next_at, COALESCE((SELECT o.until FROM opened o
                                               WHERE o.id = d.endpoint_id), u.next_at))
            ELSE u.next_at END,
        completed_at = u.completed_at, lease_expires_at = NULL,
        last_status_code = u.code, last_outcome = u.outcome
    FROM unnest($9::bigint[], $10::int[], $11::text[], $12::timestamptz[], $13::timestamptz[],
                $14::int[], $15::text[]) AS u (id, attempt, status, next_at, completed_at, code, outcome)
    WHERE d.id = u.id AND d.status = 'in_flight' AND d.attempts = u.attempt
    RETURNING d.endpoint_id
),"""
    + USAGE_SETTLED_CTE.format(now="$19", after="")
    + """,
released AS (
    SELECT endpoint_id, count(*)::int AS n FROM settled GROUP BY endpoint_id
),
locked AS (
    SELECT e.id FROM endpoints e WHERE e.id IN (SELECT id FROM streaks) ORDER BY e.id FOR UPDATE
),
streak AS (
    UPDATE endpoints e
    -- from the row as locked (re-read under the lock), not the snapshot: no lost streak
    SET in_flight = GREATEST(e.in_flight - COALESCE(r.n, 0), 0),
        consecutive_failures = CASE WHEN s.reset THEN s.fails
                                    ELSE e.consecutive_failures + s.fails END,
        circuit_open_until = CASE
            WHEN (CASE WHEN s.reset THEN s.fails ELSE e.consecutive_failures + s.fails END)
                 >= $20::int
            THEN $19::timestamptz + make_interval(secs => LEAST($21::float8 * power(2, LEAST(
                 (CASE WHEN s.reset THEN s.fails ELSE e.consecutive_failures + s.fails END)
                 - $20::int, 20)), $22::float8))
            END
    FROM streaks s
    JOIN locked l ON l.id = s.id
    LEFT JOIN released r ON r.endpoint_id = s.id
    WHERE e.id = s.id
    RETURNING e.id, e.circuit_open_until
),
postponed AS (
    UPDATE deliveries d SET next_attempt_at = s.circuit_open_until
    FROM streak s
    WHERE s.circuit_open_until IS NOT NULL AND d.endpoint_id = s.id
      AND d.status = 'pending' AND d.next_attempt_at < s.circuit_open_until
)
SELECT count(*)::int AS settled FROM settled
"""
)

# $1 endpoint_ids -> locks them in id order before their counters change
LOCK_ENDPOINTS = "SELECT id FROM endpoints WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"

# $1 delivery_ids, $2 attempts -> hands unsent work back (shutdown); the attempt did not happen
RELEASE_DELIVERIES = """
UPDATE deliveries d
SET status = 'pending', lease_expires_at = NULL, attempts = d.attempts - 1
FROM unnest($1::bigint[], $2::int[]) AS u (id, attempt)
WHERE d.id = u.id AND d.status = 'in_flight' AND d.attempts = u.attempt
RETURNING d.id, d.endpoint_id
"""

# $1 now, $2 limit -> leases of crashed workers back to pending, and their endpoints' counters
RECLAIM_EXPIRED = """
WITH expired AS (
    UPDATE deliveries d SET status = 'pending', lease_expires_at = NULL, next_attempt_at = $1
    WHERE d.id = ANY (ARRAY(
        SELECT id FROM deliveries
        WHERE status = 'in_flight' AND lease_expires_at < $1
        ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED))
    RETURNING d.endpoint_id
)
SELECT endpoint_id, count(*)::int AS n FROM expired GROUP BY endpoint_id ORDER BY endpoint_id
"""

# $1 endpoint_ids, $2 counts
RELEASE_ENDPOINT_SLOTS = """
UPDATE endpoints e SET in_flight = GREATEST(e.in_flight - u.n, 0)
FROM unnest($1::text[], $2::int[]) AS u (id, n)
WHERE e.id = u.id
"""

# -> when the next pending delivery falls due (NULL when the queue is empty)
NEXT_DUE = "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'"

# ---- gauges -------------------------------------------------------------------------------

# -> pending count (capped, so a huge backlog costs a bounded index scan) and the oldest one
BACKLOG_GAUGES = """
SELECT (SELECT count(*) FROM (SELECT 1 FROM deliveries WHERE status IN ('pending', 'in_flight')
                              LIMIT 1000000) s) AS pending,
       (SELECT min(created_at) FROM deliveries WHERE status IN ('pending', 'in_flight')) AS oldest
"""

# $1 now -> endpoints by state
ENDPOINT_STATE_COUNTS = """
SELECT CASE WHEN NOT enabled THEN 'disabled'
            WHEN circuit_open_until > $1 THEN 'circuit_open'
            ELSE 'enabled' END AS state,
       count(*)::int AS n
FROM endpoints WHERE deleted_at IS NULL GROUP BY 1
"""

# ---- delivery log, replay and retry (API and `dispatcher dead-letters`) -------------------
# A re-queued delivery is due now, keeps its event and its attempt count, and starts a fresh
# retry window: replayed_at is the max-age origin, attempts_before_replay the backoff base.

# $1 endpoint_id, $2 status (NULL for all), $3 cursor: deliveries older than this id (NULL for
# the first page), $4 limit, $5 event_type, $6 since, $7 until (each NULL: no filter; the time
# range [since, until) is on the delivery's creation) -> newest first
LIST_ENDPOINT_DELIVERIES = """
SELECT d.id, d.event_id, ev.event_type, d.endpoint_id, d.status, d.attempts, d.next_attempt_at,
       d.created_at, d.completed_at, d.last_status_code, d.last_outcome, d.replayed_at
FROM deliveries d
JOIN events ev ON ev.id = d.event_id
WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.status = $2)
  AND ($3::bigint IS NULL OR d.id < $3)
  AND ($5::text IS NULL OR ev.event_type = $5)
  AND ($6::timestamptz IS NULL OR d.created_at >= $6)
  AND ($7::timestamptz IS NULL OR d.created_at < $7)
ORDER BY d.id DESC
LIMIT $4
"""

# $1 delivery id, $2 endpoint_id -> the id when it is a delivery of that endpoint (page cursor)
GET_DELIVERY_CURSOR = "SELECT id FROM deliveries WHERE id = $1 AND endpoint_id = $2"

# $1 delivery ids, $2 attempts kept per delivery (the newest) -> oldest first per delivery
ATTEMPTS_OF_DELIVERIES = """
SELECT a.delivery_id, a.attempt, a.started_at, a.duration_ms, a.outcome, a.status_code, a.error,
       a.response_body
FROM unnest($1::bigint[]) AS d (id)
CROSS JOIN LATERAL (
    SELECT * FROM attempts WHERE attempts.delivery_id = d.id
    ORDER BY attempts.attempt DESC, attempts.id DESC
    LIMIT $2
) a
ORDER BY a.delivery_id, a.attempt, a.id
"""

# $1 event ids -> their deliveries, by event then endpoint
DELIVERIES_OF_EVENTS = """
SELECT d.id, d.event_id, ev.event_type, d.endpoint_id, d.status, d.attempts, d.next_attempt_at,
       d.created_at, d.completed_at, d.last_status_code, d.last_outcome, d.replayed_at
FROM deliveries d
JOIN events ev ON ev.id = d.event_id
WHERE d.event_id = ANY($1::text[])
ORDER BY d.event_id, d.endpoint_id
"""

# $1 delivery id, $2 tenant_id, $3 environment -> the delivery and its endpoint's state
GET_DELIVERY = """
SELECT d.id, d.event_id, ev.event_type, d.endpoint_id, d.status, d.attempts, d.next_attempt_at,
       d.created_at, d.completed_at, d.last_status_code, d.last_outcome, d.replayed_at,
       ep.enabled AS endpoint_enabled, ep.deleted_at IS NOT NULL AS endpoint_deleted
FROM deliveries d
JOIN endpoints ep ON ep.id = d.endpoint_id
JOIN events ev ON ev.id = d.event_id
WHERE d.id = $1 AND ep.tenant_id = $2 AND ep.environment = $3
"""

# $1 delivery id, $2 tenant_id, $3 environment, $4 now -> the id when re-queued; nothing when
# it is another tenant's, in flight, or its endpoint is disabled or deleted
RETRY_DELIVERY = """
UPDATE deliveries d
SET status = 'pending', next_attempt_at = $4, completed_at = NULL, replayed_at = $4,
    attempts_before_replay = d.attempts
FROM endpoints ep
WHERE d.id = $1 AND ep.id = d.endpoint_id AND ep.tenant_id = $2 AND ep.environment = $3
  AND ep.enabled AND ep.deleted_at IS NULL AND d.status <> 'in_flight'
RETURNING d.id
"""

# $1 endpoint_id, $2 since (NULL: unbounded), $3 until (NULL: unbounded), $4 now -> re-queues
# the endpoint's dead deliveries created in [since, until)
REPLAY_DEAD_DELIVERIES = """
UPDATE deliveries d
SET status = 'pending', next_attempt_at = $4, completed_at = NULL, replayed_at = $4,
    attempts_before_replay = d.attempts
WHERE d.endpoint_id = $1 AND d.status = 'dead'
  AND ($2::timestamptz IS NULL OR d.created_at >= $2)
  AND ($3::timestamptz IS NULL OR d.created_at < $3)
"""

# $1 endpoint_id, $2 since (NULL: unbounded), $3 until (NULL: unbounded), $4 now -> re-queues
# every failed delivery created in [since, until): dead, cancelled, and pending ones that
# have failed at least once (they start over now instead of waiting for their backoff)
REPLAY_FAILED_DELIVERIES = """
UPDATE deliveries d
SET status = 'pending', next_attempt_at = $4, completed_at = NULL, replayed_at = $4,
    attempts_before_replay = d.attempts
WHERE d.endpoint_id = $1
  AND (d.status IN ('dead', 'cancelled') OR (d.status = 'pending' AND d.attempts > 0))
  AND ($2::timestamptz IS NULL OR d.created_at >= $2)
  AND ($3::timestamptz IS NULL OR d.created_at < $3)
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
JOIN events ev ON ev.id = d.event_id
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
REPLAY_DEAD_LETTERS_CHUNK = """
WITH chunk AS (
    SELECT d.id FROM deliveries d
    JOIN endpoints ep ON ep.id = d.endpoint_id
    WHERE d.status = 'dead' AND d.id > $5 AND ep.enabled AND ep.deleted_at IS NULL
      AND ($1::text IS NULL OR ep.tenant_id = $1) AND ($2::text IS NULL OR d.endpoint_id = $2)
      AND ($3::timestamptz IS NULL OR d.created_at >= $3)
      AND ($4::timestamptz IS NULL OR d.created_at < $4)
    ORDER BY d.id
    LIMIT $6
    FOR UPDATE OF d SKIP LOCKED
),
requeued AS (
    UPDATE deliveries d
    SET status = 'pending', next_attempt_at = $7, completed_at = NULL, replayed_at = $7,
        attempts_before_replay = d.attempts
    FROM chunk
    WHERE d.id = chunk.id AND d.status = 'dead'
    RETURNING d.id
)
SELECT (SELECT count(*) FROM chunk)::int AS scanned,
       (SELECT max(id) FROM chunk) AS last_id,
       (SELECT count(*) FROM requeued)::int AS requeued
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

# ---- retention ------------------------------------------------------------------------------

# -> true when this transaction now holds the retention lock; false while another process
# applies retention (it is released at commit, so a crashed run never blocks the next one)
TRY_RETENTION_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('dispatcher.retention', 0))"

# Taken shared (for the transaction) by whatever puts an existing event back in the queue
# (replay, retry): retention takes it exclusively while it checks that nothing pending needs a
# partition and drops it, so a replay never re-queues a delivery whose event is being removed.
LOCK_REQUEUE_SHARED = (
    "SELECT pg_advisory_xact_lock_shared(hashtextextended('dispatcher.requeue', 0))"
)
LOCK_REQUEUE_EXCLUSIVE = "SELECT pg_advisory_xact_lock(hashtextextended('dispatcher.requeue', 0))"

# $1 names of range-partitioned parents (resolved on the search_path; unknown names are
# skipped) -> each one's partitions: bound as PostgreSQL prints it, planner row estimate (-1
# before the first ANALYZE) and size on disk with indexes and TOAST
HISTORY_PARTITIONS = """
SELECT t.name AS parent, c.oid::regclass::text AS partition,
       pg_get_expr(c.relpartbound, c.oid) AS bound,
       c.reltuples::bigint AS estimated_rows, pg_total_relation_size(c.oid) AS bytes
FROM unnest($1::text[]) AS t (name)
JOIN pg_partitioned_table pt ON pt.partrelid = to_regclass(t.name)
JOIN pg_inherits i ON i.inhparent = pt.partrelid
JOIN pg_class c ON c.oid = i.inhrelid
WHERE pt.partstrat = 'r' AND pt.partnatts = 1
ORDER BY t.name, c.relname
"""

# $1 table name -> its size in pages (batched trims walk it page range by page range)
TABLE_PAGES = """
SELECT (pg_relation_size(to_regclass($1)) / current_setting('block_size')::int)::bigint
"""

# $1 table name -> bytes on disk with indexes and TOAST (0 when absent)
TABLE_BYTES = "SELECT COALESCE(pg_total_relation_size(to_regclass($1)), 0)"

# $1 first page, $2 page after the last, $3 cutoff -> mailings in those pages whose last
# change is older than the cutoff, deleted (a TID range scan: bounded work, no index needed)
TRIM_MAILINGS = """
DELETE FROM mailings
WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid
  AND updated_at < $3
"""

# $1 cutoff -> how many mailings TRIM_MAILINGS would delete (dry run)
COUNT_EXPIRED_MAILINGS = "SELECT count(*) FROM mailings WHERE updated_at < $1"

# $1 first page, $2 page after the last, $3 cutoff -> expired Idempotency-Key records deleted
TRIM_IDEMPOTENCY_KEYS = """
DELETE FROM idempotency_keys
WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid
  AND created_at < $3
"""

# $1 cutoff -> how many TRIM_IDEMPOTENCY_KEYS would delete (dry run)
COUNT_EXPIRED_IDEMPOTENCY_KEYS = "SELECT count(*) FROM idempotency_keys WHERE created_at < $1"

# ---- secrets at rest (dispatcher/store/secrets.py) ----------------------------------------
# Sealed values read "v1:<key id>:<base64>"; anything else in endpoint_secrets.secret is a
# legacy plain value, written before migration 006, sealed at the next start-up.

# -> the key ids that sealed what the database holds (start-up check: each must be known)
SEALED_KEY_IDS = """
SELECT DISTINCT split_part(secret, ':', 2) AS key_id FROM endpoint_secrets
WHERE secret LIKE 'v1:%'
UNION
SELECT DISTINCT split_part(url_credentials, ':', 2) FROM endpoints
WHERE url_credentials IS NOT NULL
"""

# $1 pattern of the values to leave alone ('v1:<current key id>:%'), $2 after this id,
# $3 limit -> secrets sealed under another key, or not sealed at all, in id order
SECRETS_TO_SEAL = """
SELECT id, endpoint_id, secret FROM endpoint_secrets
WHERE secret NOT LIKE $1 AND id > $2
ORDER BY id
LIMIT $3
"""

# $1 id, $2 the value read, $3 the new sealed value -> nothing when it changed meanwhile
RESEAL_SECRET = "UPDATE endpoint_secrets SET secret = $3 WHERE id = $1 AND secret = $2"

# $1 pattern of the values to leave alone, $2 after this id, $3 limit -> URL credentials
# sealed under another key, and URLs still carrying their user:password (legacy rows)
CREDENTIALS_TO_SEAL = """
SELECT id, url, url_credentials FROM endpoints
WHERE id > $2
  AND ((url_credentials IS NOT NULL AND url_credentials NOT LIKE $1)
       OR (url_credentials IS NULL AND url ~ '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@'))
ORDER BY id
LIMIT $3
"""

# $1 id, $2 url read, $3 credentials read, $4 new url, $5 new sealed credentials
RESEAL_CREDENTIALS = """
UPDATE endpoints SET url = $4, url_credentials = $5
WHERE id = $1 AND url = $2 AND url_credentials IS NOT DISTINCT FROM $3
"""

# ---- removing a deleted tenant (dispatcher/tenant_purge.py) -------------------------------
# Each statement removes at most $2 rows, in its own short transaction, so a tenant with
# millions of deliveries never holds a long lock or a long-running statement.

# -> deleted tenants whose rows are still being removed, oldest deletion first
DELETED_TENANTS = """
SELECT id FROM tenants WHERE deleted_at IS NOT NULL ORDER BY deleted_at LIMIT 100
"""

# $1 tenant_id -> its endpoints, deleted ones too
TENANT_ENDPOINT_IDS = "SELECT id FROM endpoints WHERE tenant_id = $1"

# $1 endpoint ids, $2 limit -> deletes deliveries (their attempts cascade) that no worker
# holds; an in-flight one is left to its worker's settle, then taken by a later batch
PURGE_DELIVERIES = """
DELETE FROM deliveries WHERE id IN (
    SELECT d.id FROM unnest($1::text[]) AS e (id)
    CROSS JOIN LATERAL (SELECT id FROM deliveries
                        WHERE endpoint_id = e.id AND status <> 'in_flight' LIMIT $2) d
    LIMIT $2)
"""

# $1 endpoint ids -> how many deliveries are still held by workers
COUNT_IN_FLIGHT = """
SELECT count(*)::int FROM deliveries WHERE endpoint_id = ANY($1::text[]) AND status = 'in_flight'
"""

# $1 tenant_id, $2 limit (events go once their deliveries are gone)
PURGE_EVENTS = """
DELETE FROM events WHERE id IN (
    SELECT id FROM events WHERE tenant_id = $1 AND mailing_id IS NOT NULL LIMIT $2)
"""

# $1 tenant_id, $2 limit
PURGE_MAILINGS = """
DELETE FROM mailings WHERE (tenant_id, environment, mailing_id) IN (
    SELECT tenant_id, environment, mailing_id FROM mailings WHERE tenant_id = $1 LIMIT $2)
"""

# $1 tenant_id, $2 limit
PURGE_USAGE = """
DELETE FROM usage_daily WHERE (tenant_id, day, environment, shard) IN (
    SELECT tenant_id, day, environment, shard FROM usage_daily WHERE tenant_id = $1 LIMIT $2)
"""

# $1 tenant_id -> its stored Idempotency-Key answers (scopes '<tenant>:<environment>')
PURGE_TENANT_IDEMPOTENCY = """
DELETE FROM idempotency_keys WHERE scope IN ($1 || ':sandbox', $1 || ':production')
"""

# $1 tenant_id -> the tenant row, and by cascade what little is left (keys, endpoints and
# their secrets): only once nothing large remains
PURGE_TENANT = "DELETE FROM tenants WHERE id = $1 AND deleted_at IS NOT NULL"
