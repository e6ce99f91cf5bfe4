"""The analytics views over the catalog (`active_deals_mv`)."""

from __future__ import annotations

from uuid import UUID

from sophia.database import outbox
from sophia.database.pool import Connection

ACTIVE_DEALS_JSON = """json_build_object(
    'id', d.id, 'source_system', d.source_system, 'external_id', d.external_id, 'name', d.name,
    'amount', d.amount, 'stage', d.stage, 'pipeline', d.pipeline, 'close_date', d.close_date,
    'owner_id', d.owner_id, 'updated_at', d.updated_at)::text"""


async def refresh_active_deals(
    connection: Connection, timeout_s: float | None = None, actor: str | None = None
) -> None:
    """Rebuild the view without blocking readers (CONCURRENTLY needs its unique index), with a
    `view.refreshed` event for its caches and live subscribers; a refresh an `actor` asked for is
    audited with it."""
    async with connection.transaction():
        await connection.execute(
            "REFRESH MATERIALIZED VIEW CONCURRENTLY sophia_core.active_deals_mv", timeout=timeout_s
        )
        await outbox.view_refreshed(connection, "active_deals_mv")
        if actor is not None:
            await outbox.audit(connection, actor, "view.refreshed", "view/active_deals_mv", {})


async def active_deals_page(connection: Connection, after: UUID | None, limit: int) -> list[tuple[UUID, str]]:
    rows = await connection.fetch(
        f"""SELECT d.id, {ACTIVE_DEALS_JSON} AS json FROM sophia_core.active_deals_mv AS d
            WHERE $1::uuid IS NULL OR d.id > $1 ORDER BY d.id LIMIT $2""",
        after,
        limit,
    )
    return [(row["id"], row["json"]) for row in rows]


ACTIVE_DEALS_SORTS = {
    "amount": "d.amount",
    "name": "d.name",
    "stage": "d.stage",
    "close_date": "d.close_date",
    "updated_at": "d.updated_at",
}
"""The columns the dashboard's active-deals table sorts by (its `sort` parameter -> SQL)."""


async def active_deals_table(
    connection: Connection,
    sort: str,
    descending: bool,
    offset: int,
    limit: int,
    *,
    source_system: str | None = None,
    owner: str | None = None,
    pipeline: str | None = None,
) -> list[dict[str, object]]:
    """A page of `active_deals_mv` (of one source system, owner or pipeline where given) in the
    order asked for, with each deal's current name, stage and amount read from the catalog beside
    the view's (so a stage moved since the last refresh shows at once; `deleted` if it is gone)."""
    order = ACTIVE_DEALS_SORTS[sort]  # a KeyError for anything else: callers validate `sort`
    direction = "DESC NULLS LAST" if descending else "ASC NULLS LAST"
    rows = await connection.fetch(
        f"""SELECT d.id, d.source_system, d.external_id, d.name, d.amount, d.stage, d.pipeline,
                   d.close_date, d.owner_id, d.updated_at,
                   coalesce(c.data ->> 'dealstage', c.data ->> 'stage') AS live_stage,
                   coalesce(c.data ->> 'dealname', c.data ->> 'name') AS live_name,
                   c.data ->> 'amount' AS live_amount, c.deleted_at IS NOT NULL AS deleted
            FROM (SELECT * FROM sophia_core.active_deals_mv AS d
                  WHERE ($3::text IS NULL OR d.source_system = $3) AND ($4::text IS NULL OR d.owner_id = $4)
                    AND ($5::text IS NULL OR d.pipeline = $5)
                  ORDER BY {order} {direction}, d.id LIMIT $2 OFFSET $1) AS d
            LEFT JOIN sophia_core.unified_data_catalog AS c ON c.id = d.id
            ORDER BY {order} {direction}, d.id""",
        offset,
        limit,
        source_system,
        owner,
        pipeline,
    )
    return [dict(row) for row in rows]
