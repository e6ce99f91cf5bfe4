"""The audit trail's hash chain on real PostgreSQL: appends once, verifies, and catches tampering."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from sophia.database import Database, audit
from sophia.database.audit import AuditEntry


def entry(number: int) -> AuditEntry:
    return AuditEntry(
        event_id=uuid.uuid4(),
        occurred_at=datetime(2026, 11, 25, 12, number % 60, tzinfo=UTC),
        actor="catalog",
        action="record.upserted",
        target=f"hubspot/deal/d-{number}",
        details={"version": number},
    )


@pytest.fixture(scope="module")
async def trail_database(migrated_database) -> str:
    """A migrated database of this module's own: tampering must not leak into other tests'."""
    return await migrated_database()


@pytest.fixture
async def trail(trail_database, settings):
    """A connection to the module's database, its trail and outbox emptied first (behind the
    trail's own triggers, as only its owner can), so each test starts a chain from the genesis."""
    async with Database(settings, dsn=trail_database) as database, database.connection() as connection:
        await connection.execute(
            """
            ALTER TABLE sophia_core.audit_log DISABLE TRIGGER USER;
            TRUNCATE sophia_core.audit_log, sophia_core.outbox RESTART IDENTITY;
            ALTER TABLE sophia_core.audit_log ENABLE TRIGGER USER;
            """
        )
        yield connection


async def verdict(connection) -> tuple[int, audit.Broken | None]:
    async with connection.transaction():
        results = [result async for result in audit.verify(connection, batch=3)]
    return results[-1]


async def test_appended_entries_form_a_chain_that_verifies(trail):
    async with trail.transaction():
        assert await audit.append(trail, [entry(n) for n in range(5)]) == 5
    async with trail.transaction():
        assert await audit.append(trail, [entry(n) for n in range(5, 7)]) == 2
    assert await verdict(trail) == (7, None)
    links = await trail.fetch("SELECT prev_hash, hash FROM sophia_core.audit_log ORDER BY seq")
    assert bytes(links[0][0]) == audit.GENESIS
    assert all(bytes(links[n][0]) == bytes(links[n - 1][1]) for n in range(1, 7))


async def test_an_entry_appended_twice_is_kept_once(trail):
    entries = [entry(n) for n in range(3)]
    for _ in range(2):
        async with trail.transaction():
            await audit.append(trail, [*entries, entries[0]])
    assert await trail.fetchval("SELECT count(*) FROM sophia_core.audit_log") == 3
    assert (await verdict(trail))[1] is None


async def test_the_trail_refuses_updates_deletes_and_truncation(trail):
    async with trail.transaction():
        await audit.append(trail, [entry(1)])
    for statement in (
        "UPDATE sophia_core.audit_log SET actor = 'me'",
        "DELETE FROM sophia_core.audit_log",
        "TRUNCATE sophia_core.audit_log",
    ):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await trail.execute(statement)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("UPDATE sophia_core.audit_log SET details = '{\"version\": 99}' WHERE seq = 3", "content"),
        ("DELETE FROM sophia_core.audit_log WHERE seq = 3", "previous-hash"),
    ],
)
async def test_verify_finds_the_first_row_someone_changed_behind_the_trigger(trail, tamper, reason):
    async with trail.transaction():
        await audit.append(trail, [entry(n) for n in range(6)])
    await trail.execute("ALTER TABLE sophia_core.audit_log DISABLE TRIGGER audit_log_append_only")
    await trail.execute(tamper)
    checked, broken = await verdict(trail)
    assert checked == 2
    assert broken is not None
    assert reason in broken.reason
    assert broken.seq in (3, 4)


async def test_admin_actions_are_written_for_the_audit_trail_in_their_own_transaction(trail):
    from sophia.database import keys, views

    key, _ = await keys.create(trail, "ops", "read", actor="cli")
    assert await keys.revoke(trail, key.prefix, actor="key/abcd1234")
    await views.refresh_active_deals(trail, actor="key/abcd1234")
    rows = await trail.fetch(
        "SELECT key, payload FROM sophia_core.outbox WHERE topic = 'audit-logs' ORDER BY id"
    )
    assert [(row["key"], row["payload"]["action"], row["payload"]["actor"]) for row in rows] == [
        (f"key/{key.prefix}", "key.created", "cli"),
        (f"key/{key.prefix}", "key.revoked", "key/abcd1234"),
        ("view/active_deals_mv", "view.refreshed", "key/abcd1234"),
    ]
    assert rows[0]["payload"]["details"] == {"name": "ops", "scope": "read"}
    assert rows[0]["payload"]["target"] == f"key/{key.prefix}"
    assert "at" in rows[0]["payload"]


async def test_appending_nothing_adds_nothing_and_takes_no_lock(trail):
    async with trail.transaction():
        assert await audit.append(trail, []) == 0
        locks = await trail.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
    assert locks == 0
    assert await trail.fetchval("SELECT count(*) FROM sophia_core.audit_log") == 0
