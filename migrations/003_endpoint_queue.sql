-- Per-endpoint queue order: the claim finds the endpoints with pending work by a loose index
-- scan and takes each one's due deliveries from its own range, so the backlog of an endpoint
-- at its concurrency cap (slow, or dead before its circuit opens) is never walked past.
CREATE INDEX deliveries_endpoint_due ON deliveries (endpoint_id, next_attempt_at, id)
    WHERE status = 'pending';
