-- Initial schema for the whole product. Times are always passed in by the application
-- (never now()) so tests can drive a fake clock against the real database.

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    environment  text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    key_hash     bytea NOT NULL UNIQUE,          -- sha256 of the whole key; the key itself is never stored
    key_prefix   text NOT NULL,                  -- first characters, to recognise a key in listings
    created_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

CREATE TABLE endpoints (
    id                   text PRIMARY KEY,
    tenant_id            text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    environment          text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    url                  text NOT NULL,
    description          text,
    event_types          text[] NOT NULL,
    enabled              boolean NOT NULL DEFAULT true,
    disabled_reason      text,
    metadata             jsonb NOT NULL DEFAULT '{}'::jsonb,
    standard_webhooks    boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    deleted_at           timestamptz,
    -- delivery state, shared by every worker process
    in_flight            integer NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    consecutive_failures integer NOT NULL DEFAULT 0,
    circuit_open_until   timestamptz
);
-- listing: newest first per tenant and environment, cursor on (created_at, id)
CREATE INDEX endpoints_listing ON endpoints (tenant_id, environment, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;
-- fan-out: the live subscriptions of one tenant and environment
CREATE INDEX endpoints_fanout ON endpoints (tenant_id, environment)
    WHERE enabled AND deleted_at IS NULL;
-- claim: the few endpoints that are busy or backed off
CREATE INDEX endpoints_busy ON endpoints (id)
    WHERE in_flight > 0 OR circuit_open_until IS NOT NULL;

CREATE TABLE endpoint_secrets (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id  text NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    secret       text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz                       -- set when a rotation retires it
);
CREATE INDEX endpoint_secrets_endpoint ON endpoint_secrets (endpoint_id, created_at DESC);

CREATE TABLE mailings (
    tenant_id        text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    environment      text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    mailing_id       text NOT NULL,
    status           text NOT NULL,
    mail_type        text NOT NULL DEFAULT 'standard' CHECK (mail_type IN ('standard', 'registered')),
    last_event_id    text NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, environment, mailing_id)
);

CREATE TABLE events (
    id           text PRIMARY KEY,                 -- evt_<ULID>: unique and time-sortable
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    environment  text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    event_type   text NOT NULL,
    mailing_id   text,
    occurred_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,             -- accepted; the 24 h max age counts from here
    body         bytea NOT NULL                    -- canonical JSON, serialized once, sent as is
);
CREATE INDEX events_mailing ON events (tenant_id, environment, mailing_id, created_at)
    WHERE mailing_id IS NOT NULL;

CREATE TABLE deliveries (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id          text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id       text NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'in_flight', 'succeeded', 'dead', 'cancelled')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL,
    lease_expires_at  timestamptz,
    created_at        timestamptz NOT NULL,
    completed_at      timestamptz,
    last_status_code  integer,
    last_outcome      text,
    UNIQUE (event_id, endpoint_id)
);
-- the queue: only pending rows, in due order; stays small however long the history grows
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE status = 'pending';
-- expired leases of crashed workers
CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE status = 'in_flight';
-- the delivery log of one endpoint, newest first, and its bulk operations
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, id DESC);
-- gauges: oldest pending
CREATE INDEX deliveries_pending_age ON deliveries (created_at) WHERE status IN ('pending', 'in_flight');

CREATE TABLE attempts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id    bigint NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt        integer NOT NULL,
    started_at     timestamptz NOT NULL,
    duration_ms    double precision NOT NULL,
    outcome        text NOT NULL,
    status_code    integer,
    error          text,
    response_body  text                            -- first 1 KiB, decoded leniently
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt);

CREATE TABLE idempotency_keys (
    scope            text NOT NULL,                -- 'platform' or '<tenant>:<environment>'
    key              text NOT NULL,
    request_hash     bytea NOT NULL,
    response_status  integer NOT NULL,
    response_body    bytea NOT NULL,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
