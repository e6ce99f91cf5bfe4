-- API keys: only a SHA-256 of the secret is stored; `prefix` identifies a key in lists and logs.
CREATE TABLE sophia_core.api_keys (
    id          uuid        NOT NULL DEFAULT sophia_core.new_id() PRIMARY KEY,
    name        text        NOT NULL,
    prefix      text        NOT NULL UNIQUE,
    secret_hash bytea       NOT NULL UNIQUE,
    scope       text        NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
