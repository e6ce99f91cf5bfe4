-- Filters on a record's data (`data.<key>=<value>`) are containment tests, `data @> '{"key": ...}'`,
-- answered by this index instead of a scan of the catalog. jsonb_path_ops: smaller and faster for
-- @> than the default operator class, which also serves key-existence tests Sophia does not use.
CREATE INDEX catalog_data_path ON sophia_core.unified_data_catalog USING gin (data jsonb_path_ops);
