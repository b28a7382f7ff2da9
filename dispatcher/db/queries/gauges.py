"""The backlog and endpoint-state gauges, read on every scrape."""

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
