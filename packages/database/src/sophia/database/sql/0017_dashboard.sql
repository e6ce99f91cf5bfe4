-- Dashboard sessions: an API key exchanged for a session secret (sent back as an HttpOnly cookie).
-- Only a SHA-256 of the secret is stored; a session ends at its expiry, at sign-out (the row is
-- deleted), or when its key is revoked (the lookup joins the key).
CREATE TABLE sophia_core.web_sessions (
    secret_hash bytea       NOT NULL PRIMARY KEY,
    key_id      uuid        NOT NULL REFERENCES sophia_core.api_keys (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX web_sessions_expires_at ON sophia_core.web_sessions (expires_at);

-- A record's page lists its history from the audit trail: by target (`source/kind/external_id`).
CREATE INDEX audit_log_target ON sophia_core.audit_log (target, seq);
