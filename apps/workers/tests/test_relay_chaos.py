"""The event backbone losing a NATS server: catalog writes keep landing, no accepted event is lost."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import nats
import pytest
from metrics import sample
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServiceUnavailableError

from sophia.core.events import Envelope
from sophia.core.records import RecordKey
from sophia.database import Database, catalog, outbox
from sophia.engines.nats import EmbeddedNats
from sophia.engines.nats_cluster import EmbeddedNatsCluster
from sophia.events.codec import decode_all, encode
from sophia.events.connection import NatsConnection
from sophia.events.streams import StreamSpec, ensure_streams, stream_specs
from sophia.shared.resilience import retry
from sophia.workers.metrics import RELAY_FAILURES
from sophia.workers.relay import OutboxRelay

T = TypeVar("T")

pytestmark = pytest.mark.chaos

PUBLISH_FAILURES = (NatsError, OSError, TimeoutError)


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.05)


async def write(database, source: str, numbers: range) -> list[str]:
    """One catalog upsert per number, each in its own transaction; the outbox keys written."""
    keys = []
    async with database.connection() as connection:
        for number in numbers:
            key = RecordKey(source, "deal", f"d-{number}")
            await catalog.upsert(connection, key, {"n": number}, None, if_match=None, create_only=False)
            keys.append(f"{source}/deal/d-{number}")
    return keys


async def waiting_in_outbox(database, source: str) -> int:
    async with database.connection() as connection:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM sophia_core.outbox WHERE key LIKE $1", f"{source}/%"
            )
        )


def relay_failures() -> float:
    samples = (sample for metric in RELAY_FAILURES.collect() for sample in metric.samples)
    return sum(sample.value for sample in samples if sample.name.endswith("_total"))


async def stream_messages(js: JetStreamContext, name: str) -> list[tuple[str, Envelope]]:
    """Every event in the stream, in stream order, with the Nats-Msg-Id of the message carrying it.

    Read right after a cluster lost a server, a read can meet JetStream still settling (503,
    "temporarily unavailable"): each read is tried again for a few seconds."""

    def settled(read: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return retry(read, attempts=12, base_s=0.1, max_s=2.0, retry_on=(ServiceUnavailableError,))

    try:
        info = await settled(lambda: js.stream_info(name))
    except NotFoundError:
        return []
    if info.state.messages == 0:
        return []
    found = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await settled(functools.partial(js.get_msg, name, sequence))
        found += [(message.headers["Nats-Msg-Id"], envelope) for envelope in decode_all(message.data)]
    return found


async def test_catalog_writes_succeed_while_nats_is_stopped_and_each_is_published_once_after(
    tmp_path, settings, migrated_database
):
    url = await migrated_database()  # an outbox of its own: other tests' backlogs would swamp the reads
    async with Database(settings, dsn=url) as database:
        await _outage(tmp_path, settings, database)


async def _outage(tmp_path, settings, database) -> None:
    server = EmbeddedNats(tmp_path)
    url = await server.start()
    specs = stream_specs(settings)  # on a server of this test's own: no prefix needed
    records = specs["records"].name
    source = f"chaos{uuid.uuid4().hex[:8]}"
    try:
        async with (
            NatsConnection(url, timeout_s=0.5) as connection,
            OutboxRelay(database, connection, specs, poll_s=0.2, backoff_max_s=0.5) as relay,
        ):
            stop = asyncio.Event()
            running = asyncio.create_task(relay.run(stop))
            try:
                await relay_through_an_outage(server, connection, database, records, source)
            finally:
                stop.set()
                await asyncio.wait_for(running, 10)
    finally:
        await server.stop()


async def relay_through_an_outage(
    server: EmbeddedNats, connection: NatsConnection, database, records: str, source: str
) -> None:
    """Write while NATS is stopped (the relay failing meanwhile), start it again, check the stream."""

    async def published(keys: list[str]) -> bool:
        js = await connection.jetstream()
        found = {envelope.key for _, envelope in await stream_messages(js, records)}
        return found >= set(keys)

    warm_up = await write(database, source, range(1))
    await wait_for(lambda: published(warm_up))  # the relay holds a live connection now

    url = server.url
    await server.stop()
    failures_before = relay_failures()
    keys = await write(database, source, range(1, 51))  # each commits: no write waits on NATS

    async def relay_failed() -> bool:
        return relay_failures() > failures_before

    await wait_for(relay_failed)  # it tried them: they sit in nats-py's reconnect buffer too
    async with database.connection() as db_connection:
        assert (await outbox.depth(db_connection)).events >= 50

    async def depth_reported() -> bool:  # the metric says so too (it is what operators watch)
        return sample("sophia_outbox_depth") >= 50

    await wait_for(depth_reported)
    assert await waiting_in_outbox(database, source) == 50

    assert await server.start() == url  # the same port: the client reconnects by itself

    async def drained() -> bool:
        return await waiting_in_outbox(database, source) == 0 and await published(keys)

    await wait_for(drained)
    js = await connection.jetstream()
    written = warm_up + keys
    ours = [(msg_id, env) for msg_id, env in await stream_messages(js, records) if env.key in written]
    assert sorted(env.key for _, env in ours) == sorted(written)  # each key once
    assert len({env.id for _, env in ours}) == len(written)


async def test_a_server_killed_under_load_loses_no_accepted_event_of_an_r3_stream(tmp_path, settings):
    cluster = EmbeddedNatsCluster(tmp_path, size=3)
    urls = await cluster.start()
    client = None
    try:
        # NatsConnection takes one URL; a client given every server fails over the way it would.
        client = await nats.connect(servers=urls, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
        js = client.jetstream(timeout=1.0)
        specs = stream_specs(settings.model_copy(update={"events_replicas": 3}))
        await ensure_streams(js, specs.values())
        spec = specs["user-events"]
        leader = (await js.stream_info(spec.name)).cluster.leader
        events = [Envelope.new("user.event", f"user-{n % 50}", {"n": n}, source="chaos") for n in range(2000)]
        outcome = await publish_while_killing(cluster, js, spec, events, kill=node_index(cluster, leader))

        stored = await stream_messages(js, spec.name)
        copies = collections.Counter(msg_id for msg_id, _ in stored)
        assert outcome.retried > 0  # the kill did cut publishes off: a failover happened
        assert outcome.accepted_after_kill > 0
        assert {msg_id for msg_id in outcome.accepted if copies[msg_id] != 1} == set()  # none lost
        assert max(copies.values()) == 1  # a retried publish was never stored twice
        assert all(msg_id == envelope.id for msg_id, envelope in stored)
    finally:
        if client is not None:
            with contextlib.suppress(NatsError, TimeoutError):
                await client.close()
        await cluster.stop()


@dataclass
class Outcome:
    """What the publishers saw: the ids JetStream acknowledged, and how often a publish was retried."""

    accepted: list[str] = field(default_factory=list)
    accepted_after_kill: int = 0
    retried: int = 0
    killed: bool = False


def node_index(cluster: EmbeddedNatsCluster, name: str | None) -> int:
    return [node.name for node in cluster.nodes].index(name)


async def publish_while_killing(
    cluster: EmbeddedNatsCluster,
    js: JetStreamContext,
    spec: StreamSpec,
    events: list[Envelope],
    *,
    kill: int,
    publishers: int = 20,
    deadline_s: float = 20.0,
) -> Outcome:
    """Publish `events` from `publishers` concurrent tasks; SIGKILL server `kill` half-way. A failed
    publish is retried with the same Nats-Msg-Id until `deadline_s`, as a client would."""
    outcome = Outcome()
    queue: asyncio.Queue[Envelope] = asyncio.Queue()
    for envelope in events:
        queue.put_nowait(envelope)
    half_way = asyncio.Event()
    deadline = asyncio.get_running_loop().time() + deadline_s

    async def publish_once(envelope: Envelope, tries: Iterator[int]) -> None:
        if next(tries):
            outcome.retried += 1
        await js.publish(
            spec.subject(envelope.key, envelope.type),
            encode(envelope),
            stream=spec.name,
            headers={"Nats-Msg-Id": envelope.id},
        )

    async def publisher() -> None:
        while not queue.empty():
            envelope = queue.get_nowait()
            try:
                async with asyncio.timeout_at(deadline):
                    await retry(
                        functools.partial(publish_once, envelope, itertools.count()),
                        attempts=1000,
                        base_s=0.05,
                        max_s=0.5,
                        retry_on=PUBLISH_FAILURES,
                        name="publish",
                    )
            except PUBLISH_FAILURES:
                continue  # never acknowledged: not accepted, so not owed
            outcome.accepted.append(envelope.id)
            if outcome.killed:
                outcome.accepted_after_kill += 1
            if len(outcome.accepted) >= len(events) // 2:
                half_way.set()

    async def killer() -> None:
        await half_way.wait()
        await cluster.stop_node(kill, kill=True)
        outcome.killed = True

    killing = asyncio.create_task(killer())
    try:
        await asyncio.gather(*(publisher() for _ in range(publishers)))
    finally:
        if not killing.done():
            killing.cancel()
        await asyncio.gather(killing, return_exceptions=True)
    assert outcome.killed, "the server was never killed"
    return outcome
