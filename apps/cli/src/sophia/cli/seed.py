"""Load demo data through the bulk-ingest path, with a progress bar."""

from __future__ import annotations

from collections.abc import AsyncIterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sophia.api.records.service import bulk_ingest
from sophia.api.records.spool import Spools
from sophia.cache import TieredCache
from sophia.cli.demo_data import generate, to_ndjson
from sophia.database import Database
from sophia.database.ingest import BulkResult

BATCH_RECORDS = 5_000


async def seed(
    database: Database,
    records: int,
    seed_value: int,
    max_line_bytes: int,
    cache: TieredCache | None = None,
    max_invalidate_keys: int = 1_000,
) -> BulkResult:
    """Generate `records` deterministic demo records and bulk-upsert them in one transaction.

    With `cache`, what the write changed is invalidated in a running stack's caches."""
    columns = (
        TextColumn("seeding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("seed", total=records)

        async def chunks() -> AsyncIterator[bytes]:
            lines = generate(records, seed_value)
            for chunk in to_ndjson(lines, BATCH_RECORDS):
                yield chunk
                progress.advance(task, chunk.count(b"\n"))

        return await bulk_ingest(
            database,
            cache,
            chunks(),
            max_line_bytes,
            max_invalidate_keys,
            spools=Spools(max_uploads=1, memory_bytes=database.settings.bulk_spool_memory_bytes),
            actor=None,  # Sophia's own
        )
