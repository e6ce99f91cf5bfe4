"""Refreshing `active_deals_mv`: audited when someone asked for it, silent when a worker does it."""

from sophia.database import views

AUDITS = "SELECT payload FROM sophia_core.outbox WHERE key = 'view/active_deals_mv' ORDER BY id"


async def test_a_refresh_is_audited_with_the_actor_who_asked_and_a_scheduled_one_is_not(database):
    async with database.connection() as connection:
        transaction = connection.transaction()  # rolled back: the shared database keeps no trace
        await transaction.start()
        try:
            before = await connection.fetch(AUDITS)
            await views.refresh_active_deals(connection)
            assert await connection.fetch(AUDITS) == before
            await views.refresh_active_deals(connection, actor="key/admin")
            added = (await connection.fetch(AUDITS))[len(before) :]
        finally:
            await transaction.rollback()
    assert [(row["payload"]["actor"], row["payload"]["action"]) for row in added] == [
        ("key/admin", "view.refreshed")
    ]
