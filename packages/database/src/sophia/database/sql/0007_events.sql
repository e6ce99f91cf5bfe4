-- User and system events, persisted from JetStream by the event processor. The event id (a
-- UUIDv7, so time-ordered) is the primary key: a redelivered event is stored once.
CREATE TABLE sophia_core.events (
    id          uuid        PRIMARY KEY,
    type        text        NOT NULL,
    source      text        NOT NULL,
    key         text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload     jsonb       NOT NULL,
    trace_id    text
);

CREATE INDEX events_type_occurred ON sophia_core.events (type, occurred_at);
