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
disabled_reason, metadata, standard_webhooks, created_at, updated_at, signing, public_key,
rate_limit_per_second, ordering
"""

# $1 id, $2 tenant_id, $3 environment, $4 url (without credentials), $5 description,
# $6 event_types, $7 enabled, $8 metadata, $9 standard_webhooks, $10 created_at, $11 signing,
# $12 public_key (ed25519), $13 sealed URL credentials (NULL: none), $14 rate_limit_per_second,
# $15 ordering
INSERT_ENDPOINT = f"""
INSERT INTO endpoints (id, tenant_id, environment, url, description, event_types, enabled,
                       metadata, standard_webhooks, created_at, updated_at, signing, public_key,
                       url_credentials, rate_limit_per_second, ordering)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14, $15)
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
# $8 metadata, $9 standard_webhooks, $10 updated_at, $13 ordering. NULL keeps the column as it
# is, except description, which $11 (true) clears, and the rate limit: $14 (true) sets it to
# $15 (NULL: no limit), starting afresh (no slot reserved ahead). A new url ($4, without
# credentials) replaces the sealed credentials too ($12, NULL when it has none). Enabling
# gives the endpoint a fresh failure streak.
UPDATE_ENDPOINT = f"""
WITH updated AS (
UPDATE endpoints SET
    url = COALESCE($4, url),
    url_credentials = CASE WHEN $4 IS NULL THEN url_credentials ELSE $12 END,
    description = CASE WHEN $11 THEN NULL ELSE COALESCE($5, description) END,
    event_types = COALESCE($6, event_types),
    enabled = COALESCE($7, enabled),
    disabled_reason = CASE WHEN $7 IS NULL THEN disabled_reason
                           WHEN $7 THEN NULL ELSE 'disabled by tenant' END,
    metadata = COALESCE($8, metadata),
    standard_webhooks = COALESCE($9, standard_webhooks),
    ordering = COALESCE($13, ordering),
    rate_limit_per_second = CASE WHEN $14 THEN $15::int ELSE rate_limit_per_second END,
    updated_at = $10
WHERE id = $1 AND tenant_id = $2 AND environment = $3 AND deleted_at IS NULL
RETURNING {ENDPOINT_COLUMNS}
),
fresh AS (
    UPDATE endpoint_state s
    SET consecutive_failures = CASE WHEN $7 THEN 0 ELSE s.consecutive_failures END,
        circuit_open_until = CASE WHEN $7 THEN NULL ELSE s.circuit_open_until END,
        rate_tat = CASE WHEN $14 THEN NULL ELSE s.rate_tat END
    FROM updated u WHERE s.endpoint_id = u.id AND ($7 OR $14)
)
SELECT * FROM updated
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

# $1 endpoint_id, $2 completed_at -> cancels what has not been sent yet: out of the queue, into
# the history (lock LOCK_ENDPOINT_STATE first, in the same transaction)
CANCEL_PENDING_DELIVERIES = """
WITH cancelled AS (
    DELETE FROM delivery_queue q WHERE q.endpoint_id = $1 AND q.worker_id IS NULL
    RETURNING q.*
)
INSERT INTO delivery_outcomes (id, generation, status, attempts, endpoint_id, event_id,
                               created_at, completed_at, replayed_at,
                               last_status_code, last_outcome)
SELECT id, generation, 'cancelled', attempts, endpoint_id, event_id, created_at, $2,
       replayed_at, last_status_code, last_outcome
FROM cancelled
"""

# $1 endpoint_id, $2 reason, $3 updated_at
DISABLE_ENDPOINT = """
UPDATE endpoints SET enabled = false, disabled_reason = $2, updated_at = $3
WHERE id = $1 AND deleted_at IS NULL
"""

# $1 endpoint_id -> its live delivery counters and the number of deliveries waiting
# (pending: due or scheduled for a retry), counted on the endpoint's own queue index
ENDPOINT_DELIVERY_STATE = """
SELECT s.in_flight, s.consecutive_failures, s.circuit_open_until, s.concurrency_limit,
       s.limit_threshold, s.latency_baseline, s.baseline_at, s.limit_decreased_at, s.rate_tat,
       s.latency_recent,
       (SELECT count(*)::int FROM delivery_queue d
        WHERE d.endpoint_id = s.endpoint_id AND d.worker_id IS NULL) AS pending
FROM endpoint_state s WHERE s.endpoint_id = $1
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

