"""Bulk ingest: COPY a stream of rows into a per-connection staging table, then one merge."""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sophia.database.catalog import CATALOG
from sophia.database.outbox import outbox_insert
from sophia.database.pool import Connection

StagedRow = tuple[int, str, str, str, str, datetime | None]
"""(line number, source_system, kind, external_id, the whole line as JSON text, created_at)."""

STAGING_COLUMNS = ("line", "source_system", "kind", "external_id", "raw", "created_at")

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS bulk_staging (
    line bigint NOT NULL, source_system text NOT NULL, kind text NOT NULL,
    external_id text NOT NULL, raw jsonb NOT NULL, created_at timestamptz
) ON COMMIT DELETE ROWS
"""

# The last line wins when a batch names the same record twice (ON CONFLICT may touch a row once).
_MERGE = f"""
WITH batch AS (
    SELECT DISTINCT ON (source_system, kind, external_id) *
    FROM bulk_staging
    ORDER BY source_system, kind, external_id, line DESC
), written AS (
    INSERT INTO {CATALOG} AS c (source_system, kind, external_id, data, created_at)
    SELECT source_system, kind, external_id, raw -> 'data', coalesce(created_at, now()) FROM batch
    ON CONFLICT (source_system, kind, external_id) DO UPDATE
        SET data = EXCLUDED.data, updated_at = now(), version = c.version + 1, deleted_at = NULL
    RETURNING c.id, c.source_system, c.kind, c.external_id, c.version, (xmax = 0) AS created
), event AS ({outbox_insert("written", "record.upserted", "$2")})
SELECT count(*) FILTER (WHERE created) AS created, count(*) FILTER (WHERE NOT created) AS updated,
       (array_agg(id) FILTER (WHERE NOT created))[1:$1] AS updated_ids
FROM written
"""


@dataclass(frozen=True, slots=True)
class BulkResult:
    received: int
    created: int
    updated: int
    updated_ids: list[UUID]
    """The records that existed before (what caches may hold), at most `max_updated_ids` of them."""


async def bulk_upsert(
    connection: Connection,
    rows: AsyncIterable[StagedRow],
    max_updated_ids: int = 1_000,
    timeout_s: float | None = None,
    *,
    actor: str | None = None,
) -> BulkResult:
    """Write every row or none: an exception from `rows` aborts the COPY and the transaction."""
    received = 0

    async def counted() -> AsyncIterable[StagedRow]:
        nonlocal received
        async for row in rows:
            received += 1
            yield row

    async with connection.transaction():
        await connection.execute(_STAGING)
        await connection.copy_records_to_table(
            "bulk_staging", records=counted(), columns=STAGING_COLUMNS, timeout=timeout_s
        )
        result = await connection.fetchrow(_MERGE, max_updated_ids + 1, actor, timeout=timeout_s)
    assert result is not None
    updated_ids = list(result["updated_ids"] or [])
    return BulkResult(received, int(result["created"]), int(result["updated"]), updated_ids)
