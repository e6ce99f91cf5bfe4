-- The append-only audit trail: every catalog change and admin action, each row chained to the one
-- before by a SHA-256 over its own content and the previous row's hash, so an edited, removed or
-- inserted row breaks the chain (`sophia audit verify`). Updates and deletes are refused outright.
CREATE TABLE sophia_core.audit_log (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid        NOT NULL UNIQUE,
    occurred_at timestamptz NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    target      text        NOT NULL,
    details     jsonb       NOT NULL,
    prev_hash   bytea       NOT NULL,
    hash        bytea       NOT NULL
);

CREATE FUNCTION sophia_core.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sophia_core.audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON sophia_core.audit_log
    FOR EACH ROW EXECUTE FUNCTION sophia_core.audit_log_append_only();