# $1 tenant ids (distinct), $2 tenant_ids, $3 environments, $4 mailing_ids (parallel arrays)
# -> a row per live tenant of $1 (mailing_id NULL), then a row per stored mailing: what ingest
# judges the reported transitions against, in one round trip
READ_INGEST = """
SELECT t.id AS tenant_id, NULL::text AS environment, NULL::text AS mailing_id,
       NULL::text AS status, NULL::text AS mail_type, NULL::text AS last_event_id
FROM tenants t WHERE t.id = ANY($1::text[]) AND t.deleted_at IS NULL
UNION ALL
SELECT m.tenant_id, m.environment, m.mailing_id, m.status, m.mail_type, m.last_event_id
FROM mailings m
JOIN unnest($2::text[], $3::text[], $4::text[]) AS k (tenant_id, environment, mailing_id)
  ON m.tenant_id = k.tenant_id AND m.environment = k.environment AND m.mailing_id = k.mailing_id
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
#   $14 last event ids, $15 the last event ids read (NULL: none), $16 lock keys (bigint[]).
# -> deliveries created, mailings written, events written
WRITE_EVENTS = (
    """
WITH locked AS (
    SELECT count(pg_advisory_xact_lock(k)) AS n
    FROM (SELECT DISTINCT unnest($16::bigint[]) AS k ORDER BY 1) s
),
mailings_now AS (
    INSERT INTO mailings (tenant_id, environment, mailing_id, status, mail_type, last_event_id, updated_at)
    SELECT t.tenant_id, t.environment, t.mailing_id, t.status, t.mail_type, t.event_id, $8
    FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
         AS t (tenant_id, environment, mailing_id, status, mail_type, event_id)
    JOIN tenants tn ON tn.id = t.tenant_id AND tn.deleted_at IS NULL
    CROSS JOIN locked
    ON CONFLICT (tenant_id, environment, mailing_id) DO UPDATE SET
        status = EXCLUDED.status, mail_type = EXCLUDED.mail_type,
        last_event_id = EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at
    WHERE mailings.last_event_id IS NOT DISTINCT FROM (
        SELECT r.read_id
        FROM unnest($9::text[], $10::text[], $11::text[], $15::text[])
             AS r (tenant_id, environment, mailing_id, read_id)
        WHERE r.tenant_id = mailings.tenant_id AND r.environment = mailings.environment
          AND r.mailing_id = mailings.mailing_id)
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
    SELECT ep.id, ev.tenant_id, ev.id, $8, $8,
           GREATEST($8, COALESCE(st.circuit_open_until, $8)), $8,
           CASE WHEN ep.ordering = 'mailing' THEN ev.mailing_id END
    FROM new_events ev
    JOIN unnest($1::text[]) WITH ORDINALITY AS o (id, n) ON o.id = ev.id
    JOIN endpoints ep
      ON ep.tenant_id = ev.tenant_id AND ep.environment = ev.environment
     AND ep.enabled AND ep.deleted_at IS NULL
     AND ep.event_types && ARRAY['*', split_part(ev.event_type, '.', 1) || '.*', ev.event_type]
    LEFT JOIN endpoint_state st ON st.endpoint_id = ep.id
    ORDER BY o.n, ep.id
    RETURNING 1
),"""
    + USAGE_EVENTS_CTE.format(now="$8")
    + """,
created AS (SELECT count(*)::int AS n FROM fanned)
SELECT n AS deliveries,
       (SELECT count(*)::int FROM mailings_now) AS mailings,
       (SELECT count(*)::int FROM new_events) AS events,
       CASE WHEN n > 0 THEN pg_notify('dispatcher_deliveries', '') END AS notified
