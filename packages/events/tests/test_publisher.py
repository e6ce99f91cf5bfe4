"""EventPublisher against real JetStream: the events of a subject packed several to a message,
all-or-nothing batches in order, resends dropped, and one ack per message where a stream takes no
atomic batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from nats.js.errors import NotFoundError
from streams import stream_documents

from sophia.core.errors import Invalid, Unavailable
from sophia.core.events import Envelope
from sophia.engines.nats import EmbeddedNats
from sophia.events import publisher as publisher_module
from sophia.events.codec import PACK_BYTES, PACK_EVENTS, decode_all, encode
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
    """The user-events stream's events in stream order, each with its message's headers."""
    return [
        (envelope, headers) for _, envelopes, headers in await messages(publisher) for envelope in envelopes
    ]


async def messages(publisher: EventPublisher) -> list[tuple[str, list[Envelope], dict[str, str]]]:
    """The user-events stream's messages in stream order: subject, envelopes, headers. Read all at
    once, not one round trip after another: a chunked batch is 1,500 of them."""
    js = await publisher.nats.jetstream()
    name = publisher.streams["user-events"].name
    info = await js.stream_info(name)
    sequences = range(info.state.first_seq, info.state.last_seq + 1)
    read = await asyncio.gather(*(js.get_msg(name, sequence) for sequence in sequences))
    return [(message.subject, decode_all(message.data), dict(message.headers or {})) for message in read]


@pytest.fixture
def one_event_a_message(monkeypatch) -> None:
    """Messages of one event each, as before packing: for what concerns messages, not events."""
    monkeypatch.setattr(publisher_module, "PACK_EVENTS", 1)


async def test_the_events_of_a_subject_travel_together_in_order_and_a_resend_adds_nothing(publisher):
    sent = [*events(PACK_EVENTS + 10), *events(3, key="user-2")]
    await publisher.publish(sent)
    found = await messages(publisher)
    spec = publisher.streams["user-events"]
    for subject, envelopes, _ in found:
        assert {spec.subject(envelope.key, envelope.type) for envelope in envelopes} == {subject}
        assert len(envelopes) <= PACK_EVENTS
    assert len(found) in (2, 3)  # user-1's events in two messages; user-2's with them or alone
    kept = [envelope.id for _, envelopes, _ in found for envelope in envelopes]
    for key in ("user-1", "user-2"):  # a key's order holds
        assert [i for i in kept if i in {e.id for e in sent if e.key == key}] == [
            e.id for e in sent if e.key == key
        ]
    assert sorted(kept) == sorted(envelope.id for envelope in sent)
    await publisher.publish(sent)  # the client did not hear the answer and sends the same again
    assert len(await messages(publisher)) == len(found)


async def test_one_message_goes_as_a_plain_publish_and_more_as_an_atomic_batch(publisher):
    """An atomic batch of one message would cost JetStream a commit and its flush for nothing (the
    relay's usual batch under light load: NATS's CPU a write tripled)."""
    await publisher.publish(events(3))  # one subject: one message
    await publisher.publish([*events(2, key="user-1"), *events(2, key="user-2")])  # two subjects
    found = await messages(publisher)
    assert [len(envelopes) for _, envelopes, _ in found] == [3, 2, 2]
    assert "Nats-Batch-Id" not in found[0][2]
    assert found[1][2]["Nats-Batch-Id"] == found[2][2]["Nats-Batch-Id"]


async def test_a_keys_events_of_several_types_keep_their_order_in_the_stream(publisher):
    """An upsert, a delete and an upsert of one record are three subjects of one partition: packing
    must not put the two upserts in one message ahead of the delete."""
    changes = ["record.upserted", "record.deleted", "record.upserted", "record.upserted", "record.deleted"]
    sent = []
    for version, event_type in enumerate(changes, 1):
        sent.append(Envelope.new(event_type, "crm/deal/d-1", {"version": version}, source="catalog"))
        sent.append(Envelope.new("record.upserted", f"crm/deal/other-{version}", {}, source="catalog"))
    await publisher.publish(sent)
    js = await publisher.nats.jetstream()
    kept = await stream_documents(js, publisher.streams["records"].name, decode_all)
    assert [e.payload["version"] for e in kept if e.key == "crm/deal/d-1"] == [1, 2, 3, 4, 5]
    assert sorted(e.id for e in kept) == sorted(e.id for e in sent)
    info = await js.stream_info(publisher.streams["records"].name)
    assert info.state.messages < len(sent)  # and packed where it could: 3 and 4 travel together


async def test_a_message_is_closed_before_its_bytes_pass_the_bound_and_a_larger_event_goes_alone(publisher):
    big = Envelope.new("user.event", "user-1", {"text": "x" * PACK_BYTES}, source="test")
    sent = [*events(3), big, *events(40, key="user-1")]
    for envelope in sent[4:]:
        envelope.payload["text"] = "y" * (PACK_BYTES // 20)
    await publisher.publish(sent)
    found = await messages(publisher)
    assert [envelope.id for _, envelopes, _ in found for envelope in envelopes] == [e.id for e in sent]
    assert [len(envelopes) for _, envelopes, _ in found][:2] == [3, 1]  # the big one alone
    assert all(sum(len(encode(e)) + 1 for e in envelopes) <= PACK_BYTES for _, envelopes, _ in found[2:])
    assert len(found) > 3


async def test_a_batch_goes_in_all_or_nothing_chunks_that_keep_a_keys_order(publisher, one_event_a_message):
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


async def test_a_refusal_of_one_acked_event_fails_the_batch_at_once_saying_why(
    own_streams, one_event_a_message
):
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
    with pytest.raises(NotFoundError):  # refused before NATS was asked anything
        await js.stream_info(publisher.streams["user-events"].name)


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
