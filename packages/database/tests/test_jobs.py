"""Background jobs' rows: an idempotency key names one job, even when the job it named is deleted
(the retention sweep) between the two statements of `enqueue`."""

from __future__ import annotations

import uuid
from typing import Any

from sophia.database import jobs


class SweptAfterTheInsert:
    """A real connection; right after `enqueue`'s INSERT finds the key taken, another connection
    deletes that job, as the retention sweep may do between the two statements."""

    def __init__(self, connection: Any, sweeper: Any) -> None:
        self.connection, self.sweeper, self.swept = connection, sweeper, False

    async def fetchrow(self, query: str, *args: Any) -> Any:
        row = await self.connection.fetchrow(query, *args)
        if query.lstrip().startswith("INSERT") and row is None and not self.swept:
            self.swept = True
            await self.sweeper.execute("DELETE FROM sophia_core.jobs WHERE idempotency_key = $1", args[2])
        return row


async def test_a_key_whose_job_is_deleted_meanwhile_gets_a_new_job(database):
    key = f"swept-{uuid.uuid4().hex}"
    async with database.connection() as connection, database.connection() as sweeper:
        first, created = await jobs.enqueue(connection, "reprocess_records", {"kind": "deal"}, key)
        assert created
        again, created = await jobs.enqueue(
            SweptAfterTheInsert(connection, sweeper), "reprocess_records", {}, key
        )
        rows = await connection.fetch("SELECT id FROM sophia_core.jobs WHERE idempotency_key = $1", key)
    assert created  # the old job was gone: a new one, not an error and not None
    assert again.id != first.id
    assert [row["id"] for row in rows] == [again.id]
