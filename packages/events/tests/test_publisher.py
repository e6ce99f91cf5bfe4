"""EventPublisher against real JetStream: all-or-nothing batches in order, resends dropped one by
one, and one ack per event where a stream takes no atomic batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from sophia.core.events import Envelope
from sophia.events.codec import decode
from sophia.events.connection import NatsConnection
from sophia.events.publisher import PUBLISH_CHUNK, EventPublisher
from sophia.events.streams import stream_specs


@pytest.fixture
async def publisher(own_streams) -> AsyncIterator[EventPublisher]:
    async with NatsConnection(own_streams.nats_url) as nats:
        yield EventPublisher(nats, stream_specs(own_streams), info_ttl_s=0)


def events(count: int, key: str = "user-1") -> list[Envelope]:
    return [Envelope.new("user.event", key, {"name": f"step-{n}"}, source="test") for n in range(count)]


async def stored(publisher: EventPublisher) -> list[tuple[Envelope, dict[str, str]]]:
    """The user-events stream's messages in stream order, each with its headers."""
    js = await publisher.nats.jetstream()
    name = publisher.streams["user-events"].name
    info = await js.stream_info(name)
    found = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(name, sequence)
        found.append((decode(message.data), dict(message.headers or {})))
    return found


async def test_a_batch_goes_in_all_or_nothing_chunks_that_keep_a_keys_order(publisher):
    sent = events(PUBLISH_CHUNK + 500)
    await publisher.publish(sent)
    kept = await stored(publisher)
    assert [envelope.id for envelope, _ in kept] == [envelope.id for envelope in sent]
    assert len({headers["Nats-Batch-Id"] for _, headers in kept}) == 2  # 1,000 + 500


async def test_a_resend_holding_stored_ids_is_sent_one_by_one_and_stores_only_the_new(publisher):
    first = events(10)
    await publisher.publish(first)
    again = [*first, *events(20, key="user-2")]  # a client resending, with more
    await publisher.publish(again)
    kept = await stored(publisher)
    assert [envelope.id for envelope, _ in kept] == [envelope.id for envelope in again]
    assert not any("Nats-Batch-Id" in headers for _, headers in kept[10:])


async def test_a_stream_without_atomic_batches_gets_one_ack_per_event(publisher):
    await publisher.publish(events(1))  # creates the streams
    js = await publisher.nats.jetstream()
    spec = publisher.streams["user-events"]
    await js.update_stream(replace(spec.config(), allow_atomic=False))  # as on nats-server < 2.12
    sent = events(30)
    await publisher.publish(sent)
    kept = await stored(publisher)
    assert [envelope.id for envelope, _ in kept[1:]] == [envelope.id for envelope in sent]
    assert not any("Nats-Batch-Id" in headers for _, headers in kept[1:])
