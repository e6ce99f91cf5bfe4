"""Bulk ingest: rows spooled as PostgreSQL's binary COPY format, then COPY and one merge.

The rows are checked and spooled (in memory up to a bound, then in a temporary file) while the
client sends them; a connection is taken only once the whole body is in, for the COPY and the
merge. A client that sends slowly, or stops, holds no connection and no transaction.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO
from uuid import UUID

from sophia.database.catalog import CATALOG
from sophia.database.outbox import outbox_insert
from sophia.database.pool import Connection

StagedRow = tuple[int, str, str, str, str, datetime | None]
"""(line number, source_system, kind, external_id, the whole line as JSON text, created_at)."""

STAGING_COLUMNS = ("line", "source_system", "kind", "external_id", "raw", "created_at")

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)
_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_ROW_START = struct.pack("!h", len(STAGING_COLUMNS))
_NULL = struct.pack("!i", -1)


def copy_row(row: StagedRow) -> bytes:
    """One row of the staging table in binary COPY format: field count, then each field's length
    and bytes (bigint: 8 bytes; text: UTF-8; jsonb: version 1 and the text; timestamptz: µs since
    2000-01-01)."""
    line, source_system, kind, external_id, raw, created_at = row
    texts = [value.encode() for value in (source_system, kind, external_id)]
    raw_bytes = raw.encode()
    parts = [_ROW_START, struct.pack("!iq", 8, line)]
    for text in texts:
        parts += [struct.pack("!i", len(text)), text]
    parts += [struct.pack("!ib", len(raw_bytes) + 1, 1), raw_bytes]
    if created_at is None:
        parts.append(_NULL)
    else:
        micros = (created_at - _POSTGRES_EPOCH) // _MICROSECOND
        parts.append(struct.pack("!iq", 8, micros))
    return b"".join(parts)


def line_of_row(rows: BinaryIO, row: int) -> int:
    """The NDJSON line number held by the `row`th row (from 1) of a spool of `copy_row`s (each a
    field count, then each field's length and bytes, the line number first): where PostgreSQL's
    "COPY bulk_staging, line N" points."""
    rows.seek(len(COPY_HEADER))
    for _ in range(row - 1):
        (fields,) = struct.unpack("!h", rows.read(2))
        for _ in range(fields):
            (size,) = struct.unpack("!i", rows.read(4))
            if size > 0:
                rows.seek(size, io.SEEK_CUR)
    _, _, number = struct.unpack("!hiq", rows.read(14))
    return int(number)


_MICROSECOND = datetime.resolution

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
    spool: BinaryIO,
    received: int,
    max_updated_ids: int = 1_000,
    timeout_s: float | None = None,
    *,
    actor: str | None = None,
) -> BulkResult:
    """COPY the `received` rows of `spool` (binary COPY format, from its start: `COPY_HEADER`, rows
    of `copy_row`, `COPY_TRAILER`) into staging and merge them: every row or none."""
    async with connection.transaction():
        await connection.execute(_STAGING)
        await connection.copy_to_table(
            "bulk_staging", source=spool, columns=STAGING_COLUMNS, format="binary", timeout=timeout_s
        )
        result = await connection.fetchrow(_MERGE, max_updated_ids + 1, actor, timeout=timeout_s)
    assert result is not None
    updated_ids = list(result["updated_ids"] or [])
    return BulkResult(received, int(result["created"]), int(result["updated"]), updated_ids)
