"""The one consumer loop: subscribe, consume, back off and subscribe again after a NATS failure."""

from __future__ import annotations

import asyncio

import pytest
from nats.errors import ConnectionClosedError, MsgAlreadyAckdError
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig
from waiting import eventually

from sophia.engines.nats import EmbeddedNats
from sophia.events import consumer
from sophia.events.connection import Delivered, NatsConnection
from sophia.events.consumer import ConsumerLoop, PullSubscription
from sophia.events.streams import StreamSpec, ensure_streams
from sophia.events.wire import ack_all


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
        nats, name="loop", reconnect_max_s=0.01, on_failure=lambda e: failures_seen.append(str(e))
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


async def pull_of(nats, own_streams, name: str, **config) -> tuple[StreamSpec, PullSubscription]:
    spec = StreamSpec(own_streams.events_stream_prefix + name, partitions=1)
    js = await nats.jetstream()
    await ensure_streams(js, [spec])
    await js.add_consumer(
        spec.name, ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT, **config)
    )
    return spec, await PullSubscription.bind(nats, spec.name, name)


async def publish_n(nats, spec: StreamSpec, count: int, start: int = 0) -> None:
    js = await nats.jetstream()
    for n in range(start, start + count):
        await js.publish(spec.subject("k", "t"), str(n).encode())


async def test_a_pull_takes_at_most_its_room_and_never_asks_past_it(nats, own_streams):
    spec, pull = await pull_of(nats, own_streams, "room")
    try:
        await publish_n(nats, spec, 10)
        first = await pull.take(4, wait_s=2, fill_s=1)
        assert [m.data for m in first] == [b"0", b"1", b"2", b"3"]
        # asked for 4, all taken and not acked: JetStream holds the other 6 back
        js = await nats.jetstream()
        info = await js.consumer_info(spec.name, "room")
        assert (info.num_ack_pending, info.num_pending) == (4, 6)
        # its 4 unfilled end at its expiry, with a 408 that ends the fill too (not the 1 s)
        rest = await pull.take(10, wait_s=0.1, fill_s=1)
        assert [m.data for m in rest] == [str(n).encode() for n in range(4, 10)]
        assert await pull.take(10, wait_s=0.05) == []  # nothing more, held or in the stream
    finally:
        await pull.unsubscribe()


async def test_small_batches_ride_one_pull_request_until_half_the_room_is_free(nats, own_streams):
    """Each pull request is a message to JetStream and, unfilled, a 408 at its expiry: one taken
    a message at a time is not topped up after every take, only once half of the room is free."""
    spec, pull = await pull_of(nats, own_streams, "trickle")
    js = await nats.jetstream()

    async def waiting_requests() -> int:
        return (await js.consumer_info(spec.name, "trickle")).num_waiting

    try:
        for n in range(5):
            await publish_n(nats, spec, 1, start=n)
            taken = await pull.take(10, wait_s=5, fill_s=0.01)
            assert [m.data for m in taken] == [str(n).encode()]
            for message in taken:
                await message.ack()
            assert await waiting_requests() == 1  # the first request, 10 - n - 1 still asked for
        await publish_n(nats, spec, 1, start=5)
        # 5 still asked for, at most half the room: this take tops it up with a second request
        assert [m.data for m in await pull.take(10, wait_s=5, fill_s=0.01)] == [b"5"]
        assert await waiting_requests() == 2
    finally:
        await pull.unsubscribe()


async def test_a_pull_with_max_bytes_brings_no_more_than_that_and_the_rest_comes_next(nats, own_streams):
    """Messages carry up to 256 events: bytes, not a count of messages, bound what a batch holds.
    The bound is at least twice the largest message NATS takes, or such a message never comes."""
    spec, pull = await pull_of(nats, own_streams, "bytes")
    try:
        js = await nats.jetstream()
        body = b"x" * (100 * 1024)
        for _ in range(50):  # 5 MB: more than twice a 1 MiB max_payload
            await js.publish(spec.subject("k", "t"), body)
        bound = 2 * pull._client.max_payload
        first = await pull.take(50, wait_s=2, fill_s=0.5, max_bytes=1)  # raised to the bound
        assert 0 < len(first) < 50
        assert sum(len(m.data) for m in first) <= bound
        for message in first:
            await message.ack()
        rest: list = []
        while len(first) + len(rest) < 50:
            # a short fill: the last request, past the stream's end, is never filled nor ended
            more = await pull.take(50, wait_s=2, fill_s=0.05, max_bytes=1)
            assert more, "the rest never came"
            rest += more
            for message in more:
                await message.ack()
        assert len(first) + len(rest) == 50
    finally:
        await pull.unsubscribe()


