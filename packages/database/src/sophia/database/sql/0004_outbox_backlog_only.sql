-- The outbox holds only the backlog: the relay deletes the rows it has published, in the
-- transaction that locked them (FOR UPDATE SKIP LOCKED) and only after JetStream acknowledged them,
-- with Nats-Msg-Id = id so a crash between the ack and the commit cannot duplicate an event.
-- So no partial index on unpublished rows, no `published_at` update (a second tuple per event) and
-- no separate event id: together about a fifth of the bulk merge's time (docs/benchmarks.md).
DROP INDEX sophia_core.outbox_unpublished;
ALTER TABLE sophia_core.outbox DROP COLUMN published_at, DROP COLUMN event_id;
