"""Stored responses of requests sent with an `Idempotency-Key`."""

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
