-- Flow control per endpoint: adaptive concurrency, a rate limit, ordered delivery per mailing.
--
-- Settings a tenant chooses (endpoints): rate_limit_per_second (NULL: none) and ordering.
-- State every worker shares (endpoint_state), changed only under its row lock:
--   concurrency_limit .. limit_decreased_at  the AIMD limiter (dispatcher/limiter.py);
--                                            NULL limit: never adapted, the initial value
--   rate_tat                                 the next free send slot (dispatcher/ratelimit.py)
-- Queued deliveries of an endpoint with ordering = 'mailing' carry their mailing, so the claim
-- can hold a later event back while an earlier one of the same mailing is still queued.

ALTER TABLE endpoints
    ADD COLUMN rate_limit_per_second integer
        CHECK (rate_limit_per_second BETWEEN 1 AND 10000),
    ADD COLUMN ordering text NOT NULL DEFAULT 'none' CHECK (ordering IN ('none', 'mailing'));

ALTER TABLE endpoint_state
    ADD COLUMN concurrency_limit double precision,
    ADD COLUMN limit_threshold double precision,          -- NULL: still in slow start
    ADD COLUMN latency_baseline double precision,         -- seconds
    ADD COLUMN latency_recent double precision,           -- seconds, a moving average
    ADD COLUMN baseline_at timestamptz,
    ADD COLUMN limit_decreased_at timestamptz,
    ADD COLUMN rate_tat timestamptz;

ALTER TABLE delivery_queue ADD COLUMN mailing_id text;

-- ordering: the queued deliveries of one mailing to one endpoint, in event order
CREATE INDEX delivery_queue_mailing_order ON delivery_queue (endpoint_id, mailing_id, id)
    WHERE mailing_id IS NOT NULL;
