-- The unified data catalog and its transactional outbox.
CREATE SCHEMA IF NOT EXISTS sophia_core;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        CREATE EXTENSION IF NOT EXISTS vector;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    END IF;
END $$;

-- Time-ordered ids: PostgreSQL 18's native uuidv7(), or the same layout built by hand on 16/17.
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 180000 THEN
        CREATE OR REPLACE FUNCTION sophia_core.new_id() RETURNS uuid
            LANGUAGE sql VOLATILE PARALLEL SAFE AS 'SELECT uuidv7()';
    ELSE
        CREATE OR REPLACE FUNCTION sophia_core.new_id() RETURNS uuid
            LANGUAGE sql VOLATILE PARALLEL SAFE AS $f$
            SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                placing substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
        $f$;
    END IF;
END $$;

CREATE TABLE sophia_core.unified_data_catalog (
    id            uuid        NOT NULL DEFAULT sophia_core.new_id() PRIMARY KEY,
    source_system text        NOT NULL,
    kind          text        NOT NULL,
    external_id   text        NOT NULL,
    data          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    version       bigint      NOT NULL DEFAULT 1,
    deleted_at    timestamptz,
    CONSTRAINT catalog_natural_key UNIQUE (source_system, kind, external_id),
    CONSTRAINT catalog_data_is_object CHECK (jsonb_typeof(data) = 'object')
);

-- The warehouse clustering key (Snowflake clustering -> btree here; BRIN once partitioned by time).
CREATE INDEX catalog_source_created ON sophia_core.unified_data_catalog (source_system, created_at);
CREATE INDEX catalog_updated ON sophia_core.unified_data_catalog (updated_at);
CREATE INDEX catalog_kind_id ON sophia_core.unified_data_catalog (kind, id);

CREATE TABLE sophia_core.outbox (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid        NOT NULL DEFAULT sophia_core.new_id(),
    topic        text        NOT NULL,
    event_type   text        NOT NULL,
    key          text        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX outbox_unpublished ON sophia_core.outbox (id) WHERE published_at IS NULL;
