"""The workers process as `sophia up` runs it: events and catalog writes flow to their sinks."""

from __future__ import annotations

import asyncio
import uuid

from app_clients import app_client

from sophia.database import Database, keys
from sophia.database.migrations import migrate
from sophia.workers.__main__ import run_workers


async def test_events_reach_postgres_and_catalog_writes_reach_the_audit_trail(own_streams, blank_database):
    url = await blank_database()
    own = own_streams.model_copy(update={"database_url": url, "outbox_poll_s": 0.2})
    async with Database(own) as database:
        async with database.connection() as connection:
            await migrate(connection)
            _, secret = await keys.create(connection, "workers-test", "admin")
        stop = asyncio.Event()
        workers = asyncio.create_task(run_workers(own, stop))
        try:
            async with app_client(own, secret) as client:
                event = {"type": "user.event", "key": "u-1", "payload": {"name": "deal.viewed"}}
                accepted = await client.post("/api/v1/events", json=[event])
                assert accepted.status_code == 202, accepted.text
                event_id = accepted.json()["ids"][0]
                written = await client.put("/api/v1/records/wsrc/deal/1", json={"data": {"v": 1}})
                assert written.status_code == 201
            async with asyncio.timeout(20), database.connection() as connection:
                while not await connection.fetchval(
                    "SELECT count(*) FROM sophia_core.events WHERE id = $1", uuid.UUID(event_id)
                ):
                    await asyncio.sleep(0.05)
                while not await connection.fetchval(
                    "SELECT count(*) FROM sophia_core.audit_log WHERE target = 'wsrc/deal/1'"
                ):
                    await asyncio.sleep(0.05)
                while not await connection.fetchval(  # the admin action: another stream, its own consumer
                    "SELECT count(*) FROM sophia_core.audit_log WHERE action = 'key.created'"
                ):
                    await asyncio.sleep(0.05)
                actions = await connection.fetch("SELECT action FROM sophia_core.audit_log ORDER BY seq")
            assert "key.created" in {row[0] for row in actions}  # the admin action, relayed and audited
        finally:
            stop.set()
            await asyncio.wait_for(workers, 15)
