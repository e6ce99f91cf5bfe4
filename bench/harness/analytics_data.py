"""Synthetic sales data for the analytics benchmark, generated inside PostgreSQL.

Deals created over the last year, each with a path through HubSpot's default funnel (two to five
open stages, one step back for a tenth of them, and a close for 40 %: 18 % won, 22 % lost), calls
and messages with the sentiment and topic predictions the ML enrichment would have written. All
of it is `INSERT ... SELECT generate_series` in SQL: nothing crosses the wire per row.

The catalog's AFTER INSERT trigger would record each deal as entering its *final* stage when it
was created; the load turns it off for its own session (`session_replication_role = replica`) and
writes the stage history itself, one row per stage change, with the times the trigger would have
written had each change been made on its day (`entered_from_at` = the previous change's `at`), in
time order so that `id` follows `at` as it does when the trigger writes it.
"""

from __future__ import annotations

import asyncpg

OPEN_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
)
OWNERS = tuple(str(71023456 + index) for index in range(40))
TOPICS = ("pricing", "security", "integration", "onboarding", "renewal", "competition", "support", "legal")
SENTIMENTS = ("positive", "negative", "neutral")

_STAGE_ARRAY = "ARRAY[" + ", ".join(f"'{stage}'" for stage in OPEN_STAGES) + "]"
_OWNER_ARRAY = "ARRAY[" + ", ".join(f"'{owner}'" for owner in OWNERS) + "]"
_TOPIC_ARRAY = "ARRAY[" + ", ".join(f"'{topic}'" for topic in TOPICS) + "]"

DEALS_SQL = f"""
CREATE TEMP TABLE bench_deals AS
SELECT n, id, created_at, owner, pipeline, amount, open_steps, regress, outcome,
       open_steps + (outcome <> 'open')::int AS total,
       least(created_at + cycle, now() - interval '1 hour') AS span_end
FROM (
    SELECT n,
           sophia_core.new_id() AS id,
           now() - interval '2 days' - random() * interval '363 days' AS created_at,
           ({_OWNER_ARRAY})[1 + floor(random() * {len(OWNERS)})::int] AS owner,
           CASE WHEN random() < 0.9 THEN 'default' ELSE 'renewals' END AS pipeline,
           (500 + floor(random() ^ 3 * 4000)::int * 50)::numeric AS amount,
           2 + floor(random() * 4)::int AS open_steps,
           random() < 0.1 AS regress,
           CASE WHEN r < 0.18 THEN 'closedwon' WHEN r < 0.40 THEN 'closedlost' ELSE 'open' END AS outcome,
           (7 + random() * 150) * interval '1 day' AS cycle
    FROM (SELECT n, random() AS r FROM generate_series(1, $1::int) AS n) AS draws
) AS deals
"""

STEPS_SQL = f"""
CREATE TEMP TABLE bench_steps AS
SELECT d.id, d.owner, d.pipeline, s AS step,
       CASE WHEN d.outcome <> 'open' AND s = d.total THEN d.outcome
            ELSE ({_STAGE_ARRAY})[CASE WHEN d.regress AND s = 3 THEN 1
                                       WHEN d.regress AND s > 3 THEN s - 2 ELSE s END]
       END AS stage,
       d.created_at + (d.span_end - d.created_at) * ((s - 1)::float8 / (d.total - 1)) AS at
FROM bench_deals AS d, generate_series(1, d.total) AS s
"""

HISTORY_SQL = """
INSERT INTO sophia_analytics.stage_history
    (deal_id, source_system, owner, pipeline, from_stage, to_stage, at, entered_from_at)
SELECT id, 'hubspot', owner, pipeline, lag(stage) OVER w, stage, at, lag(at) OVER w
FROM bench_steps WINDOW w AS (PARTITION BY id ORDER BY step)
ORDER BY at, id
"""

CATALOG_DEALS_SQL = """
INSERT INTO sophia_core.unified_data_catalog
    (id, source_system, kind, external_id, data, created_at, updated_at, version)
SELECT d.id, 'hubspot', 'deal', 'deal-' || lpad(d.n::text, 8, '0'),
       jsonb_build_object(
           'dealname', 'Deal ' || d.n,
           'amount', to_char(d.amount, 'FM999999990.00'),
           'dealstage', last.stage,
           'pipeline', d.pipeline,
           'closedate', to_char(CASE WHEN d.outcome <> 'open' THEN last.at
                                     ELSE d.created_at + interval '90 days' END AT TIME ZONE 'UTC',
                                'YYYY-MM-DD'),
           'hubspot_owner_id', d.owner,
           'createdate', d.created_at),
       d.created_at, last.at, d.total
FROM bench_deals AS d JOIN bench_steps AS last ON last.id = d.id AND last.step = d.total
"""

