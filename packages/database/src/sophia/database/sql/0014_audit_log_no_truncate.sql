-- The audit trail refused updates and deletes row by row, but TRUNCATE fires no row trigger: one
-- statement could empty it (and restart its sequence, so a new chain would verify). Refuse it too.
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON sophia_core.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION sophia_core.audit_log_append_only();
