-- Background jobs: the row is the job's truth (status, attempts, result); JetStream only carries
-- its id to a runner. An idempotency key names a job once: submitting it again finds this row.
CREATE TABLE sophia_core.jobs (
    id              uuid        NOT NULL DEFAULT sophia_core.new_id() PRIMARY KEY,
    kind            text        NOT NULL,
    idempotency_key text        UNIQUE,
    status          text        NOT NULL DEFAULT 'queued',
    attempts        integer     NOT NULL DEFAULT 0,
    params          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    result          jsonb,
    error           text,
    not_before      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    CONSTRAINT jobs_status CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    CONSTRAINT jobs_params_is_object CHECK (jsonb_typeof(params) = 'object')
);

-- The runner's sweep: jobs inserted whose id never reached JetStream (a crash or NATS down).
CREATE INDEX jobs_unpublished ON sophia_core.jobs (created_at) WHERE published_at IS NULL;
CREATE INDEX jobs_kind_created ON sophia_core.jobs (kind, created_at);