FROM created
"""
)

# wakes every listening worker; sent inside the ingest transaction, so it fires on commit
NOTIFY_DELIVERIES = "SELECT pg_notify('dispatcher_deliveries', '')"

# ---- the delivery queue -------------------------------------------------------------------
# Lock order (docs/architecture.md): endpoint_state rows in endpoint id order, then queue rows
# (the claim, the reaper and the expiry sweep only ever SKIP LOCKED on queue rows), then
# history inserts. Nothing takes endpoint_state after a queue row it waits for.

# $1 now, $2 endpoints visited at most, $3 batch size, $4 concurrency ceiling, $5 breaker
# threshold, $6 lease expiry, $7 endpoint id to start after ('' for the first), $8 the claiming
# worker's id, $9 tenants with a reduced allowance, $10 their allowance (parallel arrays),
# $11 the allowance of every other tenant (its fair share of this worker's slots), $12
# concurrency floor, $13 initial concurrency limit, $14 rate-limit horizon and $15 its jitter
# allowance (microseconds).
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
# are exact across workers. Endpoints of suspended or deleted tenants are skipped (their work
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
    SELECT id FROM pending_endpoints WHERE id IS NOT NULL
    UNION ALL
    SELECT id FROM wrapped_endpoints WHERE id IS NOT NULL
),
heads AS (
    SELECT p.id, h.head, h.tenant_id
    FROM visited p
    CROSS JOIN LATERAL (SELECT d.next_attempt_at AS head, d.tenant_id FROM delivery_queue d
                        WHERE d.worker_id IS NULL AND d.endpoint_id = p.id
                        ORDER BY d.next_attempt_at LIMIT 1) h
    LEFT JOIN unnest($9::text[], $10::int[]) AS t (tenant_id, allowance)
      ON t.tenant_id = h.tenant_id
    WHERE h.head <= $1 AND COALESCE(t.allowance, $11) > 0
),
candidates AS (
    SELECT heads.id FROM heads
    JOIN endpoint_state s ON s.endpoint_id = heads.id
    -- the tenant filter: a suspended or deleted tenant's deliveries wait unsent
    JOIN tenants t ON t.id = heads.tenant_id AND t.suspended_at IS NULL AND t.deleted_at IS NULL
    JOIN endpoints e ON e.id = heads.id
    WHERE s.in_flight < CASE WHEN s.consecutive_failures >= $5 THEN 1 ELSE LEAST($4::int,
              GREATEST($12::int, floor(COALESCE(s.concurrency_limit, $13::int))::int)) END
      AND (s.circuit_open_until IS NULL OR s.circuit_open_until <= $1)
      AND (e.rate_limit_per_second IS NULL OR s.rate_tat IS NULL
           OR s.rate_tat <= $1 + $14::bigint * interval '1 microsecond')
    ORDER BY heads.head
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
    SELECT st.id, e.ordering = 'mailing' AS ordered, st.slot0, r.step, st.in_flight AS held,
           LEAST(CASE WHEN st.consecutive_failures >= $5 THEN 1 ELSE LEAST($4::int,
                     GREATEST($12::int, floor(COALESCE(st.concurrency_limit, $13::int))::int))
                 END - st.in_flight,
                 CASE WHEN r.step IS NULL THEN $3
                      ELSE GREATEST(floor(($14::bigint - (extract(epoch FROM st.slot0 - $1)
                                            * 1000000)::bigint)::float8 / r.step)::int + 1, 0)
                 END) AS free
    FROM state st
    JOIN endpoints e ON e.id = st.id
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

# $1 now, $2 oldest window start still alive, $3 limit -> pending deliveries past their max
# age become dead letters, whatever their endpoint's state (circuit open, at its cap,
# disabled), counted in the tenant's usage; -> how many
EXPIRE_PENDING = f"""
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
           pg_backend_pid() % {USAGE_SHARDS}, 0, 0, dead
    FROM per_tenant ORDER BY 1, 2
    ON CONFLICT (tenant_id, day, environment, shard)
    DO UPDATE SET dead_letters = u.dead_letters + EXCLUDED.dead_letters
)
SELECT count(*)::int FROM expired
"""

# -> when the next pending delivery falls due (NULL when the queue is empty)
NEXT_DUE = "SELECT min(next_attempt_at) FROM delivery_queue WHERE worker_id IS NULL"

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

# ---- gauges -------------------------------------------------------------------------------

# -> live deliveries (capped, so a huge backlog costs a bounded index scan) and the oldest one
BACKLOG_GAUGES = """
SELECT (SELECT count(*) FROM (SELECT 1 FROM delivery_queue LIMIT 1000000) s) AS pending,
       (SELECT min(created_at) FROM delivery_queue) AS oldest
"""

# $1 now -> endpoints by state
ENDPOINT_STATE_COUNTS = """
SELECT CASE WHEN NOT e.enabled THEN 'disabled'
            WHEN s.circuit_open_until > $1 THEN 'circuit_open'
            ELSE 'enabled' END AS state,
       count(*)::int AS n
FROM endpoints e LEFT JOIN endpoint_state s ON s.endpoint_id = e.id
WHERE e.deleted_at IS NULL GROUP BY 1
"""

# $1 now, $2 concurrency ceiling, $3 floor, $4 initial limit, $5 breaker threshold -> how many
# live endpoints are at their concurrency limit (as the claim computes it) and how many wait
# for their next rate-limit slot
ENDPOINT_FLOW_COUNTS = """
SELECT count(*) FILTER (WHERE s.in_flight >= CASE WHEN s.consecutive_failures >= $5 THEN 1
           ELSE LEAST($2::int, GREATEST($3::int, floor(COALESCE(s.concurrency_limit, $4::int))::int))
           END)::int AS concurrency,
       count(*) FILTER (WHERE s.rate_tat > $1)::int AS rate
