-- Sales analytics, kept incrementally: summary tables that the `analytics` consumer updates from
-- the catalog's events (docs/analytics.md), and a stage history that the catalog's own writes
-- record. Nothing here locks the catalog's writers against each other: the history is one row
-- inserted by the transaction that changed a deal's stage, and the summaries are the consumer's.
CREATE SCHEMA IF NOT EXISTS sophia_analytics;

-- Win probability of each stage, per pipeline: data, not code (UPDATE it to forecast otherwise).
-- `position` orders the funnel. Stages a pipeline does not list weigh 0 and sort last.
CREATE TABLE sophia_analytics.stage_probabilities (
    pipeline    text    NOT NULL,
    stage       text    NOT NULL,
    probability numeric NOT NULL CHECK (probability BETWEEN 0 AND 1),
    position    integer NOT NULL,
    PRIMARY KEY (pipeline, stage)
);
INSERT INTO sophia_analytics.stage_probabilities (pipeline, stage, probability, position) VALUES
    ('default', 'appointmentscheduled', 0.2, 1),
    ('default', 'qualifiedtobuy', 0.4, 2),
    ('default', 'presentationscheduled', 0.6, 3),
    ('default', 'decisionmakerboughtin', 0.8, 4),
    ('default', 'contractsent', 0.9, 5),
    ('default', 'closedwon', 1.0, 6),
    ('default', 'closedlost', 0.0, 7);

-- A date written by a client, or NULL where it is none (a bad date must not fail a batch).
CREATE FUNCTION sophia_analytics.safe_date(value text) RETURNS date
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF value !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}' THEN
        RETURN NULL;
    END IF;
    RETURN left(value, 10)::date;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END;
$$;

