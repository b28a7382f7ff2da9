"""Endpoints, their signing secrets, and sealing secrets and URL credentials at rest."""

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
