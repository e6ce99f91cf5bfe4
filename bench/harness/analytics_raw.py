"""The analytics aggregates computed the straightforward way: one SQL query each over the raw data
(the catalog's deals, `sophia_analytics.stage_history`, `sophia_core.record_predictions`), shaped
like the answers of `sophia.database.analytics` so the two can be compared value for value.

The rules are docs/analytics.md's, written inline (no summary table, view or helper function of
`sophia_analytics` is read): a deal's stage, status, amount, owner, pipeline and closing day. The
filters are `Filters.where` / `TrendFilters.where` themselves, so both sides filter alike.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg

from sophia.database.analytics import Filters, TrendFilters

DEALS = r"""
WITH raw AS (
    SELECT c.source_system,
           coalesce(nullif(c.data ->> 'hubspot_owner_id', ''), nullif(c.data ->> 'owner', ''), '') AS owner,
           coalesce(nullif(c.data ->> 'pipeline', ''), 'default') AS pipeline,
           coalesce(c.data ->> 'dealstage', c.data ->> 'stage', '') AS stage,
           CASE WHEN c.data ->> 'amount' ~ '^-?[0-9]{1,30}(\.[0-9]{1,10})?$'
                THEN (c.data ->> 'amount')::numeric ELSE 0 END AS amount,
           c.created_at, c.updated_at, c.data ->> 'closedate' AS closedate
    FROM sophia_core.unified_data_catalog AS c
    WHERE c.kind = 'deal' AND c.deleted_at IS NULL
), statused AS (
    SELECT raw.*,
           CASE WHEN lower(stage) IN ('closedwon', 'closed_won', 'won') THEN 'won'
                WHEN lower(stage) IN ('closedlost', 'closed_lost', 'lost') THEN 'lost'
                ELSE 'open' END AS status,
           (created_at AT TIME ZONE 'UTC')::date AS created_on
    FROM raw
), closing AS (
    SELECT statused.*,
           CASE WHEN status <> 'open' THEN coalesce(
               CASE WHEN closedate ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}' THEN left(closedate, 10)::date END,
               (updated_at AT TIME ZONE 'UTC')::date) END AS closed_on
    FROM statused
), deals AS (
    SELECT closing.*,
           date_trunc('month', created_on)::date AS created_month,
           date_trunc('month', closed_on)::date AS closed_month,
           greatest(closed_on - created_on, 0) AS cycle_days
    FROM closing
)
"""

CLOSED_SUMS = (
    "count(*) FILTER (WHERE s.status = 'won') AS won, "
    "count(*) FILTER (WHERE s.status = 'lost') AS lost, "
    "sum(s.amount) FILTER (WHERE s.status = 'won') AS won_amount, "
    "sum(s.cycle_days) FILTER (WHERE s.status = 'won') AS won_cycle_days"
)


def figures(row: Any) -> dict[str, Any]:
    won, lost = int(row["won"] or 0), int(row["lost"] or 0)
    amount: Decimal = row["won_amount"] or Decimal(0)
    cycle = int(row["won_cycle_days"] or 0)
    return {
        "won": won,
        "lost": lost,
        "win_rate": won / (won + lost) if won + lost else None,
        "average_deal_size": amount / won if won else None,
        "average_cycle_days": cycle / won if won else None,
    }


async def pipeline(connection: asyncpg.Connection, filters: Filters) -> list[dict[str, Any]]:
    args: list[Any] = []
    rows = await connection.fetch(
        DEALS + "SELECT s.stage, count(*) AS deals, sum(s.amount) AS amount, "
        "sum(s.amount * coalesce(p.probability, 0)) AS weighted_amount, "
        "min(coalesce(p.position, 2147483647)) AS position "
        "FROM deals AS s LEFT JOIN sophia_analytics.stage_probabilities AS p "
        "ON p.pipeline = s.pipeline AND p.stage = s.stage "
        f"WHERE s.status = 'open' AND {filters.where('created_month', args)} "
        "GROUP BY s.stage ORDER BY position, s.stage",
        *args,
    )
    return [{name: row[name] for name in ("stage", "deals", "amount", "weighted_amount")} for row in rows]


async def win_rate(connection: asyncpg.Connection, filters: Filters) -> dict[str, Any]:
    """In all, by owner and by month in one scan (grouping sets)."""
    args: list[Any] = []
    rows = await connection.fetch(
        DEALS + "SELECT grouping(s.owner) AS all_owners, grouping(s.closed_month) AS all_months, "
        f"s.owner, s.closed_month, {CLOSED_SUMS} FROM deals AS s "
        f"WHERE s.status <> 'open' AND {filters.where('closed_month', args)} "
        "GROUP BY GROUPING SETS ((), (s.owner), (s.closed_month))",
        *args,
    )
    total = next(row for row in rows if row["all_owners"] and row["all_months"])
    owners = sorted((row for row in rows if not row["all_owners"]), key=lambda row: row["owner"])
    months = sorted((row for row in rows if not row["all_months"]), key=lambda row: row["closed_month"])
    return {
        **figures(total),
        "by_owner": [{"owner": row["owner"], **figures(row)} for row in owners],
        "by_month": [{"month": row["closed_month"], **figures(row)} for row in months],
    }


async def velocity(connection: asyncpg.Connection, filters: Filters) -> dict[str, Any]:
    """The closed figures of the months asked and the deals open now, in one scan."""
    args: list[Any] = []
    closed = filters.where("closed_month", args)
    anytime = Filters(None, None, filters.source_system, filters.owner, filters.pipeline)
    open_now = anytime.where("created_month", args)
    row = await connection.fetchrow(
        DEALS
        + "SELECT "
        + CLOSED_SUMS.replace("WHERE s.status", f"WHERE {closed} AND s.status")
        + f", count(*) FILTER (WHERE s.status = 'open' AND {open_now}) AS open_deals FROM deals AS s",
        *args,
    )
    assert row is not None
    result = figures(row)
    parts = (result["average_deal_size"], result["win_rate"], result["average_cycle_days"])
    open_deals = int(row["open_deals"])
    per_day = (
        float(open_deals) * float(parts[0]) * parts[1] / parts[2] if None not in parts and parts[2] else None
    )
    return {"open_deals": open_deals, **result, "velocity_per_day": per_day}


async def cohorts(connection: asyncpg.Connection, filters: Filters) -> list[dict[str, Any]]:
    args: list[Any] = []
    rows = await connection.fetch(
        DEALS + "SELECT s.created_month, "
        "count(*) FILTER (WHERE s.status = 'open') AS open, "
        "count(*) FILTER (WHERE s.status = 'won') AS won, "
        "count(*) FILTER (WHERE s.status = 'lost') AS lost "
        f"FROM deals AS s WHERE {filters.where('created_month', args)} "
        "GROUP BY s.created_month ORDER BY s.created_month",
        *args,
    )
    return [
        {"month": row["created_month"], **{name: int(row[name]) for name in ("open", "won", "lost")}}
        for row in rows
    ]


FUNNEL = """
WITH history AS (
    SELECT h.*, row_number() OVER (PARTITION BY h.deal_id, h.to_stage ORDER BY h.id) = 1 AS first_time
    FROM sophia_analytics.stage_history AS h
), moves AS (
    SELECT source_system, owner, pipeline, to_stage AS stage,
           date_trunc('month', at AT TIME ZONE 'UTC')::date AS month,
           1 AS entered, first_time::int AS reached, 0 AS exited, 0::numeric AS seconds
    FROM history
    UNION ALL
    SELECT source_system, owner, pipeline, from_stage, date_trunc('month', at AT TIME ZONE 'UTC')::date,
           0, 0, 1, extract(epoch FROM at - entered_from_at)
    FROM sophia_analytics.stage_history WHERE from_stage IS NOT NULL
)
"""


async def funnel(connection: asyncpg.Connection, filters: Filters) -> list[dict[str, Any]]:
    """Every stage change of every deal, each deal's first entry into a stage found by a window."""
    args: list[Any] = []
    rows = await connection.fetch(
        FUNNEL + "SELECT s.stage, sum(s.reached) AS reached, sum(s.entered) AS entered, "
        "sum(s.exited) AS exited, sum(s.seconds) AS seconds, "
        "min(coalesce(p.position, 2147483647)) AS position "
        "FROM moves AS s LEFT JOIN sophia_analytics.stage_probabilities AS p "
        "ON p.pipeline = s.pipeline AND p.stage = s.stage "
        f"WHERE {filters.where('month', args)} GROUP BY s.stage ORDER BY position, s.stage",
        *args,
    )
    stages: list[dict[str, Any]] = []
    previous: int | None = None
    for row in rows:
        reached, exited = int(row["reached"]), int(row["exited"])
        stages.append(
            {
                "stage": row["stage"],
                "reached": reached,
                "entered": int(row["entered"]),
                "conversion": reached / previous if previous else None,
                "average_days_in_stage": float(row["seconds"]) / exited / 86400 if exited else None,
            }
        )
        previous = reached
    return stages


