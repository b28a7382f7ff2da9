"""Tenants, their API keys and portal sessions, and removing a deleted tenant's rows."""

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