async def test_a_request_that_expired_empty_stops_counting(nats, own_streams):
    spec, pull = await pull_of(nats, own_streams, "expired")
    try:
        assert await pull.take(3, wait_s=0.05) == []  # JetStream ends it with a 408
        await publish_n(nats, spec, 3)
        # were the expired request still counted, no new one would ask for these
        taken = await pull.take(3, wait_s=2, fill_s=0.5)
        assert [m.data for m in taken] == [b"0", b"1", b"2"]
    finally:
        await pull.unsubscribe()


async def test_what_arrives_past_a_take_waits_for_the_next_and_is_handed_back_at_the_end(nats, own_streams):
    """Messages can arrive past what a take handed over (a request asked for more than was taken):
    they wait for the next take, and `unsubscribe` (every consumer's stop and reconnect) NAKs them,
    so JetStream delivers them again at once instead of after the ack wait."""
    spec, pull = await pull_of(nats, own_streams, "late", ack_wait=30.0)
    try:
        await publish_n(nats, spec, 1)
        assert [m.data for m in await pull.take(5, wait_s=2)] == [b"0"]  # no fill: the first
        await publish_n(nats, spec, 2, start=1)  # the open request asked for 4 more
        await eventually(lambda: len(pull._ready) == 2)  # arrived, not taken
    finally:
        await pull.unsubscribe()
    again = await PullSubscription.bind(nats, spec.name, "late")
    try:
        taken = await again.take(2, wait_s=5, fill_s=5)  # long before the 30 s ack wait
        # JetStream redelivers what was NAKed without promising the order (a fast-tier run got 2, 1)
        assert sorted(m.data for m in taken) == [b"1", b"2"]
        assert {m.metadata.num_delivered for m in taken} == {2}
    finally:
        await again.unsubscribe()


async def test_a_pull_on_a_consumer_that_is_gone_fails(nats, own_streams):
    spec, pull = await pull_of(nats, own_streams, "gone")
    try:
        js = await nats.jetstream()
        await js.delete_consumer(spec.name, "gone")
        with pytest.raises(NatsError):  # JetStream's refusal (no responders) comes to the inbox
            await pull.take(1, wait_s=0.5)
    finally:
        await pull.unsubscribe()


async def test_a_pulled_message_comes_directly_with_its_headers_parsed_when_read(nats, own_streams):
    spec, pull = await pull_of(nats, own_streams, "direct")
    try:
        js = await nats.jetstream()
        sent = {"Nats-Msg-Id": "m-1", "Trace": "a: b", "Empty": "", "Note": "café"}
        await js.publish(spec.subject("k", "t"), b"{}", headers=sent)
        await publish_n(nats, spec, 1)  # one without headers
        with_headers, without = await pull.take(2, wait_s=2, fill_s=1)
        assert isinstance(with_headers, Delivered)
        assert with_headers.data == b"{}"
        assert with_headers.headers == sent  # parsed when read, as nats-py parses them
        assert without.headers is None
        assert with_headers.metadata.sequence.stream == 1  # an ack subject as nats-py's own message
    finally:
        await pull.unsubscribe()


async def test_messages_acked_at_once_are_settled_and_cannot_be_acked_again(nats, own_streams):
    spec, pull = await pull_of(nats, own_streams, "acked", ack_wait=30.0)
    try:
        await publish_n(nats, spec, 5)
        taken = await pull.take(5, wait_s=2, fill_s=1)
        await ack_all(nats.client, taken[:3])
        js = await nats.jetstream()

        async def settled() -> bool:
            info = await js.consumer_info(spec.name, "acked")
            return (info.num_ack_pending, info.ack_floor.stream_seq) == (2, 3)

        await eventually(settled)
        with pytest.raises(MsgAlreadyAckdError):
            await taken[0].ack()
        with pytest.raises(MsgAlreadyAckdError):  # nothing of a refused call is written
            await ack_all(nats.client, [taken[3], taken[1]])
        assert (await js.consumer_info(spec.name, "acked")).num_ack_pending == 2
        with pytest.raises(ConnectionClosedError):
            await ack_all(None, taken[3:])
    finally:
        await pull.unsubscribe()


