"""Storing envelopes off the bus: an empty batch is a no-op."""

import asyncpg

from sophia.database import events


async def test_storing_no_documents_stores_nothing_and_creates_no_staging_table(settings):
    connection = await asyncpg.connect(settings.database_url)  # a session of its own: no temp tables yet
    try:
        stored_before = await connection.fetchval("SELECT count(*) FROM sophia_core.events")
        assert await events.store(connection, []) == 0
        staging = await connection.fetchval("SELECT to_regclass('pg_temp.events_staging')")
        stored_after = await connection.fetchval("SELECT count(*) FROM sophia_core.events")
    finally:
        await connection.close()
    assert staging is None
    assert stored_after == stored_before
