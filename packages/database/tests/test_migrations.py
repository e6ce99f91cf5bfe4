import asyncio
import os
import sys

import asyncpg
import pytest

from sophia.database.migrations import MigrationMismatch, available, migrate


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


async def test_two_processes_migrating_at_once_both_succeed_and_apply_each_migration_once(blank_database):
    url = await blank_database()
    env = {**os.environ, "SOPHIA_DATABASE_URL": url}
    command = [sys.executable, "-m", "sophia.cli.main", "migrate"]
    processes = [
        await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        for _ in range(2)
    ]
    outputs = await asyncio.gather(*(process.communicate() for process in processes))
    assert [process.returncode for process in processes] == [0, 0], outputs
    connection = await asyncpg.connect(url)
    try:
        versions = await connection.fetch("SELECT version FROM sophia_core.schema_migrations")
    finally:
        await connection.close()
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
