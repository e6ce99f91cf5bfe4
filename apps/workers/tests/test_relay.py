"""The outbox relay against real PostgreSQL and JetStream: every catalog event once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from nats.js.errors import NotFoundError
from waiting import eventually

from sophia.core.events import Envelope
from sophia.core.records import RecordKey
from sophia.database import Database, catalog, outbox
from sophia.events.codec import decode
from sophia.events.connection import NatsConnection
from sophia.events.streams import StreamSpec, ensure_streams, stream_specs
from sophia.workers import relay as relay_module
from sophia.workers.relay import OutboxRelay


@pytest.fixture
async def database(settings, migrated_database) -> AsyncIterator[Database]:
    """A catalog of this test's own: the relay drains a whole outbox, others' backlogs included."""
    async with Database(settings, dsn=await migrated_database()) as own:
        yield own


@pytest.fixture
async def nats(settings) -> AsyncIterator[NatsConnection]:
    async with NatsConnection(settings.nats_url) as connection:
        yield connection


@pytest.fixture
def streams(own_streams) -> dict[str, StreamSpec]:
    return stream_specs(own_streams)


async def drain(relay: OutboxRelay) -> int:
    total = 0
    while published := await relay.relay_once():
        total += published
    return total


async def write(database, source: str, count: int) -> list[str]:
    keys = []
    async with database.connection() as connection:
        for number in range(count):
            key = RecordKey(source, "deal", f"d-{number}")
            await catalog.upsert(connection, key, {"n": number}, None, if_match=None, create_only=False)
            keys.append(f"{source}/deal/d-{number}")
    return keys


async def stream_events(nats: NatsConnection, spec: StreamSpec) -> list[tuple[str, Envelope]]:
    """Every message in the stream: its Nats-Msg-Id and its envelope, in stream order."""
    js = await nats.jetstream()
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:  # made on the relay's first event
        return []
    if info.state.messages == 0:
        return []
    found = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(spec.name, sequence)
        found.append((message.headers["Nats-Msg-Id"], decode(message.data)))
    return found


async def test_every_write_reaches_jetstream_once_and_leaves_the_outbox(database, nats, streams):
    source = f"relay{uuid.uuid4().hex[:8]}"
    keys = await write(database, source, 3)
    async with OutboxRelay(database, nats, streams, batch=2) as relay:
        assert await drain(relay) >= 3

    ours = [(msg_id, env) for msg_id, env in await stream_events(nats, streams["records"]) if env.key in keys]
    assert [env.key for _, env in ours] == keys  # in write order
    assert all(env.type == "record.upserted" and env.source == "catalog" for _, env in ours)
    assert len({msg_id for msg_id, _ in ours}) == 3
    async with database.connection() as connection:
        left = await connection.fetchval(
            "SELECT count(*) FROM sophia_core.outbox WHERE key LIKE $1", f"{source}/%"
        )
    assert left == 0


async def test_events_of_one_key_share_a_subject(database, nats, streams):
    source = f"relay{uuid.uuid4().hex[:8]}"
    async with database.connection() as connection:
        key = RecordKey(source, "deal", "same")
        for number in range(3):
            await catalog.upsert(connection, key, {"n": number}, None, if_match=None, create_only=False)
    async with OutboxRelay(database, nats, streams) as relay:
        await drain(relay)
    js = await nats.jetstream()
    spec = streams["records"]
    subject = spec.subject(f"{source}/deal/same", "record.upserted")
    info = await js.stream_info(spec.name, subjects_filter=subject)
    assert info.state.subjects == {subject: 3}


async def test_a_relay_dying_after_publishing_but_before_deleting_sends_nothing_twice(
    database, nats, streams
):
    source = f"relay{uuid.uuid4().hex[:8]}"
    keys = await write(database, source, 4)
    async with OutboxRelay(database, nats, streams) as relay:
        js = await nats.jetstream()
        async with database.connection() as connection:
            transaction = connection.transaction()
            await transaction.start()
            claimed = await outbox.claim(connection, 1000)
            await ensure_streams(js, streams.values())
            for event in claimed:
                await relay._publish(js, event)  # acknowledged by JetStream...
            await transaction.rollback()  # ...and then the relay died: the rows are still there
        await drain(relay)

    ours = [env.key for _, env in await stream_events(nats, streams["records"]) if env.key in keys]
    assert ours == keys


async def test_two_relays_share_a_backlog_without_duplicates(database, nats, streams):
    source = f"relay{uuid.uuid4().hex[:8]}"
    keys = set(await write(database, source, 300))
    async with (
        OutboxRelay(database, nats, streams, batch=25) as first,
        OutboxRelay(database, nats, streams, batch=25) as second,
    ):
        counts = await asyncio.gather(drain(first), drain(second))
    assert min(counts) > 0  # both took part
    ours = [msg_id for msg_id, env in await stream_events(nats, streams["records"]) if env.key in keys]
    assert len(ours) == 300
    assert len(set(ours)) == 300


async def test_a_notify_wakes_the_relay_long_before_its_poll(database, nats, streams):
    source = f"relay{uuid.uuid4().hex[:8]}"
    async with OutboxRelay(database, nats, streams, poll_s=3600) as relay:
        await drain(relay)
        stop = asyncio.Event()
        running = asyncio.create_task(relay.run(stop))
        keys = await write(database, source, 1)
        async with asyncio.timeout(10):
            while not [e for _, e in await stream_events(nats, streams["records"]) if e.key in keys]:
                await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(running, 5)


@contextlib.asynccontextmanager
async def refusing_new_connections(database: Database) -> AsyncIterator[None]:
    """PostgreSQL turns away new connections to the database; the pool's open ones carry on."""
    name = database.dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(os.environ["SOPHIA_DATABASE_URL"])
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


async def test_a_relay_that_cannot_listen_still_relays_and_drains_a_backlog_without_waiting(
    database, nats, streams, logs_of
):
    source = f"relay{uuid.uuid4().hex[:8]}"
    keys = await write(database, source, 5)
    stop = asyncio.Event()
    logs = logs_of(relay_module)
    async with (
        refusing_new_connections(database),
        OutboxRelay(database, nats, streams, batch=2, poll_s=3600) as relay,
    ):
        running = asyncio.create_task(relay.run(stop))  # no NOTIFY, a poll an hour away
        try:
            await eventually(lambda: relayed(nats, streams, keys))  # full batches, one after another
        finally:
            stop.set()
            await asyncio.wait_for(running, 5)
    listen_failures = logs.events("outbox_listen_failed")
    assert listen_failures  # at the start, then again after each round
    assert {failure["error"] for failure in listen_failures} == {"ObjectNotInPrerequisiteStateError"}


async def relayed(nats: NatsConnection, streams: dict[str, StreamSpec], keys: list[str]) -> bool:
    return [env.key for _, env in await stream_events(nats, streams["records"]) if env.key in keys] == keys
