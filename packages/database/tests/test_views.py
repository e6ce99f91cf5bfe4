"""`active_deals_mv`: kept by the catalog's writes; a refresh mends what differs, with a
`view.refreshed` event every time (caches, live subscribers), audited when someone asked for it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sophia.database import views

AUDITS = (
    "SELECT payload FROM sophia_core.outbox WHERE key = 'view/active_deals_mv' AND topic = 'audit-logs' "
    "ORDER BY id"
)
REFRESHES = (
    "SELECT event_type, payload FROM sophia_core.outbox WHERE key = 'view/active_deals_mv' "
    "AND topic = 'records' ORDER BY id"
)


@asynccontextmanager
async def rolled_back(database) -> AsyncIterator:
    """A connection in a transaction rolled back at the end: the shared database keeps no trace."""
    async with database.connection() as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            yield connection
        finally:
            await transaction.rollback()


async def test_a_refresh_is_audited_with_the_actor_who_asked_and_a_scheduled_one_is_not(database):
    async with rolled_back(database) as connection:
        before, refreshed_before = await connection.fetch(AUDITS), await connection.fetch(REFRESHES)
        await views.refresh_active_deals(connection)
        assert await connection.fetch(AUDITS) == before
        await views.refresh_active_deals(connection, actor="key/admin")
        added = (await connection.fetch(AUDITS))[len(before) :]
        refreshed = (await connection.fetch(REFRESHES))[len(refreshed_before) :]
    assert [(row["payload"]["actor"], row["payload"]["action"]) for row in added] == [
        ("key/admin", "view.refreshed")
    ]
    assert [(row["event_type"], row["payload"]["view"]) for row in refreshed] == [
        ("view.refreshed", "active_deals_mv"),
        ("view.refreshed", "active_deals_mv"),
    ]
    assert all("at" in row["payload"] for row in refreshed)


LINES = "SELECT * FROM sophia_core.active_deals_mv WHERE source_system = $1 ORDER BY external_id"
WRITE = """INSERT INTO sophia_core.unified_data_catalog (source_system, kind, external_id, data)
           VALUES ($1, $2, $3, $4::jsonb)
           ON CONFLICT (source_system, kind, external_id)
           DO UPDATE SET data = excluded.data, updated_at = now(),
                         version = unified_data_catalog.version + 1"""


async def test_the_catalogs_writes_keep_the_open_deals_without_a_refresh(database):
    async with rolled_back(database) as connection:
        deal = {"dealname": "Acme", "dealstage": "qualifiedtobuy", "amount": "1200.50", "pipeline": "p"}
        await connection.execute(WRITE, "kept", "deal", "d-1", orjson.dumps(deal).decode())
        await connection.execute(WRITE, "kept", "contact", "c-1", orjson.dumps(deal).decode())
        [line] = await connection.fetch(LINES, "kept")
        assert (line["external_id"], line["name"], line["stage"], line["amount"], line["pipeline"]) == (
            "d-1",
            "Acme",
            "qualifiedtobuy",
            Decimal("1200.50"),
            "p",
        )
        moved = deal | {"stage": "x", "dealstage": None, "amount": "1e400", "hubspot_owner_id": "7"}
        await connection.execute(WRITE, "kept", "deal", "d-1", orjson.dumps(moved).decode())
        [line] = await connection.fetch(LINES, "kept")
        assert (line["stage"], line["amount"], line["owner_id"]) == ("x", None, "7")  # no number: null
        await connection.execute(
            WRITE, "kept", "deal", "d-1", orjson.dumps(deal | {"dealstage": "Won"}).decode()
        )
        assert await connection.fetch(LINES, "kept") == []  # closed: gone
        await connection.execute(WRITE, "kept", "deal", "d-1", orjson.dumps(deal).decode())
        assert len(await connection.fetch(LINES, "kept")) == 1  # reopened: back
        await connection.execute(
            "UPDATE sophia_core.unified_data_catalog SET deleted_at = now() WHERE source_system = 'kept'"
        )
        assert await connection.fetch(LINES, "kept") == []  # deleted: gone
        await connection.execute(
            "UPDATE sophia_core.unified_data_catalog SET deleted_at = NULL WHERE source_system = 'kept'"
        )
        assert len(await connection.fetch(LINES, "kept")) == 1
        await connection.execute("DELETE FROM sophia_core.unified_data_catalog WHERE source_system = 'kept'")
        assert await connection.fetch(LINES, "kept") == []  # purged: gone
        assert await views.refresh_active_deals(connection) == 0  # nothing to mend


async def test_a_refresh_mends_what_was_written_around_the_trigger_and_says_how_much(database):
    async with rolled_back(database) as connection:
        for number, stage in enumerate(["qualifiedtobuy", "contractsent", "closedlost"]):
            deal = {"dealname": f"n{number}", "dealstage": stage}
            await connection.execute(WRITE, "mend", "deal", f"d-{number}", orjson.dumps(deal).decode())
        kept = await connection.fetch(LINES, "mend")
        assert [line["external_id"] for line in kept] == ["d-0", "d-1"]
        # What a load with the triggers off, or a restore, can leave: one missing, one stale,
        # one that is no open deal at all.
        await connection.execute("DELETE FROM sophia_core.active_deals_mv WHERE id = $1", kept[0]["id"])
        await connection.execute(
            "UPDATE sophia_core.active_deals_mv SET name = 'stale' WHERE id = $1", kept[1]["id"]
        )
        await connection.execute(
            "INSERT INTO sophia_core.active_deals_mv"
            " (id, source_system, external_id, created_at, updated_at)"
            " VALUES (gen_random_uuid(), 'mend', 'ghost', now(), now())"
        )
        assert await views.refresh_active_deals(connection, actor="key/admin") == 3
        assert await connection.fetch(LINES, "mend") == kept
        assert await views.refresh_active_deals(connection) == 0
        [audited] = (await connection.fetch(AUDITS))[-1:]
        assert audited["payload"]["details"] == {"mended": 3}


async def test_emptying_the_catalog_empties_the_open_deals(database):
    async with rolled_back(database) as connection:
        deal = orjson.dumps({"dealstage": "qualifiedtobuy"}).decode()
        await connection.execute(WRITE, "emptied", "deal", "d-1", deal)
        await connection.execute("TRUNCATE sophia_core.unified_data_catalog CASCADE")
        assert await connection.fetchval("SELECT count(*) FROM sophia_core.active_deals_mv") == 0


STAGES = ["qualifiedtobuy", "contractsent", "closedwon", "Lost", None]
WRITES = st.lists(
    st.tuples(
        st.integers(0, 2),  # which deal
        st.sampled_from(["write", "delete", "restore", "purge"]),
        st.sampled_from(STAGES),
        st.sampled_from(["12.5", "a lot", None]),
    ),
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=WRITES)
async def test_after_any_writes_the_trigger_left_nothing_for_a_refresh_to_mend(database, writes):
    """Whatever the writes, deletes, restores and purges, the table is what the view's definition
    gives: a refresh finds nothing to mend."""
    async with rolled_back(database) as connection:
        for deal, action, stage, amount in writes:
            if action == "write":
                data = {"dealstage": stage, "amount": amount, "dealname": f"n{deal}"}
                await connection.execute(WRITE, "any", "deal", f"d-{deal}", orjson.dumps(data).decode())
                continue
            change = {
                "delete": "UPDATE sophia_core.unified_data_catalog SET deleted_at = now()",
                "restore": "UPDATE sophia_core.unified_data_catalog SET deleted_at = NULL",
                "purge": "DELETE FROM sophia_core.unified_data_catalog",
            }[action]
            await connection.execute(
                f"{change} WHERE source_system = 'any' AND external_id = $1", f"d-{deal}"
            )
        assert await views.refresh_active_deals(connection) == 0
