-- `active_deals_mv` kept incrementally instead of recomputed: a table of the open deals that the
-- catalog's own writes keep, row by row, in the writing transaction (so it is never behind the
-- catalog), in place of a materialized view refreshed every few seconds while deals change. At a
-- million deals one `REFRESH MATERIALIZED VIEW CONCURRENTLY` took 6.8 s; while deals changed, the
-- workers ran one every window: about a core (docs/benchmarks.md, sales analytics). The name stays:
-- it is the view materialized, and readers, events and clients know it by that name.
DROP MATERIALIZED VIEW sophia_core.active_deals_mv;

CREATE TABLE sophia_core.active_deals_mv (
    id            uuid        PRIMARY KEY,
    source_system text        NOT NULL,
    external_id   text        NOT NULL,
    name          text,
    amount        numeric,
    stage         text,
    pipeline      text,
    close_date    text,
    owner_id      text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- A catalog row's line in the table: one row if it is an open deal, none otherwise. The trigger
-- and the full resync (`sophia views refresh`) both read it, so they cannot disagree.
CREATE FUNCTION sophia_core.active_deal_of(c sophia_core.unified_data_catalog)
    RETURNS SETOF sophia_core.active_deals_mv
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT
        c.id,
        c.source_system,
        c.external_id,
        coalesce(c.data ->> 'dealname', c.data ->> 'name'),
        CASE WHEN c.data ->> 'amount' ~ '^-?[0-9]{1,30}(\.[0-9]{1,10})?$' THEN (c.data ->> 'amount')::numeric END,
        coalesce(c.data ->> 'dealstage', c.data ->> 'stage'),
        c.data ->> 'pipeline',
        c.data ->> 'closedate',
        c.data ->> 'hubspot_owner_id',
        c.created_at,
        c.updated_at
    WHERE c.kind = 'deal'
      AND c.deleted_at IS NULL
      AND lower(coalesce(c.data ->> 'dealstage', c.data ->> 'stage', ''))
          NOT IN ('closedwon', 'closedlost', 'closed_won', 'closed_lost', 'won', 'lost')
$$;

-- A row trigger, so that writes of anything but deals pay nothing (its WHEN skips them): it adds
-- about 12 µs to each deal written (a 500-deal merge, 73 -> 85 µs a row). A statement trigger with
-- transition tables cost deals 3 µs, but captured every row of every write: 3 µs more for each
-- call or message written (29 -> 32 µs a row), the bulk of what the catalog takes in.
CREATE FUNCTION sophia_core.keep_active_deal() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM sophia_core.active_deals_mv WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO sophia_core.active_deals_mv SELECT * FROM sophia_core.active_deal_of(NEW)
    ON CONFLICT (id) DO UPDATE SET
        source_system = excluded.source_system, external_id = excluded.external_id,
        name = excluded.name, amount = excluded.amount, stage = excluded.stage,
        pipeline = excluded.pipeline, close_date = excluded.close_date, owner_id = excluded.owner_id,
        created_at = excluded.created_at, updated_at = excluded.updated_at;
    IF NOT FOUND AND TG_OP = 'UPDATE' THEN  -- no longer an open deal
        DELETE FROM sophia_core.active_deals_mv WHERE id = NEW.id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER active_deal_written AFTER INSERT OR UPDATE ON sophia_core.unified_data_catalog
    FOR EACH ROW WHEN (NEW.kind = 'deal')
    EXECUTE FUNCTION sophia_core.keep_active_deal();
CREATE TRIGGER active_deal_deleted AFTER DELETE ON sophia_core.unified_data_catalog
    FOR EACH ROW WHEN (OLD.kind = 'deal')
    EXECUTE FUNCTION sophia_core.keep_active_deal();

CREATE FUNCTION sophia_core.empty_active_deals() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE sophia_core.active_deals_mv;
    RETURN NULL;
END;
$$;

CREATE TRIGGER active_deals_truncated AFTER TRUNCATE ON sophia_core.unified_data_catalog
    FOR EACH STATEMENT EXECUTE FUNCTION sophia_core.empty_active_deals();

-- The table checked against the catalog and mended where it differs (`sophia views refresh`): what a
-- load with triggers off or a restore of one table leaves. Rows mended (none while the trigger has
-- seen every write). Deal writers wait meanwhile (the table is locked against writes, not reads):
-- one during the mend could be undone by its older snapshot.
CREATE FUNCTION sophia_core.mend_active_deals() RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    mended bigint;
BEGIN
    LOCK TABLE sophia_core.active_deals_mv IN EXCLUSIVE MODE;
    WITH current AS (
        SELECT a.* FROM sophia_core.unified_data_catalog c CROSS JOIN LATERAL sophia_core.active_deal_of(c) a
        WHERE c.kind = 'deal'
    ), gone AS (
        DELETE FROM sophia_core.active_deals_mv m
        WHERE NOT EXISTS (SELECT FROM current WHERE current.id = m.id)
        RETURNING 1
    ), changed AS (
        INSERT INTO sophia_core.active_deals_mv SELECT * FROM current
        ON CONFLICT (id) DO UPDATE SET
            source_system = excluded.source_system, external_id = excluded.external_id,
            name = excluded.name, amount = excluded.amount, stage = excluded.stage,
            pipeline = excluded.pipeline, close_date = excluded.close_date, owner_id = excluded.owner_id,
            created_at = excluded.created_at, updated_at = excluded.updated_at
        WHERE (active_deals_mv.*) IS DISTINCT FROM (excluded.*)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM changed) INTO mended;
    RETURN mended;
END;
$$;

SELECT sophia_core.mend_active_deals();  -- filled from the catalog
