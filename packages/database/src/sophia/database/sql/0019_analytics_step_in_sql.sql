-- The analytics consumer's step for deals in one statement in the database, instead of ten round
-- trips whose arrays the workers built, encoded and decoded row by row (half of the workers' CPU
-- under a stream of stage changes: docs/benchmarks.md, sales analytics). The same rules as before
-- (docs/analytics.md): what is counted of each deal against what it is now, the stage history after
-- each deal's high-water mark, and the rebuild still agrees with it exactly.

-- Whether a deal had reached a stage before is read from its stage history (a few rows, by the
-- index on deal and id) instead of kept in a table of its own: one row fewer written a change, and
-- at a million deals 3.5 million rows fewer to store and to rebuild.
DROP TABLE sophia_analytics.stages_reached;

CREATE OR REPLACE FUNCTION sophia_analytics.rebuild_facts() RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    facts bigint;
BEGIN
    TRUNCATE sophia_analytics.deal_facts, sophia_analytics.deal_summary, sophia_analytics.closed_summary,
        sophia_analytics.stage_summary,
        sophia_analytics.conversation_facts, sophia_analytics.sentiment_summary,
        sophia_analytics.topic_summary;
    INSERT INTO sophia_analytics.deal_facts
    SELECT f.*, coalesce((SELECT max(h.id) FROM sophia_analytics.stage_history h WHERE h.deal_id = f.deal_id), 0)
    FROM sophia_analytics.current_deal_facts f;
    GET DIAGNOSTICS facts = ROW_COUNT;
    INSERT INTO sophia_analytics.deal_summary
    SELECT source_system, owner, pipeline, stage, status, date_trunc('month', created_on)::date,
           count(*), sum(amount)
    FROM sophia_analytics.deal_facts WHERE NOT deleted
    GROUP BY 1, 2, 3, 4, 5, 6;
    INSERT INTO sophia_analytics.closed_summary
    SELECT source_system, owner, pipeline, status, date_trunc('month', closed_on)::date,
           count(*), sum(amount), sum(greatest(closed_on - created_on, 0))
    FROM sophia_analytics.deal_facts WHERE NOT deleted AND status <> 'open'
    GROUP BY 1, 2, 3, 4, 5;
    RETURN facts;
END;
$$;

CREATE OR REPLACE FUNCTION sophia_analytics.rebuild_stages() RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    changes bigint;
BEGIN
    WITH moves AS (
        SELECT source_system, owner, pipeline, to_stage AS stage,
               date_trunc('month', at AT TIME ZONE 'UTC')::date AS month,
               1 AS entered,
               (row_number() OVER (PARTITION BY deal_id, to_stage ORDER BY id) = 1)::int AS reached,
               0 AS exited, 0::numeric AS seconds
        FROM sophia_analytics.stage_history
        UNION ALL
        SELECT source_system, owner, pipeline, from_stage,
               date_trunc('month', at AT TIME ZONE 'UTC')::date, 0, 0, 1,
               extract(epoch FROM at - entered_from_at)
        FROM sophia_analytics.stage_history WHERE from_stage IS NOT NULL
    )
    INSERT INTO sophia_analytics.stage_summary
    SELECT source_system, owner, pipeline, stage, month, sum(entered), sum(reached), sum(exited), sum(seconds)
    FROM moves GROUP BY 1, 2, 3, 4, 5;
    SELECT count(*) INTO changes FROM sophia_analytics.stage_history;
    UPDATE sophia_analytics.freshness SET as_of = now();
    RETURN changes;
END;
$$;

-- A date written by a client, or NULL where it is none, without an exception block: the block made
-- each call a subtransaction (2 µs, twice a deal read). Not an error for any text.
CREATE OR REPLACE FUNCTION sophia_analytics.safe_date(value text) RETURNS date
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}' AND pg_input_is_valid(left(value, 10), 'date')
        THEN left(value, 10)::date END
$$;

-- Bring the summaries up to date with the deals `deal_ids` as they are now (idempotent); `newest`,
-- the time of the newest change in hand, moves their freshness forward. Returns the deals whose
-- contributions moved and the stage changes counted. A replay, a late event or an event older than
-- what was read changes nothing: the difference is then zero.
CREATE FUNCTION sophia_analytics.apply_deal_changes(deal_ids uuid[], newest timestamptz)
    RETURNS TABLE (deals bigint, stage_changes bigint)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    ids uuid[] := ARRAY(SELECT DISTINCT id FROM unnest(deal_ids) AS id WHERE id IS NOT NULL ORDER BY id);
    moved_deals bigint;
    changes bigint;
    empty_deals sophia_analytics.deal_summary[];
    empty_closed sophia_analytics.closed_summary[];
    empty_stages sophia_analytics.stage_summary[];
