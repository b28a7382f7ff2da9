-- Usage counters: a row per database session (backend pid) instead of 8 shards by pid modulo.
--
-- With shards by pid % 8, two live sessions could share a counter row, and a transaction left
-- open (a platform's transactional outbox around record_transition, an ingest waiting for a
-- busy mailing) held that row for its whole length: every other ingest, settle or expiry sweep
-- of that tenant whose session fell in the same shard waited for it. A session's own row is
-- never bumped by another live session. Rows of closed days are folded into shard 0 (no
-- backend has pid 0) by the workers' housekeeping, so a day keeps about one row per tenant and
-- environment; the partial index lets the fold find what is left to fold without reading the
-- folded history.
ALTER TABLE usage_daily ALTER COLUMN shard TYPE integer;
CREATE INDEX usage_daily_unfolded ON usage_daily (day) WHERE shard <> 0;
