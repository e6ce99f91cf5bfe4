import asyncio

import asyncpg
import pytest

from sophia.database.migrations import WHOLE_FILE_CHECKSUMS, Migration, MigrationMismatch, available, migrate


async def test_migrations_apply_once_and_a_second_run_changes_nothing(blank_database):
    connection = await asyncpg.connect(await blank_database())
    try:
        first = await migrate(connection)
        second = await migrate(connection)
        recorded = await connection.fetchval("SELECT count(*) FROM sophia_core.schema_migrations")
        tables = await connection.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'sophia_core'"
        )
    finally:
        await connection.close()
    assert [m.version for m in first] == [m.version for m in available()]
    assert second == []
    assert recorded == len(available())
    assert tables >= 4  # catalog, outbox, api_keys, schema_migrations


async def test_two_sessions_migrating_at_once_both_succeed_and_apply_each_migration_once(blank_database):
    """What two processes starting together do (`sophia migrate`, the API, the workers): each its own
    PostgreSQL session, both at once; the advisory lock serialises them."""
    url = await blank_database()
    first, second = await asyncio.gather(asyncpg.connect(url), asyncpg.connect(url))
    try:
        applied = await asyncio.gather(migrate(first), migrate(second))
        versions = await first.fetch("SELECT version FROM sophia_core.schema_migrations")
    finally:
        await asyncio.gather(first.close(), second.close())
    assert sorted(m.version for m in applied[0] + applied[1]) == [m.version for m in available()]  # once each
    assert sorted(row["version"] for row in versions) == [m.version for m in available()]


async def test_a_migration_edited_after_it_ran_is_refused(blank_database):
    connection = await asyncpg.connect(await blank_database())
    try:
        await migrate(connection)
        await connection.execute("UPDATE sophia_core.schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(MigrationMismatch, match="changed after it was applied"):
            await migrate(connection)
    finally:
        await connection.close()


async def test_ids_are_time_ordered_uuidv7(database):
    async with database.connection() as connection:
        first, second = (
            await connection.fetchval("SELECT sophia_core.new_id()"),
            await connection.fetchval("SELECT sophia_core.new_id()"),
        )
    assert first.version == 7
    assert first < second


def test_only_files_named_like_migrations_are_migrations(tmp_path, monkeypatch):
    from importlib import resources

    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "0002_second.sql").write_text("SELECT 2;")
    (tmp_path / "sql" / "0001_first.sql").write_text("SELECT 1;")
    (tmp_path / "sql" / "README.md").write_text("notes, not a migration")
    (tmp_path / "sql" / "0003_draft.sql.orig").write_text("SELECT 3;")
    monkeypatch.setattr(resources, "files", lambda package: tmp_path)
    found = available()
    assert [(migration.version, migration.name, migration.sql) for migration in found] == [
        (1, "first", "SELECT 1;"),
        (2, "second", "SELECT 2;"),
    ]


def test_a_checksum_covers_the_statements_not_the_comments():
    original = Migration(1, "catalog", "-- The plan's key.\nCREATE TABLE t (a int);\n")
    reworded = Migration(1, "catalog", "-- The warehouse key,\n\n-- reworded.\nCREATE TABLE t (a int);  \n")
    changed = Migration(1, "catalog", "-- The plan's key.\nCREATE TABLE t (a bigint);\n")
    assert original.checksum == reworded.checksum
    assert original.checksum != changed.checksum


@pytest.mark.parametrize("version", sorted(WHOLE_FILE_CHECKSUMS))
async def test_a_database_migrated_before_comments_were_reworded_is_accepted_and_its_checksum_renewed(
    blank_database, version
):
    connection = await asyncpg.connect(await blank_database())
    try:
        await migrate(connection)
        await connection.execute(
            "UPDATE sophia_core.schema_migrations SET checksum = $2 WHERE version = $1",
            version,
            WHOLE_FILE_CHECKSUMS[version],
        )
        assert await migrate(connection) == []
        renewed = await connection.fetchval(
            "SELECT checksum FROM sophia_core.schema_migrations WHERE version = $1", version
        )
    finally:
        await connection.close()
    assert renewed == next(m.checksum for m in available() if m.version == version)