CONVERSATIONS = """
SELECT c.source_system, c.kind, date_trunc('week', c.created_at AT TIME ZONE 'UTC')::date AS week,
       p.prediction
FROM sophia_core.unified_data_catalog AS c
JOIN sophia_core.record_predictions AS p ON p.record_id = c.id AND p.task = $1
WHERE c.kind IN ('call', 'message') AND c.deleted_at IS NULL
"""


def _weeks(rows: list[Any]) -> list[dict[str, Any]]:
    weeks: dict[date, dict[str, int]] = {}
    for row in rows:
        weeks.setdefault(row["week"], {})[row["label"]] = int(row["records"])
    return [{"week": week, "counts": counts} for week, counts in weeks.items()]


async def sentiment(connection: asyncpg.Connection, filters: TrendFilters) -> list[dict[str, Any]]:
    args: list[Any] = ["sentiment"]
    rows = await connection.fetch(
        f"SELECT s.week, s.prediction ->> 'label' AS label, count(*) AS records FROM ({CONVERSATIONS}) AS s "
        f"WHERE s.prediction ->> 'label' IS NOT NULL AND {filters.where(args)} "
        "GROUP BY s.week, label ORDER BY s.week, label",
        *args,
    )
    return _weeks(rows)


async def topics(connection: asyncpg.Connection, filters: TrendFilters) -> list[dict[str, Any]]:
    """Each label of a call or message counted once (the generated labels are distinct)."""
    args: list[Any] = ["classification"]
    rows = await connection.fetch(
        f"SELECT s.week, label, count(*) AS records FROM ({CONVERSATIONS}) AS s "
        "CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof(s.prediction -> 'labels') "
        "= 'array' THEN s.prediction -> 'labels' END) AS label "
        f"WHERE {filters.where(args)} GROUP BY s.week, label ORDER BY s.week, label",
        *args,
    )
    return _weeks(rows)


QUERIES = {
    "pipeline": pipeline,
    "win-rate": win_rate,
    "velocity": velocity,
    "cohorts": cohorts,
    "funnel": funnel,
    "sentiment": sentiment,
    "topics": topics,
}