CONVERSATIONS_SQL = """
INSERT INTO sophia_core.unified_data_catalog
    (source_system, kind, external_id, data, created_at, updated_at)
SELECT CASE WHEN n <= $1 THEN 'gong' ELSE 'slack' END,
       CASE WHEN n <= $1 THEN 'call' ELSE 'message' END,
       CASE WHEN n <= $1 THEN 'call-' ELSE 'message-' END || lpad(n::text, 8, '0'),
       jsonb_build_object('title', 'Conversation ' || n), at, at
FROM (SELECT n, now() - random() * interval '365 days' AS at
      FROM generate_series(1, $1::int + $2::int) AS n) AS conversations
"""

PREDICTIONS_SQL = f"""
INSERT INTO sophia_core.record_predictions (record_id, task, model_version, record_version, prediction)
SELECT id, task, 'bench', 1, prediction FROM (
    SELECT c.id, 'sentiment' AS task,
           jsonb_build_object(
               'label', (ARRAY['positive', 'negative', 'neutral'])[1 + floor(r.a * 3)::int],
               'scores', jsonb_build_object('positive', round(r.b::numeric, 3),
                                            'negative', round((1 - r.b)::numeric / 2, 3),
                                            'neutral', round((1 - r.b)::numeric / 2, 3))) AS prediction
    FROM sophia_core.unified_data_catalog AS c,
         LATERAL (SELECT random() AS a, random() AS b, random() AS keep, c.id AS tie) AS r
    WHERE c.kind IN ('call', 'message') AND r.keep < 0.95
    UNION ALL
    SELECT c.id, 'classification',
           jsonb_build_object(
               'labels', CASE WHEN r.b < 0.5
                   THEN jsonb_build_array(({_TOPIC_ARRAY})[1 + r.t])
                   ELSE jsonb_build_array(({_TOPIC_ARRAY})[1 + r.t],
                                          ({_TOPIC_ARRAY})[1 + (r.t + 1) % {len(TOPICS)}]) END,
               'scores', jsonb_build_object(({_TOPIC_ARRAY})[1 + r.t], round(r.a::numeric, 3)))
    FROM sophia_core.unified_data_catalog AS c,
         LATERAL (SELECT random() AS a, random() AS b, floor(random() * {len(TOPICS)})::int AS t,
                         random() AS keep, c.id AS tie) AS r
    WHERE c.kind IN ('call', 'message') AND r.keep < 0.9
) AS predictions
"""


async def load(
    connection: asyncpg.Connection, deals: int, calls: int, messages: int, progress: object
) -> dict[str, int]:
    """Generate and write everything; `progress(text)` is told of each step. Returns row counts."""
    say = progress if callable(progress) else (lambda _: None)
    async with connection.transaction():
        await connection.execute("SET LOCAL session_replication_role = replica")  # no deal trigger
        await connection.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        await connection.execute("SELECT setseed(0.42)")
        say(f"deals: drawing {deals:,} deals and their paths")
        await connection.execute(DEALS_SQL, deals, timeout=3600)
        await connection.execute(STEPS_SQL, timeout=3600)
        say("deals: writing the stage history")
        history = await connection.execute(HISTORY_SQL, timeout=3600)
        say(f"deals: {int(history.split()[-1]):,} stage-history rows; writing the catalog's deals")
        await connection.execute(CATALOG_DEALS_SQL, timeout=3600)
        await connection.execute("DROP TABLE bench_steps, bench_deals")
    say(f"calls and messages: writing {calls:,} calls and {messages:,} messages")
    await connection.execute(CONVERSATIONS_SQL, calls, messages, timeout=3600)
    say("calls and messages: writing their sentiment and topic predictions")
    predictions = await connection.execute(PREDICTIONS_SQL, timeout=3600)
    say("analyzing")
    await connection.execute(
        "VACUUM ANALYZE sophia_core.unified_data_catalog, sophia_core.record_predictions, "
        "sophia_analytics.stage_history",
        timeout=3600,
    )
    return {
        "deals": deals,
        "calls": calls,
        "messages": messages,
        "stage_history_rows": int(history.split()[-1]),
        "predictions": int(predictions.split()[-1]),
    }
