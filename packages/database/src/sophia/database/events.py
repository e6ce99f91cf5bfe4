"""Events from the bus into `sophia_core.events`: COPY the envelopes into a staging table, then one
insert that skips the ids already stored (a redelivered batch adds nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sophia.database.pool import Connection

COLUMNS = ("id", "type", "source", "key", "occurred_at", "payload", "trace_id")
_STAGING = "events_staging"
_FROM_DOCUMENTS = f"""
INSERT INTO sophia_core.events ({", ".join(COLUMNS)})
SELECT DISTINCT ON (id) * FROM (
    SELECT (doc->>'id')::uuid AS id, doc->>'type', doc->>'source', doc->>'key',
           (doc->>'occurred_at')::timestamptz,
           CASE WHEN jsonb_typeof(doc->'payload') = 'object' THEN doc->'payload' END,
           doc->>'trace_id'
    FROM {_STAGING}) AS parsed
ON CONFLICT (id) DO NOTHING"""


async def store(connection: Connection, documents: Sequence[bytes]) -> int:
    """Store envelopes as they came off the bus (JSON bytes, docs/events.md) once each; how many
    were new. Call inside a transaction.

    PostgreSQL parses the JSON, not Python: decoding and checking each envelope in the workers was
    a fifth of their CPU per event in `bench/events`. A document that is not an envelope (not
    JSON, an id that is no UUID, a field missing, a payload that is no object) fails the whole
    statement, and the processor then retries the batch one event at a time to find it."""
    if not documents:
        return 0
    await connection.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (doc jsonb NOT NULL) ON COMMIT DELETE ROWS"
    )
    await connection.copy_records_to_table(_STAGING, records=[(doc,) for doc in documents], columns=["doc"])
    status = await connection.execute(_FROM_DOCUMENTS)
    return int(status.rsplit(" ", 1)[1])


async def count(connection: Connection, ids: Sequence[str]) -> int:
    """How many of `ids` are stored."""
    return int(
        await connection.fetchval(
            "SELECT count(*) FROM sophia_core.events WHERE id = ANY($1::uuid[])", [UUID(i) for i in ids]
        )
    )
