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
