"""kill -9 of the workers process mid-stream: restarted, every accepted event is stored exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest

from sophia.core.events import Envelope
from sophia.database import Database
from sophia.database.migrations import migrate
from sophia.events.connection import NatsConnection
from sophia.events.publisher import EventPublisher
from sophia.events.streams import stream_specs

pytestmark = pytest.mark.chaos

EVENTS = 5_000


def start_workers(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sophia.workers"],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def stored(database: Database, ids: list[UUID]) -> tuple[int, int]:
    async with database.connection() as connection:
        row = await connection.fetchrow(
            "SELECT count(*), count(DISTINCT id) FROM sophia_core.events WHERE id = ANY($1::uuid[])", ids
        )
    return row[0], row[1]


async def test_a_processor_killed_mid_stream_and_restarted_stores_every_event_once(
    settings, own_streams, blank_database, tmp_path
):
    url = await blank_database()
    own = own_streams.model_copy(update={"database_url": url})
    env = {
        "SOPHIA_DATABASE_URL": url,
        "SOPHIA_REDIS_URL": settings.redis_url,
        "SOPHIA_NATS_URL": settings.nats_url,
        "SOPHIA_EVENTS_STREAM_PREFIX": own.events_stream_prefix,
        "SOPHIA_CACHE_KEY_PREFIX": settings.cache_key_prefix,
        "SOPHIA_DATA_DIR": str(tmp_path),
        "SOPHIA_LOG_JSON": "false",
        "SOPHIA_EVENTS_SINK_BATCH": "50",  # many batches, so the kill lands mid-stream
    }
    log = tmp_path / "workers.log"
    workers = None
    async with Database(own) as database, NatsConnection(settings.nats_url) as nats:
        async with database.connection() as connection:
            await migrate(connection)
        try:
            publisher = EventPublisher(nats, stream_specs(own))
            batch = [
                Envelope.new("user.event", f"u-{n % 97}", {"name": "deal.viewed", "n": n}, source="chaos")
                for n in range(EVENTS)
            ]
            started = asyncio.get_running_loop().time()
            for start in range(0, EVENTS, 50):  # small batches: many messages (a batch packs a subject's)
                await publisher.publish(batch[start : start + 50])  # accepted: JetStream acknowledged
            print(f"published in {asyncio.get_running_loop().time() - started:.2f}s")
            ids = [UUID(envelope.id) for envelope in batch]

            workers = start_workers(env, log)
            async with asyncio.timeout(60):
                while (await stored(database, ids))[0] < EVENTS // 10:
                    await asyncio.sleep(0.01)
            print(f"killed at {asyncio.get_running_loop().time() - started:.2f}s")
            os.killpg(workers.pid, signal.SIGKILL)  # mid-stream: batches in the sink, acks unsent
            workers.wait()
            partial = (await stored(database, ids))[0]
            assert partial < EVENTS, "the processor finished before it could be killed"

            workers = start_workers(env, log)
            async with asyncio.timeout(90):
                while (await stored(database, ids))[0] < EVENTS:
                    await asyncio.sleep(0.05)
            print(f"all stored at {asyncio.get_running_loop().time() - started:.2f}s")
            assert await stored(database, ids) == (EVENTS, EVENTS)
        except BaseException:
            print(log.read_text(errors="replace")[-5000:])
            raise
        finally:
            if workers is not None and workers.poll() is None:
                os.killpg(workers.pid, signal.SIGTERM)
                try:
                    workers.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(workers.pid, signal.SIGKILL)
                    workers.wait()
