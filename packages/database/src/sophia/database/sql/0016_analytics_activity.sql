-- Activity per company: calls, messages, open deals and the last touch, kept like the other
-- summaries (docs/analytics.md). A deal belongs to its `associated_company_id` (else `company_id`);
-- a call or message to its own `company_id` (else `associated_company_id`), else to the company of
-- the live deal its `deal_id` names. Records without a company are not counted.
CREATE FUNCTION sophia_analytics.company_of(data jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(nullif(data ->> 'associated_company_id', ''), nullif(data ->> 'company_id', ''))
$$;

CREATE VIEW sophia_analytics.current_activity_facts AS
SELECT
    c.id AS record_id,
    c.source_system,
    c.kind,
    CASE WHEN c.kind = 'deal' THEN sophia_analytics.company_of(c.data) ELSE coalesce(
        nullif(c.data ->> 'company_id', ''),
        nullif(c.data ->> 'associated_company_id', ''),
        (SELECT sophia_analytics.company_of(d.data) FROM sophia_core.unified_data_catalog d
         WHERE d.source_system = c.source_system AND d.kind = 'deal'
           AND d.external_id = c.data ->> 'deal_id' AND d.deleted_at IS NULL)
    ) END AS company,
    c.deleted_at IS NOT NULL AS deleted,
    c.kind = 'deal' AND sophia_analytics.deal_status(sophia_analytics.deal_stage(c.data)) = 'open' AS open_deal,
    CASE WHEN c.kind IN ('call', 'message') THEN c.created_at END AS touched_at
FROM sophia_core.unified_data_catalog c
WHERE c.kind IN ('deal', 'call', 'message');

CREATE TABLE sophia_analytics.activity_facts (
    record_id     uuid        PRIMARY KEY,
    source_system text        NOT NULL,
    kind          text        NOT NULL,
    company       text,
    deleted       boolean     NOT NULL,
    open_deal     boolean     NOT NULL,
    touched_at    timestamptz
);
-- The last touch of a company, found at once (it is a maximum: a delete can lower it).
CREATE INDEX activity_facts_touch ON sophia_analytics.activity_facts (source_system, company, touched_at DESC)
    WHERE NOT deleted AND touched_at IS NOT NULL;

CREATE TABLE sophia_analytics.activity_summary (
    source_system text        NOT NULL,
    company       text        NOT NULL,
    calls         bigint      NOT NULL,
    messages      bigint      NOT NULL,
    open_deals    bigint      NOT NULL,
    last_touch    timestamptz,
    PRIMARY KEY (source_system, company)
);
CREATE INDEX activity_summary_last_touch ON sophia_analytics.activity_summary (last_touch DESC NULLS LAST);

CREATE FUNCTION sophia_analytics.rebuild_activity() RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    companies bigint;
BEGIN
    TRUNCATE sophia_analytics.activity_facts, sophia_analytics.activity_summary;
    INSERT INTO sophia_analytics.activity_facts
    SELECT record_id, source_system, kind, company, deleted, open_deal, touched_at
    FROM sophia_analytics.current_activity_facts;
    INSERT INTO sophia_analytics.activity_summary
    SELECT source_system, company,
           count(*) FILTER (WHERE kind = 'call'),
           count(*) FILTER (WHERE kind = 'message'),
           count(*) FILTER (WHERE open_deal),
           max(touched_at)
    FROM sophia_analytics.activity_facts
    WHERE NOT deleted AND company IS NOT NULL
    GROUP BY source_system, company
    HAVING count(*) FILTER (WHERE kind IN ('call', 'message') OR open_deal) > 0;
    GET DIAGNOSTICS companies = ROW_COUNT;
    RETURN companies;
END;
$$;

SELECT sophia_analytics.rebuild_activity();