CREATE FUNCTION sophia_analytics.deal_stage(data jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(data ->> 'dealstage', data ->> 'stage', '')
$$;

CREATE FUNCTION sophia_analytics.deal_status(stage text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN lower(stage) IN ('closedwon', 'closed_won', 'won') THEN 'won'
        WHEN lower(stage) IN ('closedlost', 'closed_lost', 'lost') THEN 'lost'
        ELSE 'open'
    END
$$;

-- What the analytics hold of a deal, a function of its catalog row alone (so a rebuild computes
-- exactly what the consumer did): the same view serves both.
CREATE VIEW sophia_analytics.current_deal_facts AS
SELECT
    c.id AS deal_id,
    c.version,
    c.deleted_at IS NOT NULL AS deleted,
    c.source_system,
    coalesce(nullif(c.data ->> 'hubspot_owner_id', ''), nullif(c.data ->> 'owner', ''), '') AS owner,
    coalesce(nullif(c.data ->> 'pipeline', ''), 'default') AS pipeline,
    sophia_analytics.deal_stage(c.data) AS stage,
    sophia_analytics.deal_status(sophia_analytics.deal_stage(c.data)) AS status,
    CASE WHEN c.data ->> 'amount' ~ '^-?[0-9]{1,30}(\.[0-9]{1,10})?$'
        THEN (c.data ->> 'amount')::numeric ELSE 0 END AS amount,
    (c.created_at AT TIME ZONE 'UTC')::date AS created_on,
    CASE WHEN sophia_analytics.deal_status(sophia_analytics.deal_stage(c.data)) <> 'open' THEN coalesce(
        sophia_analytics.safe_date(c.data ->> 'closedate'), (c.updated_at AT TIME ZONE 'UTC')::date
    ) END AS closed_on
FROM sophia_core.unified_data_catalog c
WHERE c.kind = 'deal';

-- The facts the summaries hold now, per deal, with the version they were read at and the last
-- stage-history row counted: the consumer's high-water marks (a replay changes nothing).
CREATE TABLE sophia_analytics.deal_facts (
    deal_id       uuid    PRIMARY KEY,
    version       bigint  NOT NULL,
    deleted       boolean NOT NULL,
    source_system text    NOT NULL,
    owner         text    NOT NULL,
    pipeline      text    NOT NULL,
    stage         text    NOT NULL,
    status        text    NOT NULL,
    amount        numeric NOT NULL,
    created_on    date    NOT NULL,
    closed_on     date,
    history_id    bigint  NOT NULL DEFAULT 0
);

-- Deals by where they stand, per created month: pipeline by stage (open ones), cohorts (by status).
CREATE TABLE sophia_analytics.deal_summary (
    source_system text    NOT NULL,
    owner         text    NOT NULL,
    pipeline      text    NOT NULL,
    stage         text    NOT NULL,
    status        text    NOT NULL,
    created_month date    NOT NULL,
    deals         bigint  NOT NULL,
    amount        numeric NOT NULL,
    PRIMARY KEY (source_system, owner, pipeline, stage, status, created_month)
);

-- Won and lost deals per closing month: win rate, average size, cycle length.
CREATE TABLE sophia_analytics.closed_summary (
    source_system text    NOT NULL,
    owner         text    NOT NULL,
    pipeline      text    NOT NULL,
    status        text    NOT NULL,
    closed_month  date    NOT NULL,
    deals         bigint  NOT NULL,
    amount        numeric NOT NULL,
    cycle_days    bigint  NOT NULL,
    PRIMARY KEY (source_system, owner, pipeline, status, closed_month)
);

-- Every stage change of every deal, written by the transaction that made it (the trigger below).
-- `entered_from_at`: when the deal entered `from_stage`, so time in a stage needs no search.
CREATE TABLE sophia_analytics.stage_history (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deal_id         uuid        NOT NULL,
    source_system   text        NOT NULL,
    owner           text        NOT NULL,
    pipeline        text        NOT NULL,
    from_stage      text,
    to_stage        text        NOT NULL,
    at              timestamptz NOT NULL,
    entered_from_at timestamptz
);
CREATE INDEX stage_history_deal ON sophia_analytics.stage_history (deal_id, id);

-- Per stage and month: entries, deals reaching it for the first time (the funnel), exits and the
-- seconds spent in the stage before them (time in stage; exact sums, whichever way they were added).
CREATE TABLE sophia_analytics.stage_summary (
    source_system text    NOT NULL,
    owner         text    NOT NULL,
    pipeline      text    NOT NULL,
    stage         text    NOT NULL,
    month         date    NOT NULL,
    entered       bigint  NOT NULL,
    reached       bigint  NOT NULL,
    exited        bigint  NOT NULL,
    seconds_in_stage numeric NOT NULL,
    PRIMARY KEY (source_system, owner, pipeline, stage, month)
);

CREATE TABLE sophia_analytics.stages_reached (
    deal_id uuid NOT NULL,
    stage   text NOT NULL,
    PRIMARY KEY (deal_id, stage)
);

-- Calls and messages as the sentiment and topic trends count them: the week they happened (their
-- record's created_at), and what the models said of them last (record_predictions).
CREATE VIEW sophia_analytics.current_conversation_facts AS
SELECT
    c.id AS record_id,
    c.source_system,
    c.kind,
    date_trunc('week', c.created_at AT TIME ZONE 'UTC')::date AS week,
    c.deleted_at IS NOT NULL AS deleted,
    s.prediction ->> 'label' AS sentiment,
    coalesce(ARRAY(
        SELECT DISTINCT label FROM jsonb_array_elements_text(
            CASE WHEN jsonb_typeof(l.prediction -> 'labels') = 'array' THEN l.prediction -> 'labels' END
        ) AS label ORDER BY label
    ), '{}') AS labels
FROM sophia_core.unified_data_catalog c
LEFT JOIN sophia_core.record_predictions s ON s.record_id = c.id AND s.task = 'sentiment'
LEFT JOIN sophia_core.record_predictions l ON l.record_id = c.id AND l.task = 'classification'
WHERE c.kind IN ('call', 'message');

CREATE TABLE sophia_analytics.conversation_facts (
    record_id     uuid    PRIMARY KEY,
    source_system text    NOT NULL,
    kind          text    NOT NULL,
    week          date    NOT NULL,
    deleted       boolean NOT NULL,
    sentiment     text,
    labels        text[]  NOT NULL
);

-- Per week: calls and messages by sentiment label, and by topic label.
CREATE TABLE sophia_analytics.sentiment_summary (
    source_system text   NOT NULL,
    kind          text   NOT NULL,
    week          date   NOT NULL,
    sentiment     text   NOT NULL,
    records       bigint NOT NULL,
    PRIMARY KEY (source_system, kind, week, sentiment)
);

CREATE TABLE sophia_analytics.topic_summary (
    source_system text   NOT NULL,
    kind          text   NOT NULL,
    week          date   NOT NULL,
    label         text   NOT NULL,
    records       bigint NOT NULL,
    PRIMARY KEY (source_system, kind, week, label)
);

-- How fresh the summaries are: the time of the newest change they hold.
CREATE TABLE sophia_analytics.freshness (
    only_row boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    as_of    timestamptz NOT NULL
);
INSERT INTO sophia_analytics.freshness (as_of) VALUES ('-infinity');

CREATE FUNCTION sophia_analytics.record_stage_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    old_stage text := CASE WHEN TG_OP = 'UPDATE' THEN sophia_analytics.deal_stage(OLD.data) END;
    new_stage text := sophia_analytics.deal_stage(NEW.data);
    since     timestamptz;
BEGIN
    IF old_stage IS NOT DISTINCT FROM new_stage THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        SELECT h.at INTO since FROM sophia_analytics.stage_history h
        WHERE h.deal_id = NEW.id ORDER BY h.id DESC LIMIT 1;
        since := coalesce(since, OLD.created_at);
    END IF;
    INSERT INTO sophia_analytics.stage_history
        (deal_id, source_system, owner, pipeline, from_stage, to_stage, at, entered_from_at)
    VALUES (
        NEW.id,
        NEW.source_system,
        coalesce(nullif(NEW.data ->> 'hubspot_owner_id', ''), nullif(NEW.data ->> 'owner', ''), ''),
        coalesce(nullif(NEW.data ->> 'pipeline', ''), 'default'),
        old_stage,
        new_stage,
        CASE WHEN TG_OP = 'INSERT' THEN NEW.created_at ELSE NEW.updated_at END,
        since
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER deal_stage_inserted AFTER INSERT ON sophia_core.unified_data_catalog
    FOR EACH ROW WHEN (NEW.kind = 'deal')
    EXECUTE FUNCTION sophia_analytics.record_stage_change();
CREATE TRIGGER deal_stage_updated AFTER UPDATE ON sophia_core.unified_data_catalog
    FOR EACH ROW WHEN (NEW.kind = 'deal' AND (
        OLD.data -> 'dealstage' IS DISTINCT FROM NEW.data -> 'dealstage'
        OR OLD.data -> 'stage' IS DISTINCT FROM NEW.data -> 'stage'))
    EXECUTE FUNCTION sophia_analytics.record_stage_change();

-- The whole of the summaries recomputed from the catalog and the stage history (`sophia analytics
-- rebuild`): what the consumer built incrementally, exactly. One transaction; TRUNCATE takes
-- deal_facts first, as the consumer locks it first, so a batch in flight waits and then goes on
-- from the rebuilt high-water marks.
CREATE FUNCTION sophia_analytics.rebuild_facts() RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    facts bigint;
BEGIN
    TRUNCATE sophia_analytics.deal_facts, sophia_analytics.deal_summary, sophia_analytics.closed_summary,
        sophia_analytics.stage_summary, sophia_analytics.stages_reached,
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

CREATE FUNCTION sophia_analytics.rebuild_stages() RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    changes bigint;
BEGIN
    INSERT INTO sophia_analytics.stages_reached
    SELECT DISTINCT deal_id, to_stage FROM sophia_analytics.stage_history;
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

CREATE FUNCTION sophia_analytics.rebuild_conversations() RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    conversations bigint;
BEGIN
    INSERT INTO sophia_analytics.conversation_facts
    SELECT record_id, source_system, kind, week, deleted, sentiment, labels
    FROM sophia_analytics.current_conversation_facts;
    INSERT INTO sophia_analytics.sentiment_summary
    SELECT source_system, kind, week, sentiment, count(*) FROM sophia_analytics.conversation_facts
    WHERE NOT deleted AND sentiment IS NOT NULL GROUP BY 1, 2, 3, 4;
    INSERT INTO sophia_analytics.topic_summary
    SELECT source_system, kind, week, label, count(*)
    FROM sophia_analytics.conversation_facts, unnest(labels) AS label
    WHERE NOT deleted GROUP BY 1, 2, 3, 4;
    SELECT count(*) INTO conversations FROM sophia_analytics.conversation_facts;
    RETURN conversations;
END;
$$;

-- Deals already in the catalog: each enters its stage when it was created, and the summaries start
-- from them.
INSERT INTO sophia_analytics.stage_history (deal_id, source_system, owner, pipeline, to_stage, at)
SELECT f.deal_id, f.source_system, f.owner, f.pipeline, f.stage, c.created_at
FROM sophia_analytics.current_deal_facts f JOIN sophia_core.unified_data_catalog c ON c.id = f.deal_id
ORDER BY c.created_at, c.id;
SELECT sophia_analytics.rebuild_facts();
SELECT sophia_analytics.rebuild_stages();
SELECT sophia_analytics.rebuild_conversations();
