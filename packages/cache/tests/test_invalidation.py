"""Invalidation messages: their encoding, and a listener that survives what it cannot apply."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from waiting import eventually

from sophia.cache.invalidation import Invalidation, InvalidationListener


def test_an_invalidation_round_trips_and_anything_else_decodes_to_none() -> None:
    sent = Invalidation("process-1", keys=("record:1",), tags=("lists",), epoch=3)
    assert Invalidation.decode(sent.encode()) == sent
    for garbage in (b"not json", b"[1, 2]", b'{"origin": "p"}', b'{"origin": "p", "keys": 1, "tags": []}'):
        assert Invalidation.decode(garbage) is None, garbage


class Recorder:
    """An `apply` that records what it is given and fails on the invalidations it is told to."""

    def __init__(self, failing_origin: str = "") -> None:
        self.failing_origin = failing_origin
        self.applied: list[Invalidation] = []

    def __call__(self, invalidation: Invalidation) -> None:
        if invalidation.origin == self.failing_origin:
            raise RuntimeError("cannot apply this one")
        self.applied.append(invalidation)


async def nothing_missed(after_gap: bool) -> None:
    pass


@pytest.fixture
def channel() -> str:
    return f"test:{uuid.uuid4().hex}:invalidate"


@pytest.fixture
async def listening(
    redis_client: redis.Redis, channel: str
) -> AsyncIterator[tuple[InvalidationListener, Recorder]]:
    recorder = Recorder(failing_origin="poison")
    listener = InvalidationListener(redis_client, (channel,), recorder, nothing_missed)
    task = asyncio.create_task(listener.run())
    await asyncio.wait_for(listener.subscribed.wait(), 2)
    yield listener, recorder
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_listener_skips_messages_that_are_no_invalidation_and_applies_the_next(
    listening: tuple[InvalidationListener, Recorder], redis_client: redis.Redis, channel: str
) -> None:
    listener, recorder = listening
    await redis_client.publish(channel, b"garbage from an older release")
    await redis_client.publish(channel, Invalidation("other", keys=("k",)).encode())
    await eventually(lambda: recorder.applied == [Invalidation("other", keys=("k",))])
    assert listener.subscribed.is_set()


async def test_an_invalidation_that_fails_to_apply_does_not_end_the_subscription(
    listening: tuple[InvalidationListener, Recorder], redis_client: redis.Redis, channel: str
) -> None:
    listener, recorder = listening
    await redis_client.publish(channel, Invalidation("poison", keys=("a",)).encode())
    await redis_client.publish(channel, Invalidation("other", tags=("t",)).encode())
    await eventually(lambda: recorder.applied == [Invalidation("other", tags=("t",))])
    assert listener.subscribed.is_set()
    assert listener.reconnects == 0


async def test_a_server_that_accepts_but_never_answers_is_no_subscription() -> None:
    """redis-py's subscribe only sends the command: a Redis shutting down can still accept the
    connection. Until every channel is confirmed the listener is not subscribed, and says so."""
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
    gaps: list[bool] = []

    async def record_gap(after_gap: bool) -> None:
        gaps.append(after_gap)

    # the server never confirms: any confirmation timeout shows it, and a short one retries sooner
    listener = InvalidationListener(client, ("a", "b"), Recorder(), record_gap, confirm_timeout_s=0.05)
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.tried.wait(), 2)
        await eventually(lambda: len(connections) >= 2)  # it tried again
        assert not listener.subscribed.is_set()
        assert gaps == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()
        await client.aclose()


async def test_a_subscription_redis_py_renews_by_itself_is_reported_as_a_gap(
    redis_client: redis.Redis, channel: str
) -> None:
    """redis-py reconnects a dropped pub/sub connection and subscribes again on its own: messages
    published in between are lost, so the listener must count it as a gap (and its owner drop what
    they might have invalidated), not carry on as if nothing happened."""
    gaps: list[bool] = []

    async def record_gap(after_gap: bool) -> None:
        gaps.append(after_gap)

    name = f"listener-{uuid.uuid4().hex[:12]}"  # the session's Valkey is shared: kill only this one
    where = redis_client.connection_pool.connection_kwargs
    client = redis.Redis(
        host=where["host"], port=where["port"], password=where.get("password"), client_name=name
    )
    listener = InvalidationListener(client, (channel,), Recorder(), record_gap)
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.subscribed.wait(), 2)
        ids = [entry["id"] for entry in await redis_client.client_list() if entry.get("name") == name]
        assert ids
        for client_id in ids:
            await redis_client.client_kill_filter(_id=client_id)
        await eventually(lambda: gaps == [False, True] and listener.subscribed.is_set(), timeout_s=5)
        assert listener.reconnects == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
