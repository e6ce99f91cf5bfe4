"""The analytics views over the catalog (`active_deals_mv`).

`active_deals_mv` is the open deals of the catalog, kept by the catalog's own writes (a trigger, in
the writing transaction: migration 0018), not recomputed. A refresh checks it against the catalog
and mends what differs (after a load with triggers off, or a restore), and announces it.
"""

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
) -> int:
    """Check `active_deals_mv` against the catalog and mend the rows that differ (none, while the
    trigger has seen every write); how many it mended (`sophia_core.mend_active_deals`: deal
    writers wait for it, readers do not). Announced with a `view.refreshed` event for its caches
    and live subscribers; a refresh an `actor` asked for is audited with it."""
    async with connection.transaction():
        mended: int = await connection.fetchval("SELECT sophia_core.mend_active_deals()", timeout=timeout_s)
        await outbox.view_refreshed(connection, "active_deals_mv")
        if actor is not None:
            await outbox.audit(
                connection, actor, "view.refreshed", "view/active_deals_mv", {"mended": mended}
            )
    return mended


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
    order asked for."""
    order = ACTIVE_DEALS_SORTS[sort]  # a KeyError for anything else: callers validate `sort`
    direction = "DESC NULLS LAST" if descending else "ASC NULLS LAST"
    rows = await connection.fetch(
        f"""SELECT d.id, d.source_system, d.external_id, d.name, d.amount, d.stage, d.pipeline,
                   d.close_date, d.owner_id, d.updated_at
            FROM sophia_core.active_deals_mv AS d
            WHERE ($3::text IS NULL OR d.source_system = $3) AND ($4::text IS NULL OR d.owner_id = $4)
              AND ($5::text IS NULL OR d.pipeline = $5)
            ORDER BY {order} {direction}, d.id LIMIT $2 OFFSET $1""",
        offset,
        limit,
        source_system,
        owner,
        pipeline,
    )
    return [dict(row) for row in rows]
