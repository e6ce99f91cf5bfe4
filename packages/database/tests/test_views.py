"""Refreshing `active_deals_mv`: a `view.refreshed` event every time (caches, live subscribers);
audited when someone asked for it, not when a worker does it."""

from sophia.database import views

AUDITS = (
    "SELECT payload FROM sophia_core.outbox WHERE key = 'view/active_deals_mv' AND topic = 'audit-logs' "
    "ORDER BY id"
)
REFRESHES = (
    "SELECT event_type, payload FROM sophia_core.outbox WHERE key = 'view/active_deals_mv' "
    "AND topic = 'records' ORDER BY id"
)


async def test_a_refresh_is_audited_with_the_actor_who_asked_and_a_scheduled_one_is_not(database):
    async with database.connection() as connection:
        transaction = connection.transaction()  # rolled back: the shared database keeps no trace
        await transaction.start()
        try:
            before, refreshed_before = await connection.fetch(AUDITS), await connection.fetch(REFRESHES)
            await views.refresh_active_deals(connection)
            assert await connection.fetch(AUDITS) == before
            await views.refresh_active_deals(connection, actor="key/admin")
            added = (await connection.fetch(AUDITS))[len(before) :]
            refreshed = (await connection.fetch(REFRESHES))[len(refreshed_before) :]
        finally:
            await transaction.rollback()
    assert [(row["payload"]["actor"], row["payload"]["action"]) for row in added] == [
        ("key/admin", "view.refreshed")
    ]
    assert [(row["event_type"], row["payload"]["view"]) for row in refreshed] == [
        ("view.refreshed", "active_deals_mv"),
        ("view.refreshed", "active_deals_mv"),
    ]
    assert all("at" in row["payload"] for row in refreshed)
