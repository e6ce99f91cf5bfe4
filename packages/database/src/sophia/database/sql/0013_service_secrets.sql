-- Secrets Sophia's processes share through the database, made at first use by whichever process
-- needs one first (`sophia.database.tokens.signing_secret`): the key that signs short-lived
-- real-time tokens, the same for every API and real-time process on this database.
CREATE TABLE sophia_core.service_secrets (
    name text PRIMARY KEY,
    secret bytea NOT NULL CHECK (octet_length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
