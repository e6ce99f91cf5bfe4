-- Wake the outbox relay when events are written: one NOTIFY per statement (a bulk merge of 100k
-- rows sends one), and PostgreSQL folds identical notifications of one transaction into one.
-- The relay still polls (SOPHIA_OUTBOX_POLL_S) in case a notification is missed while it reconnects.
CREATE FUNCTION sophia_core.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sophia_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON sophia_core.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION sophia_core.notify_outbox();
