-- Issue 13: asymmetric signatures. An endpoint signs with shared HMAC secrets ('hmac', every
-- endpoint so far) or with ed25519 key pairs ('ed25519'), chosen at creation.
-- The private keys live where the HMAC secrets live (endpoint_secrets.secret, written and
-- read by the same code), one row per key, retired by a rotation like a secret.
-- The newest public key is kept on the endpoint: it is no secret, and the endpoint object
-- shows it without reading any private key.
ALTER TABLE endpoints
    ADD COLUMN signing text NOT NULL DEFAULT 'hmac' CHECK (signing IN ('hmac', 'ed25519')),
    ADD COLUMN public_key text,
    ADD CONSTRAINT endpoints_public_key_for_ed25519
        CHECK ((signing = 'ed25519') = (public_key IS NOT NULL));
