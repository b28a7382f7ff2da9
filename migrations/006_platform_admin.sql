-- Platform administration (POST /internal/v1/tenants and friends) and secrets at rest.
--
-- Tenants get the platform's own customer id (`uid`, unique among live tenants), a
-- suspension mark and a deletion mark: a deleted tenant disappears at once (its keys stop
-- working, its endpoints stop receiving) and its rows are then removed in bounded batches
-- (dispatcher/tenant_purge.py), so a tenant with millions of deliveries never holds a long lock.

ALTER TABLE tenants ADD COLUMN uid text;
ALTER TABLE tenants ADD COLUMN suspended_at timestamptz;
ALTER TABLE tenants ADD COLUMN deleted_at timestamptz;
CREATE UNIQUE INDEX tenants_uid ON tenants (uid) WHERE deleted_at IS NULL;
-- listing: oldest first, cursor on (created_at, id)
CREATE INDEX tenants_listing ON tenants (created_at, id) WHERE deleted_at IS NULL;
-- the purge's to-do list
CREATE INDEX tenants_deleted ON tenants (deleted_at) WHERE deleted_at IS NOT NULL;

-- Keys: a name for the platform's dashboards, and when each was last used (written at most
-- once a minute per key, so authentication stays a read).
ALTER TABLE api_keys ADD COLUMN name text;
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;

-- URL credentials: `endpoints.url` keeps the URL without its user:password, and the
-- credentials live here, sealed like signing secrets (dispatcher/sealing.py). Rows written
-- before this migration are split and sealed by the first process that starts with the key.
ALTER TABLE endpoints ADD COLUMN url_credentials text;

-- endpoint_secrets.secret now holds a sealed value ("v1:<key id>:<base64>", AES-256-GCM);
-- legacy plain values are sealed by the first process that starts with the key.

-- Usage counters, bumped by the ingest and settle statements as the work happens. Each
-- statement adds to the row of its backend's shard, so concurrent workers do not queue
-- on one hot row; a read sums the shards. No foreign key: a settle racing a tenant's
-- deletion must never fail; the purge removes these rows last.
CREATE TABLE usage_daily (
    tenant_id             text NOT NULL,
    environment           text NOT NULL,
    day                   date NOT NULL,
    shard                 smallint NOT NULL,
    events_accepted       bigint NOT NULL DEFAULT 0,
    deliveries_succeeded  bigint NOT NULL DEFAULT 0,
    failed_attempts       bigint NOT NULL DEFAULT 0,
    dead_letters          bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, environment, shard)
);
