"""The outbox's backlog is counted at a cost that does not grow with it."""

import asyncpg

from sophia.database import outbox


async def insert_events(connection: asyncpg.Connection, count: int) -> None:
    await connection.execute(
        """INSERT INTO sophia_core.outbox (topic, event_type, key, payload)
           SELECT 'records', 'record.upserted', 'k' || n, '{}'::jsonb FROM generate_series(1, $1) AS n""",
        count,
    )


async def test_a_backlog_under_the_bound_is_counted_exactly_and_one_over_it_is_estimated(migrated_database):
    connection = await asyncpg.connect(await migrated_database())
    try:
        assert await outbox.depth(connection) == outbox.Depth(0, exact=True)
        await insert_events(connection, 30)
        assert await outbox.depth(connection, exact_up_to=100) == outbox.Depth(30, exact=True)
        estimated = await outbox.depth(connection, exact_up_to=10)
        assert estimated == outbox.Depth(30, exact=False)  # the span of the waiting ids
        await connection.execute(  # relayed out of order: the span is an upper bound
            "DELETE FROM sophia_core.outbox WHERE id IN "
            "(SELECT id FROM sophia_core.outbox ORDER BY id LIMIT 5 OFFSET 10)"
        )
        assert await outbox.depth(connection, exact_up_to=100) == outbox.Depth(25, exact=True)
        assert await outbox.depth(connection, exact_up_to=10) == outbox.Depth(30, exact=False)
    finally:
        await connection.close()