BEGIN
    -- one batch at a time moves a deal's contributions; taken in id order, so none deadlock (the
    -- key is the one `sophia.database.analytics._lock` takes for any record)
    PERFORM pg_advisory_xact_lock(23063, hashtext(id::text)) FROM unnest(ids) AS id;

    -- Every table once, all from one snapshot. The summaries' upserts run in the order the final
    -- SELECT reads them, each in its keys' order, so two batches take shared rows in one order; the
    -- deals' own rows (their facts) are written after.
    WITH stored AS (
        SELECT f.deal_id, f.version, f.deleted, f.source_system, f.owner, f.pipeline, f.stage, f.status,
               f.amount, f.created_on, f.closed_on, f.history_id
        FROM sophia_analytics.deal_facts AS f WHERE f.deal_id = ANY(ids)
    ), current AS (
        SELECT c.deal_id, c.version, c.deleted, c.source_system, c.owner, c.pipeline, c.stage, c.status,
               c.amount, c.created_on, c.closed_on
        FROM sophia_analytics.current_deal_facts AS c WHERE c.deal_id = ANY(ids)
    ), moved AS (  -- each deal whose facts moved, as it is now: gone from the view, it is counted out
        SELECT coalesce(c.deal_id, s.deal_id) AS deal_id,
               CASE WHEN c.deal_id IS NULL THEN s.version ELSE c.version END AS version,
               c.deal_id IS NULL OR c.deleted AS deleted,
               CASE WHEN c.deal_id IS NULL THEN s.source_system ELSE c.source_system END AS source_system,
               CASE WHEN c.deal_id IS NULL THEN s.owner ELSE c.owner END AS owner,
               CASE WHEN c.deal_id IS NULL THEN s.pipeline ELSE c.pipeline END AS pipeline,
               CASE WHEN c.deal_id IS NULL THEN s.stage ELSE c.stage END AS stage,
               CASE WHEN c.deal_id IS NULL THEN s.status ELSE c.status END AS status,
               CASE WHEN c.deal_id IS NULL THEN s.amount ELSE c.amount END AS amount,
               CASE WHEN c.deal_id IS NULL THEN s.created_on ELSE c.created_on END AS created_on,
               CASE WHEN c.deal_id IS NULL THEN s.closed_on ELSE c.closed_on END AS closed_on
        FROM stored AS s FULL JOIN current AS c ON c.deal_id = s.deal_id
        WHERE (c.deal_id IS NULL AND NOT s.deleted)
           OR (c.deal_id IS NOT NULL AND (s.deal_id IS NULL OR c.version > s.version))
    ), counted AS (  -- what was counted of them (-1) and what is (+1), where not deleted
        SELECT -1 AS sign, s.source_system, s.owner, s.pipeline, s.stage, s.status, s.amount,
               s.created_on, s.closed_on
        FROM stored AS s JOIN moved AS m ON m.deal_id = s.deal_id WHERE NOT s.deleted
        UNION ALL
        SELECT 1, m.source_system, m.owner, m.pipeline, m.stage, m.status, m.amount,
               m.created_on, m.closed_on
        FROM moved AS m WHERE NOT m.deleted
    ), history AS (  -- each deal's stage changes after the last one counted
        SELECT h.id, h.deal_id, h.source_system, h.owner, h.pipeline, h.from_stage, h.to_stage,
               date_trunc('month', h.at AT TIME ZONE 'UTC')::date AS month,
               extract(epoch FROM h.at - h.entered_from_at) AS seconds,
               NOT EXISTS (SELECT FROM sophia_analytics.stage_history AS e  -- reached before?
                           WHERE e.deal_id = h.deal_id AND e.id < h.id AND e.to_stage = h.to_stage)
                   AS is_first
        FROM unnest(ids) AS w(deal_id)
        LEFT JOIN stored AS s ON s.deal_id = w.deal_id
        JOIN sophia_analytics.stage_history AS h
          ON h.deal_id = w.deal_id AND h.id > coalesce(s.history_id, 0)
    ), last_history AS (
        SELECT h.deal_id, max(h.id) AS history_id FROM history AS h GROUP BY h.deal_id
    ), stage_moves AS (
        SELECT h.source_system, h.owner, h.pipeline, h.to_stage AS stage, h.month,
               1 AS entered, h.is_first::int AS reached, 0 AS exited, 0::numeric AS seconds
        FROM history AS h
        UNION ALL
        SELECT h.source_system, h.owner, h.pipeline, h.from_stage, h.month, 0, 0, 1, h.seconds
        FROM history AS h WHERE h.from_stage IS NOT NULL
    ), deal_moved AS (
        INSERT INTO sophia_analytics.deal_summary AS s
            (source_system, owner, pipeline, stage, status, created_month, deals, amount)
        SELECT k.source_system, k.owner, k.pipeline, k.stage, k.status,
               date_trunc('month', k.created_on)::date, sum(k.sign), sum(k.sign * k.amount)
        FROM counted AS k GROUP BY 1, 2, 3, 4, 5, 6
        HAVING sum(k.sign) <> 0 OR sum(k.sign * k.amount) <> 0
        ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (source_system, owner, pipeline, stage, status, created_month) DO UPDATE
            SET deals = s.deals + excluded.deals, amount = s.amount + excluded.amount
        RETURNING s.*
    ), closed_moved AS (
        INSERT INTO sophia_analytics.closed_summary AS s
            (source_system, owner, pipeline, status, closed_month, deals, amount, cycle_days)
        SELECT k.source_system, k.owner, k.pipeline, k.status, date_trunc('month', k.closed_on)::date,
               sum(k.sign), sum(k.sign * k.amount), sum(k.sign * greatest(k.closed_on - k.created_on, 0))
        FROM counted AS k WHERE k.status <> 'open' GROUP BY 1, 2, 3, 4, 5
        HAVING sum(k.sign) <> 0 OR sum(k.sign * k.amount) <> 0
            OR sum(k.sign * greatest(k.closed_on - k.created_on, 0)) <> 0
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (source_system, owner, pipeline, status, closed_month) DO UPDATE
            SET deals = s.deals + excluded.deals, amount = s.amount + excluded.amount,
                cycle_days = s.cycle_days + excluded.cycle_days
        RETURNING s.*
    ), stages_moved AS (
        INSERT INTO sophia_analytics.stage_summary AS s
            (source_system, owner, pipeline, stage, month, entered, reached, exited, seconds_in_stage)
        SELECT m.source_system, m.owner, m.pipeline, m.stage, m.month,
               sum(m.entered), sum(m.reached), sum(m.exited), sum(m.seconds)
        FROM stage_moves AS m GROUP BY 1, 2, 3, 4, 5
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (source_system, owner, pipeline, stage, month) DO UPDATE
            SET entered = s.entered + excluded.entered, reached = s.reached + excluded.reached,
                exited = s.exited + excluded.exited,
                seconds_in_stage = s.seconds_in_stage + excluded.seconds_in_stage
        RETURNING s.*
    ), facts AS (  -- the facts now counted, and the stage-history high-water marks
        INSERT INTO sophia_analytics.deal_facts AS f (deal_id, version, deleted, source_system, owner,
            pipeline, stage, status, amount, created_on, closed_on, history_id)
        SELECT m.deal_id, m.version, m.deleted, m.source_system, m.owner, m.pipeline, m.stage, m.status,
               m.amount, m.created_on, m.closed_on, coalesce(l.history_id, 0)
        FROM moved AS m LEFT JOIN last_history AS l ON l.deal_id = m.deal_id
        UNION ALL  -- history counted of a deal whose facts did not move: its mark alone moves
        SELECT s.deal_id, s.version, s.deleted, s.source_system, s.owner, s.pipeline, s.stage, s.status,
               s.amount, s.created_on, s.closed_on, l.history_id
        FROM last_history AS l JOIN stored AS s ON s.deal_id = l.deal_id
        WHERE NOT EXISTS (SELECT FROM moved AS m WHERE m.deal_id = l.deal_id)
        ORDER BY 1
        ON CONFLICT (deal_id) DO UPDATE SET
            version = excluded.version, deleted = excluded.deleted,
            source_system = excluded.source_system, owner = excluded.owner,
            pipeline = excluded.pipeline, stage = excluded.stage, status = excluded.status,
            amount = excluded.amount, created_on = excluded.created_on, closed_on = excluded.closed_on,
            history_id = greatest(f.history_id, excluded.history_id)
    )
    SELECT ARRAY(SELECT ROW(d.*)::sophia_analytics.deal_summary FROM deal_moved AS d WHERE d.deals = 0),
           ARRAY(SELECT ROW(d.*)::sophia_analytics.closed_summary FROM closed_moved AS d WHERE d.deals = 0),
           ARRAY(SELECT ROW(d.*)::sophia_analytics.stage_summary FROM stages_moved AS d
                 WHERE d.entered = 0 AND d.exited = 0),
           (SELECT count(*) FROM moved), (SELECT count(*) FROM history)
    INTO empty_deals, empty_closed, empty_stages, moved_deals, changes;

    -- a rebuild has no row for a group without deals: drop those left empty (rows this batch holds)
    IF cardinality(empty_deals) > 0 THEN
        DELETE FROM sophia_analytics.deal_summary AS s USING unnest(empty_deals) AS e
        WHERE (s.source_system, s.owner, s.pipeline, s.stage, s.status, s.created_month)
            = (e.source_system, e.owner, e.pipeline, e.stage, e.status, e.created_month)
          AND s.deals = 0;
    END IF;
    IF cardinality(empty_closed) > 0 THEN
        DELETE FROM sophia_analytics.closed_summary AS s USING unnest(empty_closed) AS e
        WHERE (s.source_system, s.owner, s.pipeline, s.status, s.closed_month)
            = (e.source_system, e.owner, e.pipeline, e.status, e.closed_month)
          AND s.deals = 0;
    END IF;
    IF cardinality(empty_stages) > 0 THEN
        DELETE FROM sophia_analytics.stage_summary AS s USING unnest(empty_stages) AS e
        WHERE (s.source_system, s.owner, s.pipeline, s.stage, s.month)
            = (e.source_system, e.owner, e.pipeline, e.stage, e.month)
          AND s.entered = 0 AND s.exited = 0;
    END IF;
    IF newest IS NOT NULL THEN
        UPDATE sophia_analytics.freshness SET as_of = greatest(as_of, newest);
    END IF;
    RETURN QUERY SELECT moved_deals, changes;
END;
$$;
