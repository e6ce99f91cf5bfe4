"""EventPublisher against real JetStream: all-or-nothing batches in order, resends dropped one by
one, and one ack per event where a stream takes no atomic batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from sophia.core.errors import Invalid, Unavailable
from sophia.core.events import Envelope
from sophia.engines.nats import EmbeddedNats
from sophia.events.codec import decode, encode
from sophia.events.connection import NatsConnection
from sophia.events.publisher import FULL_RETRY_AFTER_S, PUBLISH_CHUNK, EventPublisher, PipelinedAcks
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


async def test_a_refusal_of_one_acked_event_fails_the_batch_at_once_saying_why(own_streams):
    async with NatsConnection(own_streams.nats_url, timeout_s=30) as nats:  # a hang would show as a timeout
        publisher = EventPublisher(nats, stream_specs(own_streams), info_ttl_s=0)
        await publisher.publish(events(1))  # creates the streams
        js = await nats.jetstream()
        spec = publisher.streams["user-events"]
        await js.update_stream(replace(spec.config(), allow_atomic=False, max_msgs=3))  # full at 3
        with pytest.raises(Unavailable, match=r"JetStream refused the events \(maximum messages exceeded\)"):
            await publisher.publish(events(5))
        assert len(await stored(publisher)) == 3  # what fitted is kept: a resend drops it as duplicates


async def test_an_event_type_no_stream_takes_is_invalid_and_nothing_is_sent(publisher):
    unknown = Envelope.new("user.teleported", "user-1", {}, source="test")
    with pytest.raises(Invalid, match=r"No stream takes events of type 'user\.teleported'"):
        await publisher.publish([*events(2), unknown])
    js = await publisher.nats.jetstream()
    assert (await js.stream_info(publisher.streams["user-events"].name)).state.messages == 0


async def test_a_nearly_full_stream_refuses_the_whole_batch_with_retry_after(publisher):
    await publisher.publish(events(3))
    publisher.refuse_at = 1e-9  # whatever it holds now is "nearly full"
    with pytest.raises(Unavailable, match=r"user-events stream is \d+% full") as raised:
        await publisher.publish(events(5))
    assert raised.value.retry_after_s == FULL_RETRY_AFTER_S
    assert len(await stored(publisher)) == 3


async def test_a_stream_deleted_under_a_publisher_fails_one_batch_and_is_made_again(own_streams):
    async with NatsConnection(own_streams.nats_url) as nats:
        publisher = EventPublisher(nats, stream_specs(own_streams), info_ttl_s=60)  # trusts its checks
        await publisher.publish(events(1))  # creates the streams
        js = await nats.jetstream()
        spec = publisher.streams["user-events"]
        await js.update_stream(replace(spec.config(), allow_atomic=False))
        publisher.info_ttl_s = 0
        await publisher.publish(events(2))  # learns the stream takes no atomic batches
        publisher.info_ttl_s = 60
        await publisher.publish(events(2))
        assert len(await stored(publisher)) == 5
        await js.delete_stream(spec.name)  # an operator removes it
        with pytest.raises(Unavailable, match="No stream took the events") as raised:
            await publisher.publish(events(2))
        assert raised.value.retry_after_s == 1
        await publisher.publish(events(2))  # the stream is made again, and takes them
        assert len(await stored(publisher)) == 2


@pytest.mark.chaos  # stops a NATS server of its own
async def test_publishing_while_nats_is_away_is_unavailable(tmp_path, own_streams):
    server = EmbeddedNats(tmp_path)
    url = await server.start()
    try:
        async with NatsConnection(url, timeout_s=0.2) as nats:
            publisher = EventPublisher(nats, stream_specs(own_streams), info_ttl_s=0)
            await publisher.publish(events(1))
            await server.stop()
            with pytest.raises(Unavailable, match="NATS is unreachable") as raised:
                await publisher.publish(events(1))
            assert raised.value.retry_after_s == 2
    finally:
        await server.stop()


async def test_an_ack_that_arrives_after_its_wait_was_given_up_is_ignored(publisher):
    await publisher.publish(events(1))  # creates the streams
    pipeline = await PipelinedAcks.subscribe(publisher.nats.client)
    spec = publisher.streams["user-events"]
    late, next_one = events(2)
    abandoned = await pipeline.publish(
        spec.subject(late.key, late.type), encode(late), {"Nats-Msg-Id": late.id}
    )
    abandoned.cancel()  # its deadline passed
    kept = await pipeline.publish(
        spec.subject(next_one.key, next_one.type), encode(next_one), {"Nats-Msg-Id": next_one.id}
    )
    await kept  # acks come in order: the abandoned one's reply was handled first, and harmed nothing
    assert abandoned.cancelled()
    assert [envelope.id for envelope, _ in await stored(publisher)][1:] == [late.id, next_one.id]
