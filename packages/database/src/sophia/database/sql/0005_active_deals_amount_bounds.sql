-- An amount of 200,000 digits matched the old pattern and broke every later refresh
-- (numeric out of range). Amounts that do not fit numeric(30+10) now become null, as documented.
DROP MATERIALIZED VIEW sophia_core.active_deals_mv;

CREATE MATERIALIZED VIEW sophia_core.active_deals_mv AS
SELECT
    id,
    source_system,
    external_id,
    coalesce(data ->> 'dealname', data ->> 'name') AS name,
    CASE WHEN data ->> 'amount' ~ '^-?[0-9]{1,30}(\.[0-9]{1,10})?$' THEN (data ->> 'amount')::numeric END AS amount,
    coalesce(data ->> 'dealstage', data ->> 'stage') AS stage,
    data ->> 'pipeline' AS pipeline,
    data ->> 'closedate' AS close_date,
    data ->> 'hubspot_owner_id' AS owner_id,
    created_at,
    updated_at
FROM sophia_core.unified_data_catalog
WHERE kind = 'deal'
  AND deleted_at IS NULL
  AND lower(coalesce(data ->> 'dealstage', data ->> 'stage', ''))
      NOT IN ('closedwon', 'closedlost', 'closed_won', 'closed_lost', 'won', 'lost');

CREATE UNIQUE INDEX active_deals_mv_id ON sophia_core.active_deals_mv (id);
