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

from sophia.core.errors import Unavailable
from sophia.core.events import Envelope
from sophia.core.records import RecordKey
from sophia.database import Database, catalog, outbox
from sophia.events.codec import decode_all
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
    """Every event in the stream, in stream order, with the Nats-Msg-Id of the message carrying it."""
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
        found += [(message.headers["Nats-Msg-Id"], envelope) for envelope in decode_all(message.data)]
    return found


async def test_every_write_reaches_jetstream_once_and_leaves_the_outbox(database, nats, streams):
    source = f"relay{uuid.uuid4().hex[:8]}"
    keys = await write(database, source, 3)
    async with OutboxRelay(database, nats, streams, batch=2) as relay:
        assert await drain(relay) >= 3

    ours = [(msg_id, env) for msg_id, env in await stream_events(nats, streams["records"]) if env.key in keys]
    assert [env.key for _, env in ours] == keys  # in write order
    assert all(env.type == "record.upserted" and env.source == "catalog" for _, env in ours)
    assert len({env.id for _, env in ours}) == 3
    async with database.connection() as connection:
        left = await connection.fetchval(
            "SELECT count(*) FROM sophia_core.outbox WHERE key LIKE $1", f"{source}/%"
        )
    assert left == 0


async def test_a_batch_goes_out_as_plain_publishes_not_as_an_atomic_batch(database, nats, streams):
    """The relay settles by message id (what was not acknowledged goes again, and JetStream drops
    a copy): an atomic batch's commit would cost JetStream more for nothing."""
    source = f"relay{uuid.uuid4().hex[:8]}"
    keys = await write(database, source, 6)  # six keys: several subjects, several messages
    async with OutboxRelay(database, nats, streams) as relay:
        await drain(relay)
    js = await nats.jetstream()
    spec = streams["records"]
    subjects = {spec.subject(key, "record.upserted") for key in keys}
    assert len(subjects) > 1
    headers = [(await js.get_last_msg(spec.name, subject)).headers or {} for subject in subjects]
    assert all("Nats-Msg-Id" in each and "Nats-Batch-Id" not in each for each in headers)


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
    assert info.state.subjects == {subject: 1}  # one message carries the three, in order
    ours = [env for _, env in await stream_events(nats, spec) if env.key == f"{source}/deal/same"]
    assert [env.payload["version"] for env in ours] == [1, 2, 3]


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
            envelopes = [relay_module.envelope_of(event) for event in claimed]
            await relay.publisher.publish_to("records", envelopes)  # acknowledged by JetStream...
            await transaction.rollback()  # ...and then the relay died: the rows are still there
        await drain(relay)

    ours = [env.key for _, env in await stream_events(nats, streams["records"]) if env.key in keys]
    assert sorted(ours) == sorted(keys)  # each once (order holds per key: these are four keys)


async def test_a_publish_that_failed_goes_again_with_the_same_rows_so_a_late_copy_is_dropped(
    database, nats, streams, monkeypatch
):
    """A publish can fail and still reach JetStream (nats-py flushes its reconnect buffer once NATS
    is back). The retry must pack exactly the same events, or the copy would not be a duplicate."""
    source = f"relay{uuid.uuid4().hex[:8]}"
    key = RecordKey(source, "deal", "same")

    async def write_versions(count: int) -> None:
        async with database.connection() as connection:
            for number in range(count):
                await catalog.upsert(connection, key, {"n": number}, None, if_match=None, create_only=False)

    await write_versions(3)
    async with OutboxRelay(database, nats, streams) as relay:
        real = relay.publisher.publish_to

        async def reached_but_failed(stream, envelopes) -> None:
            await real(stream, envelopes)  # JetStream took it...
            raise Unavailable("NATS is unreachable: TimeoutError")  # ...and the relay never heard

        monkeypatch.setattr(relay.publisher, "publish_to", reached_but_failed)
        with pytest.raises(Unavailable):
            await relay.relay_once()
        monkeypatch.setattr(relay.publisher, "publish_to", real)
        await write_versions(2)  # newer rows of the same subject, which must not join the retry
        await drain(relay)
    ours = [
        env for _, env in await stream_events(nats, streams["records"]) if env.key == f"{source}/deal/same"
    ]
    assert [env.payload["version"] for env in ours] == [1, 2, 3, 4, 5]


async def test_two_relays_share_a_backlog_without_duplicates(database, nats, streams):
    source = f"relay{uuid.uuid4().hex[:8]}"
    keys = set(await write(database, source, 300))
    async with (
        OutboxRelay(database, nats, streams, batch=25) as first,
        OutboxRelay(database, nats, streams, batch=25) as second,
    ):
        counts = await asyncio.gather(drain(first), drain(second))
    assert min(counts) > 0  # both took part
    ours = [env.id for _, env in await stream_events(nats, streams["records"]) if env.key in keys]
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


async def test_writes_closer_together_than_the_gathering_time_leave_together(database, nats, streams):
    """Three writes of one key 50 ms apart, each waking the relay: relayed at once, each would go in
    a message of its own. Woken, the relay waits out the gathering time since its last batch began,
    so they go in one batch or, if this test was slow to write the first, two: at most two messages."""
    source = f"relay{uuid.uuid4().hex[:8]}"
    spec = streams["records"]
    subject = spec.subject(f"{source}/deal/close", "record.upserted")
    js = await nats.jetstream()

    async def relayed() -> bool:  # what the relay publishes it deletes in the same transaction
        async with database.connection() as connection:
            left = "SELECT count(*) FROM sophia_core.outbox WHERE key LIKE $1"
            return await connection.fetchval(left, f"{source}/%") == 0

    # The writes take 0.1 s and a few ms: gathering 0.4 s leaves room for a loaded machine.
    async with OutboxRelay(database, nats, streams, poll_s=3600, gather_s=0.4) as relay:
        await drain(relay)
        stop = asyncio.Event()
        running = asyncio.create_task(relay.run(stop))
        async with database.connection() as connection:
            for number in range(3):  # each commits and notifies on its own, 50 ms apart
                key = RecordKey(source, "deal", "close")
                await catalog.upsert(connection, key, {"n": number}, None, if_match=None, create_only=False)
                await asyncio.sleep(0.05 if number < 2 else 0)  # a relay woken at once takes each alone
        await eventually(relayed)
        stop.set()
        await asyncio.wait_for(running, 5)
    info = await js.stream_info(spec.name, subjects_filter=subject)
    assert 1 <= info.state.subjects[subject] <= 2


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
