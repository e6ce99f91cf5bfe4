"""The one consumer loop: subscribe, consume, back off and subscribe again after a NATS failure."""

from __future__ import annotations

import asyncio

import pytest
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig

from sophia.events import consumer
from sophia.events.connection import NatsConnection
from sophia.events.consumer import ConsumerLoop
from sophia.events.streams import StreamSpec, ensure_streams


@pytest.fixture
async def nats(own_streams):
    async with NatsConnection(own_streams.nats_url) as connection:
        yield connection


async def test_failures_back_off_and_resubscribe_and_progress_starts_the_backoff_over(
    nats, own_streams, logs_of
):
    logs = logs_of(consumer)
    spec = StreamSpec(own_streams.events_stream_prefix + "loop", partitions=1)
    js = await nats.jetstream()
    await ensure_streams(js, [spec])
    await js.add_consumer(spec.name, ConsumerConfig(durable_name="loop", ack_policy=AckPolicy.EXPLICIT))
    failures_seen: list[str] = []
    loop = ConsumerLoop(
        nats, name="loop", reconnect_max_s=0.05, on_failure=lambda e: failures_seen.append(str(e))
    )
    stop = asyncio.Event()
    rounds = 0
    failures_at_start: list[int] = []

    async def subscribe():
        return await js.pull_subscribe_bind(durable="loop", stream=spec.name)

    async def consume(subscription) -> None:
        nonlocal rounds
        rounds += 1
        failures_at_start.append(loop.failures)
        if rounds == 3:
            loop.progressed()
        if rounds < 5:
            raise NatsError(f"refused {rounds}")
        stop.set()

    await asyncio.wait_for(loop.run(subscribe, consume, stop), 10)
    assert failures_seen == ["refused 1", "refused 2", "refused 3", "refused 4"]
    assert failures_at_start == [0, 1, 2, 1, 2]  # round 3 progressed, then failed: one since
    assert [event["consumer"] for event in logs.events("consumer_failed")] == ["loop"] * 4


async def test_a_stop_during_the_backoff_ends_the_loop_at_once(nats):
    loop = ConsumerLoop(nats, name="stopped", reconnect_max_s=60)
    loop.failures = 11  # the longest delay, up to a minute
    stop = asyncio.Event()

    async def subscribe():
        stop.set()  # stop arrives while the loop is about to wait
        raise TimeoutError("NATS did not answer")

    async def consume(subscription) -> None:
        raise AssertionError("never subscribed")

    await asyncio.wait_for(loop.run(subscribe, consume, stop), 2)
