"""Bulk re-processing: `record.upserted` events again for catalog records, so consumers see them
anew, or `record.reenrich` ones for the records the ML enrichment should do again.

The events go through the outbox like any write's, in id order, one batch per call; a caller
that keeps the last id (a job's progress) resumes after it.
"""

from __future__ import annotations

from uuid import UUID

from sophia.database.outbox import outbox_insert
from sophia.database.pool import Connection

_REEMIT = f"""
WITH written AS (
    SELECT id, source_system, kind, external_id, version FROM sophia_core.unified_data_catalog
    WHERE deleted_at IS NULL
      AND ($1::text IS NULL OR source_system = $1) AND ($2::text IS NULL OR kind = $2)
      AND ($3::uuid IS NULL OR id > $3)
    ORDER BY id LIMIT $4
), event AS ({outbox_insert("written", "record.upserted")})
SELECT count(*) AS emitted, (SELECT id FROM written ORDER BY id DESC LIMIT 1) AS last_id FROM written
"""


async def reemit_batch(
    connection: Connection,
    source_system: str | None,
    kind: str | None,
    after: UUID | None,
    limit: int,
) -> tuple[int, UUID | None]:
    """Events for the next `limit` live records matching the filter (None: any) with ids past
    `after`; how many, and the last id (None when there were none left)."""
    row = await connection.fetchrow(_REEMIT, source_system, kind, after, limit)
    assert row is not None
    return int(row["emitted"]), row["last_id"]


REENRICH = "record.reenrich"
"""A record the enrichment should do again: for every other consumer, nothing happened."""

_REENRICH = f"""
WITH written AS (
    SELECT c.id, c.source_system, c.kind, c.external_id, c.version
    FROM sophia_core.unified_data_catalog AS c
    LEFT JOIN sophia_core.record_embeddings AS e ON e.record_id = c.id
    WHERE c.deleted_at IS NULL AND c.kind = ANY($1::text[])
      AND (e.record_id IS NULL OR e.model_version <> $2
           OR EXISTS (
               SELECT FROM unnest($5::text[], $6::text[]) AS served (task, model_version)
               LEFT JOIN sophia_core.record_predictions AS p
                   ON p.record_id = c.id AND p.task = served.task
               WHERE p.model_version IS DISTINCT FROM served.model_version))
      AND ($3::uuid IS NULL OR c.id > $3)
    ORDER BY c.id LIMIT $4
), event AS ({outbox_insert("written", REENRICH)})
SELECT count(*) AS emitted, (SELECT id FROM written ORDER BY id DESC LIMIT 1) AS last_id FROM written
"""


async def reemit_unenriched_batch(
    connection: Connection,
    kinds: list[str],
    model_version: str,
    task_versions: dict[str, str],
    after: UUID | None,
    limit: int,
) -> tuple[int, UUID | None]:
    """`record.reenrich` events (which only the enrichment acts on) for the next `limit` live
    records of `kinds` past `after` not enriched by the models now served: no embedding by
    `model_version` (none yet, or one by another model), or a task of `task_versions`
    ({"classification": version, ...}) whose prediction is missing or by another version. How
    many, and the last id."""
    tasks = sorted(task_versions)
    versions = [task_versions[task] for task in tasks]
    row = await connection.fetchrow(_REENRICH, kinds, model_version, after, limit, tasks, versions)
    assert row is not None
    return int(row["emitted"]), row["last_id"]
