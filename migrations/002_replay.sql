-- Replay and retry of deliveries (POST /v1/webhooks/{id}/replay, POST /v1/deliveries/{id}/retry,
-- `dispatcher dead-letters replay`).
--
-- A re-queued delivery keeps its event (same id, byte-identical body) and keeps counting
-- attempts, so X-Delivery-Attempt only grows. It gets a fresh retry window: the max age
-- counts from replayed_at when set (else from the event's created_at), and the backoff
-- exponent from the attempts made since the replay (attempts - attempts_before_replay).

ALTER TABLE deliveries ADD COLUMN replayed_at timestamptz;
ALTER TABLE deliveries ADD COLUMN attempts_before_replay integer NOT NULL DEFAULT 0;

-- dead letters: the few dead rows among the whole history, per endpoint (API replay, CLI)
CREATE INDEX deliveries_dead ON deliveries (endpoint_id, id) WHERE status = 'dead';
