-- Tenant portal sessions (issue 12). The platform asks for a link; its token (in the URL
-- fragment, so never in a server log or a Referer) is exchanged once by the page for a
-- session cookie. Both are stored only as SHA-256 hashes. A session grants one tenant and
-- one environment until it expires or is revoked; deleting the tenant removes its sessions.
CREATE TABLE portal_sessions (
    id            text PRIMARY KEY,                 -- ps_<ULID>
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    environment   text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    token_hash    bytea NOT NULL UNIQUE,            -- the link's token; usable once
    cookie_hash   bytea UNIQUE,                     -- the browser's cookie, set by the exchange
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    exchanged_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX portal_sessions_tenant ON portal_sessions (tenant_id, created_at);