async def test_statuses_come_the_direct_way_in_order_with_the_messages(nats, own_streams):
    """A pull subscription counts its open requests by the order of messages and statuses: a
    status handed over later than the messages after it would leave a request counted that is
    gone, and the consumer would stop asking until its deadline."""
    spec, pull = await pull_of(nats, own_streams, "ordered")
    try:
        arrived: list[str] = []
        client = nats.client
        sid = pull._inbox_subscription._id

        def record(message) -> None:
            status = (message.headers or {}).get("Status")
            arrived.append(status or message.data.decode())

        client.deliver_to(sid, record)
        await publish_n(nats, spec, 1)
        next_ = f"$JS.API.CONSUMER.MSG.NEXT.{spec.name}.ordered"
        await client.publish(next_, b'{"batch": 2, "expires": 50000000}', reply=pull._inbox)
        await eventually(lambda: len(arrived) == 2)  # the message, then the request's end
        await publish_n(nats, spec, 1, start=1)
        await client.publish(next_, b'{"batch": 1, "expires": 2000000000}', reply=pull._inbox)
        await eventually(lambda: len(arrived) == 3)
        assert arrived == ["0", "408", "1"]
    finally:
        await pull.unsubscribe()


async def test_a_delivery_that_raises_is_reported_and_the_connection_goes_on(nats, own_streams):
    spec, pull = await pull_of(nats, own_streams, "raising")
    try:
        client = nats.client
        sid = pull._inbox_subscription._id
        calls = 0

        def fail_once(message) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a sink's bug")
            pull._take_in(message)

        client.deliver_to(sid, fail_once)
        await publish_n(nats, spec, 2)
        taken = await pull.take(2, wait_s=2, fill_s=0.05)  # the first never comes: no long fill
        assert calls >= 2
        assert [m.data for m in taken] == [b"1"]  # the first was lost to the bug, not the connection
        assert client.is_connected
    finally:
        await pull.unsubscribe()


async def test_a_subscription_that_ends_takes_its_direct_route_with_it(nats, own_streams):
    _, pull = await pull_of(nats, own_streams, "ended")
    client = nats.client
    sid = pull._inbox_subscription._id
    assert sid in client._direct
    await pull.unsubscribe()
    assert sid not in client._direct


async def test_a_message_twice_in_one_ack_call_is_refused_before_anything_is_written(nats, own_streams):
    spec, pull = await pull_of(nats, own_streams, "twice", ack_wait=30.0)
    try:
        await publish_n(nats, spec, 1)
        (message,) = await pull.take(1, wait_s=2)
        with pytest.raises(MsgAlreadyAckdError):
            await ack_all(nats.client, [message, message])
        await ack_all(nats.client, [message])  # nothing was written, nor marked: it acks now
    finally:
        await pull.unsubscribe()


@pytest.mark.chaos  # stops and starts a NATS server of its own
async def test_acks_written_while_nats_is_away_reach_it_once_it_is_back(tmp_path):
    server = EmbeddedNats(tmp_path)
    url = await server.start()
    try:
        async with NatsConnection(url) as nats:
            spec = StreamSpec("chaos-acks", partitions=1)
            js = await nats.jetstream()
            await ensure_streams(js, [spec])
            config = ConsumerConfig(durable_name="acks", ack_policy=AckPolicy.EXPLICIT, ack_wait=60.0)
            await js.add_consumer(spec.name, config)
            pull = await PullSubscription.bind(nats, spec.name, "acks")
            await publish_n(nats, spec, 3)
            taken = await pull.take(3, wait_s=2, fill_s=1)
            assert len(taken) == 3
            await server.stop()
            await eventually(lambda: not nats.client.is_connected)
            await ack_all(nats.client, taken)  # buffered, as nats-py buffers a publish meanwhile
            await server.start()

            async def settled() -> bool:
                try:
                    info = await js.consumer_info(spec.name, "acks")
                except NatsError:  # still reconnecting
                    return False
                return (info.num_ack_pending, info.ack_floor.stream_seq) == (0, 3)

            await eventually(settled, timeout_s=20)  # long before the 60 s ack wait
            await pull.unsubscribe()
    finally:
        await server.stop()
