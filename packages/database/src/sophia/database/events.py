"""Events from the bus into `sophia_core.events`: COPY into a staging table, then one insert that
skips the ids already stored (a redelivered batch adds nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sophia.core.events import Envelope
from sophia.database.pool import Connection

COLUMNS = ("id", "type", "source", "key", "occurred_at", "payload", "trace_id")
_STAGING = "events_staging"


async def store(connection: Connection, envelopes: Sequence[Envelope]) -> int:
    """Store `envelopes` once each; how many were new. Call inside a transaction."""
    if not envelopes:
        return 0
    await connection.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} "
        "(LIKE sophia_core.events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    rows = [(UUID(e.id), e.type, e.source, e.key, e.occurred_at, e.payload, e.trace_id) for e in envelopes]
    await connection.copy_records_to_table(_STAGING, records=rows, columns=COLUMNS)
    columns = ", ".join(COLUMNS)
    status = await connection.execute(
        f"INSERT INTO sophia_core.events ({columns}) SELECT DISTINCT ON (id) {columns} FROM {_STAGING} "
        "ON CONFLICT (id) DO NOTHING"
    )
    return int(status.rsplit(" ", 1)[1])


async def count(connection: Connection, ids: Sequence[str]) -> int:
    """How many of `ids` are stored."""
    return int(
        await connection.fetchval(
            "SELECT count(*) FROM sophia_core.events WHERE id = ANY($1::uuid[])", [UUID(i) for i in ids]
        )
    )