FROM endpoints e JOIN endpoint_state s ON s.endpoint_id = e.id
WHERE e.deleted_at IS NULL AND e.enabled
"""

# ---- retention ----------------------------------------------------------------------------

# $1 range start, $2 range end -> whether a live delivery's event lies in [start, end): an
# events partition must not be dropped while a queue row still needs its event
QUEUE_NEEDS_EVENTS = """
SELECT EXISTS (SELECT 1 FROM delivery_queue
               WHERE event_created_at >= $1 AND event_created_at < $2)
"""

# ---- delivery log, replay and retry (API and `dispatcher dead-letters`) -------------------
# The `deliveries` view (migration 004) is each delivery's current state: its queue row while
# it is live, else its newest outcome in the history. A re-queued delivery (replay, retry)
# goes back into the queue with its id, its event and its attempt count, one generation up;
# it is due now and starts a fresh retry window (window start: age_origin; attempts_before_replay).

# $1 endpoint_id, $2 status (NULL for all), $3 cursor: deliveries older than this id (NULL for
# the first page), $4 limit, $5 event_type, $6 since, $7 until (each NULL: no filter; the time
# range [since, until) is on the delivery's creation) -> newest first
LIST_ENDPOINT_DELIVERIES = """
SELECT d.id, d.event_id, ev.event_type, d.endpoint_id, d.status, d.attempts, d.next_attempt_at,
       d.created_at, d.completed_at, d.last_status_code, d.last_outcome, d.replayed_at
FROM deliveries d
JOIN events ev ON ev.id = d.event_id AND ev.created_at = d.event_created_at
WHERE d.endpoint_id = $1 AND hashtext(d.endpoint_id) = hashtext($1)
  AND ($2::text IS NULL OR d.status = $2)
  AND ($3::bigint IS NULL OR d.id < $3)
  AND ($5::text IS NULL OR ev.event_type = $5)
  AND ($6::timestamptz IS NULL OR d.created_at >= $6)
  AND ($7::timestamptz IS NULL OR d.created_at < $7)
ORDER BY d.id DESC
LIMIT $4
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

# $1 endpoint ids, $2 limit -> deletes queued deliveries (and their attempts) that no worker
# holds; an in-flight one is left to its worker's settle, then taken by a later batch
PURGE_QUEUED_DELIVERIES = """
WITH picked AS (
    SELECT d.id FROM unnest($1::text[]) AS e (id)
    CROSS JOIN LATERAL (SELECT id FROM delivery_queue
                        WHERE endpoint_id = e.id AND worker_id IS NULL LIMIT $2) d
    LIMIT $2
),
tried AS (DELETE FROM attempts a USING picked p WHERE a.delivery_id = p.id)
DELETE FROM delivery_queue q USING picked p WHERE q.id = p.id AND q.worker_id IS NULL
"""

# $1 endpoint ids, $2 limit -> deletes final deliveries (and their attempts) from the history
PURGE_DELIVERY_HISTORY = """
WITH picked AS (
    SELECT DISTINCT d.id FROM unnest($1::text[]) AS e (id)
    CROSS JOIN LATERAL (SELECT o.id FROM delivery_outcomes o
                        WHERE hashtext(o.endpoint_id) = hashtext(e.id) AND o.endpoint_id = e.id
                        LIMIT $2) d
    LIMIT $2
),
tried AS (DELETE FROM attempts a USING picked p WHERE a.delivery_id = p.id)
DELETE FROM delivery_outcomes o USING picked p WHERE o.id = p.id
"""

# $1 endpoint ids -> how many deliveries are still held by workers
COUNT_IN_FLIGHT = """
SELECT count(*)::int FROM delivery_queue
WHERE endpoint_id = ANY($1::text[]) AND worker_id IS NOT NULL
"""

# $1 tenant_id, $2 limit -> deletes a batch of the tenant's mailings with their events (once
# their deliveries are gone): the events are found through their mailing, as the history is
# indexed by mailing (events_mailing), not by tenant
PURGE_MAILINGS = """
WITH picked AS (
    SELECT tenant_id, environment, mailing_id FROM mailings WHERE tenant_id = $1 LIMIT $2
),
gone_events AS (
    DELETE FROM events e USING picked p
    WHERE e.mailing_id = p.mailing_id AND e.tenant_id = p.tenant_id
      AND e.environment = p.environment
)
DELETE FROM mailings m USING picked p
WHERE m.tenant_id = p.tenant_id AND m.environment = p.environment
  AND m.mailing_id = p.mailing_id
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
