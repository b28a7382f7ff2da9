"""Prometheus metrics of SPEC section 6; no tenant or endpoint ids as labels (cardinality)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from dispatcher.policy import Outcome

EVENTS_INGESTED = Counter(
    "webhook_events_ingested", "Events accepted from the platform (API or outbox)"
)
DELIVERY_ATTEMPTS = Counter(
    "webhook_delivery_attempts", "Delivery attempts by outcome", ["outcome"]
)
ATTEMPT_DURATION = Histogram(
    "webhook_delivery_attempt_duration_seconds",
    "Time from sending a delivery to its answer (or failure)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENT_LATENCY = Histogram(
    "webhook_event_delivery_latency_seconds",
    "Time from an event's acceptance to its first 2xx at an endpoint",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600, 86400),
)
DELIVERIES_PENDING = Gauge(
    "webhook_deliveries_pending", "Deliveries waiting to be sent or in flight"
)
OLDEST_PENDING_AGE = Gauge(
    "webhook_oldest_pending_age_seconds", "Age of the oldest delivery not yet settled"
)
DEAD_LETTERS = Counter("webhook_dead_letters", "Deliveries that exhausted their retries")
ENDPOINTS = Gauge("webhook_endpoints", "Endpoints by state", ["state"])
ENDPOINTS_LIMITED = Gauge(
    "webhook_endpoints_limited",
    "Live endpoints held back by flow control: at their concurrency limit, or waiting for "
    "their next rate-limit slot",
    ["reason"],
)

for _outcome in Outcome:
    DELIVERY_ATTEMPTS.labels(outcome=_outcome.value)
for _state in ("enabled", "disabled", "circuit_open"):
    ENDPOINTS.labels(state=_state)
RETENTION_REMOVED = Counter(
    "webhook_retention_removed",
    "Rows removed by retention, by table (dropped partitions count by planner estimate)",
    ["table"],
)
RETAINED_BYTES = Gauge(
    "webhook_retained_bytes", "Bytes on disk of the tables retention bounds", ["table"]
)
RETAINED_DAYS = Gauge(
    "webhook_retained_days", "How many days back each partitioned history table reaches", ["table"]
)
RETENTION_LAST_RUN = Gauge(
    "webhook_retention_last_run_timestamp_seconds",
    "When this process last finished a retention round (Unix time; 0: not yet)",
)
LIMIT_CUTS = Counter(
    "webhook_concurrency_limit_cuts",
    "Cuts of an endpoint's adaptive concurrency limit, by the signal that cut it: overload "
    "(timeouts, connection errors, 5xx, 429) or latency (its answers slowed down)",
    ["signal"],
)
for _reason in ("concurrency", "rate"):
    ENDPOINTS_LIMITED.labels(reason=_reason)
for _signal in ("overload", "latency"):
    LIMIT_CUTS.labels(signal=_signal)
