"""Stream processors against real JetStream: acks after the sink, micro-batches, dead letters, drain."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from metrics import sample, total
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from waiting import eventually

from sophia.core.errors import NotFound, Unavailable
from sophia.core.events import Envelope
from sophia.engines.nats import EmbeddedNats
from sophia.events.codec import decode, encode
from sophia.events.connection import NatsConnection
from sophia.events.dead_letter import dead_letter_spec, list_dead_letters, replay, show_dead_letter
from sophia.events.streams import StreamSpec, ensure_streams, stream_specs
from sophia.shared.resilience import retry
from sophia.workers import processor as processor_module
from sophia.workers.processor import ConsumerSpec, Sink, StreamProcessor, deliveries

FAILURES = (NatsError, OSError, TimeoutError, Unavailable)


@pytest.fixture
async def nats(settings) -> AsyncIterator[NatsConnection]:
    async with NatsConnection(settings.nats_url) as connection:
        yield connection


@pytest.fixture
async def streams(own_streams, nats) -> tuple[StreamSpec, StreamSpec]:
    """A stream and a dead-letter stream of this test's own."""
    spec, dead_letter = stream_specs(own_streams)["user-events"], dead_letter_spec(own_streams)
    await ensure_streams(await nats.jetstream(), [spec])
    return spec, dead_letter


def consumer(spec: StreamSpec, **overrides: object) -> ConsumerSpec:
    """Small timings so each test takes well under a second or two."""
    options: dict = {"batch_wait_s": 0.02, "idle_wait_s": 0.02, "ack_wait_s": 2.0, "backoff_s": (0.01,)}
    return ConsumerSpec(f"c{uuid.uuid4().hex[:8]}", spec.name, **(options | overrides))


def event(number: int) -> Envelope:
    return Envelope.new("user.event", f"u-{number}", {"name": "deal.viewed", "n": number}, source="api")


async def publish(nats: NatsConnection, spec: StreamSpec, events: list[Envelope]) -> None:
    js = await nats.jetstream()
    for envelope in events:
        await js.publish(spec.subject(envelope.key, envelope.type), encode(envelope), stream=spec.name)


@contextlib.asynccontextmanager
async def running(
    nats: NatsConnection, spec: ConsumerSpec, sink: Sink, dead_letter: str | StreamSpec, **options: float
) -> AsyncIterator[StreamProcessor]:
    """A processor running until the block ends (then stopped, drained)."""
    processor = StreamProcessor(nats, spec, sink, dead_letter_stream=dead_letter, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop))
    try:
        yield processor
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def acks(nats: NatsConnection, spec: ConsumerSpec) -> tuple[int, int]:
    """(messages delivered and not acked, the stream sequence acked up to)."""
    js = await nats.jetstream()
    info = await js.consumer_info(spec.stream, spec.name)
    return info.num_ack_pending, info.ack_floor.stream_seq


def acks_are(nats: NatsConnection, spec: ConsumerSpec, expected: tuple[int, int]):
    async def check() -> bool:
        try:
            return await acks(nats, spec) == expected
        except NotFoundError:  # not made yet
            return False

    return check


def consumer_errors(consumer: str) -> float:
    """NATS failures the processor met, whatever their kind."""
    return total("sophia_stream_consumer_errors_total", consumer=consumer)


class Recorder:
    """A sink that keeps what it got; `fail` decides, per batch, whether to raise instead."""

    def __init__(
        self,
        fail: Callable[[list[Envelope]], Exception | None] = lambda batch: None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.fail, self.gate = fail, gate
        self.batches: list[list[str]] = []
        self.stored: list[str] = []

    async def __call__(self, batch: list[Envelope]) -> None:
        self.batches.append([envelope.id for envelope in batch])
        if self.gate is not None:
            await self.gate.wait()
        if error := self.fail(batch):
            raise error
        self.stored += [envelope.id for envelope in batch]


async def test_a_batch_is_acked_only_after_its_sink_returns(nats, streams):
    spec, dead_letter = streams
    sink = Recorder(gate=asyncio.Event())
    consumer_spec = consumer(spec)
    events = [event(n) for n in range(3)]
    await publish(nats, spec, events)
    async with running(nats, consumer_spec, sink, dead_letter):
        await eventually(lambda: sum(map(len, sink.batches)) == 3)
        assert await acks(nats, consumer_spec) == (3, 0)  # in the sink: nothing acked yet
        sink.gate.set()
        await eventually(lambda: sink.stored == [e.id for e in events])
        await eventually(acks_are(nats, consumer_spec, (0, 3)))
    assert sample("sophia_stream_acked_total", consumer=consumer_spec.name) == 3


@pytest.mark.parametrize("raw", [False, True], ids=["envelopes", "raw"])
async def test_a_message_of_several_events_reaches_the_sink_as_its_events_in_order(nats, streams, raw):
    spec, dead_letter = streams
    got: list[str] = []

    async def sink(batch: list) -> None:
        got.extend(decode(item).id if raw else item.id for item in batch)

    packed, alone = [event(n) for n in range(3)], event(3)
    js = await nats.jetstream()
    subject = spec.subject(alone.key, alone.type)
    await js.publish(subject, b"\n".join(encode(e) for e in packed), stream=spec.name)
    await publish(nats, spec, [alone])
    consumer_spec = consumer(spec, raw=raw)
    async with running(nats, consumer_spec, sink, dead_letter):
        await eventually(acks_are(nats, consumer_spec, (0, 2)))
    assert got == [e.id for e in [*packed, alone]]
    assert sample("sophia_stream_acked_total", consumer=consumer_spec.name) == 2
    assert sample("sophia_stream_events_acked_total", consumer=consumer_spec.name) == 4


async def test_concurrency_counts_events_so_packed_messages_are_not_fetched_past_it(nats, streams):
    spec, dead_letter = streams
    gate, calls = asyncio.Event(), []

    async def gated(batch: list[bytes]) -> None:
        calls.append(len(batch))
        await gate.wait()

    js = await nats.jetstream()
    subject = spec.subject("u-0", "user.event")

    async def publish_pack(first: int) -> None:
        body = b"\n".join(encode(event(n)) for n in range(first, first + 8))
        await js.publish(subject, body, stream=spec.name)

    for first in (0, 8, 16):
        await publish_pack(first)
    consumer_spec = consumer(spec, raw=True, batch_size=10, concurrency=10, batch_wait_s=0.2)
    async with running(nats, consumer_spec, gated, dead_letter) as processor:
        await eventually(lambda: calls == [24])  # 3 messages fit the room of 10 messages...
        assert processor.unacked == 24  # ...and bring 24 events: past 10, so nothing more is asked
        await publish_pack(24)
        await asyncio.sleep(0.15)  # three times what a processor fetching past its room would take
        assert await acks(nats, consumer_spec) == (3, 0)  # the 4th waits in the stream
        gate.set()
        await eventually(acks_are(nats, consumer_spec, (0, 4)))
    assert calls == [24, 8]


async def test_a_message_with_one_bad_event_of_several_is_dead_lettered_whole(nats, streams):
    spec, dead_letter = streams
    got: list[str] = []

    async def sink(batch: list[Envelope]) -> None:
        got.extend(envelope.id for envelope in batch)

    good = event(1)
    js = await nats.jetstream()
    await js.publish(spec.subject(good.key, good.type), encode(good) + b"\n{broken", stream=spec.name)
    consumer_spec = consumer(spec)
    async with running(nats, consumer_spec, sink, dead_letter):
        await eventually(acks_are(nats, consumer_spec, (0, 1)))
    assert got == []  # nothing of it reached the sink: the message is one verdict
    [letter] = await list_dead_letters(nats, dead_letter.name)
    assert letter.data == encode(good) + b"\n{broken"


async def test_a_sink_that_raises_leaves_its_batch_to_be_delivered_again(nats, streams):
    spec, dead_letter = streams
    seen: Counter[str] = Counter()

    def first_time_fails(batch: list[Envelope]) -> Exception | None:
        seen.update(e.id for e in batch if len(batch) == 1)  # count the lone retries
        return ConnectionResetError("sink lost its connection") if seen[batch[0].id] < 2 else None

    sink = Recorder(first_time_fails)
    consumer_spec = consumer(spec)
    events = [event(n) for n in range(3)]
    await publish(nats, spec, events)
    async with running(nats, consumer_spec, sink, dead_letter):
        await eventually(lambda: sorted(sink.stored) == sorted(e.id for e in events))
        await eventually(acks_are(nats, consumer_spec, (0, 3)))
    assert sample("sophia_stream_redelivered_total", consumer=consumer_spec.name) >= 3
    assert sample("sophia_stream_failed_total", consumer=consumer_spec.name) >= 3
    assert await list_dead_letters(nats, dead_letter.name) == []


async def test_micro_batches_are_bounded_by_size(nats, streams):
    spec, dead_letter = streams
    sink = Recorder()
    events = [event(n) for n in range(25)]
    await publish(nats, spec, events)
    consumer_spec = consumer(spec, batch_size=10, concurrency=10, batch_wait_s=0.2)
    async with running(nats, consumer_spec, sink, dead_letter):
        await eventually(lambda: len(sink.stored) == 25)
    assert [len(batch) for batch in sink.batches] == [10, 10, 5]
    assert sink.stored == [e.id for e in events]  # one batch at a time keeps the stream's order


async def test_micro_batches_are_bounded_by_time(nats, streams):
    spec, dead_letter = streams
    sink = Recorder()
    consumer_spec = consumer(spec, batch_size=100, batch_wait_s=0.3)
    async with running(nats, consumer_spec, sink, dead_letter):
        started = time.monotonic()
        await publish(nats, spec, [event(1), event(2)])
        await eventually(lambda: sink.stored)
        waited_s = time.monotonic() - started
    assert [len(batch) for batch in sink.batches] == [2]  # one window, far short of 100
    assert waited_s < 0.3 + 0.5


async def test_a_poison_message_is_dead_lettered_after_max_deliver_and_its_batch_proceeds(nats, streams):
    spec, dead_letter = streams
    events = [event(n) for n in range(5)]
    poison = events[2]

    def poisoned(batch: list[Envelope]) -> Exception | None:
        return ValueError(f"bad payload in {poison.id}") if poison in batch else None

    sink = Recorder(poisoned)
    consumer_spec = consumer(spec, max_deliver=3)
    await publish(nats, spec, events)
    async with running(nats, consumer_spec, sink, dead_letter):
        await eventually(lambda: list_dead_letters(nats, dead_letter.name))
        await eventually(acks_are(nats, consumer_spec, (0, 5)))
    assert sink.stored == [e.id for e in events if e is not poison]  # each once
    assert sum(poison.id in batch for batch in sink.batches) == 1 + 3  # its batch, then alone 3 times
    [letter] = await list_dead_letters(nats, dead_letter.name)
    assert (letter.consumer, letter.stream, letter.original_sequence) == (consumer_spec.name, spec.name, 3)
    assert letter.subject == spec.subject(poison.key, poison.type)
    assert (letter.deliveries, letter.error_type) == (3, "ValueError")
    assert letter.error == f"bad payload in {poison.id}"
    assert letter.data == encode(poison)
    assert sample("sophia_stream_dead_lettered_total", consumer=consumer_spec.name, reason="max_deliver") == 1


async def test_a_raw_consumer_hands_over_bytes_and_a_bad_one_is_found_alone_and_dead_lettered(nats, streams):
    spec, dead_letter = streams
    events = [event(n) for n in range(4)]
    await publish(nats, spec, events[:2])
    js = await nats.jetstream()
    await js.publish(f"{spec.name}.0.user.event", b"{broken", stream=spec.name)  # sequence 3
    await publish(nats, spec, events[2:])
    batches: list[list[bytes]] = []

    async def sink(batch: list[bytes]) -> None:  # stands in for PostgreSQL refusing bad JSON
        batches.append(batch)
        if b"{broken" in batch:
            raise ValueError("invalid input syntax for type json")

    consumer_spec = consumer(spec, max_deliver=2, raw=True)
    async with running(nats, consumer_spec, sink, dead_letter):
        await eventually(lambda: list_dead_letters(nats, dead_letter.name))
        await eventually(acks_are(nats, consumer_spec, (0, 5)))
    stored = [item for batch in batches if b"{broken" not in batch for item in batch]
    assert sorted(stored) == sorted(encode(e) for e in events)  # the good ones, as bytes, each once
    [letter] = await list_dead_letters(nats, dead_letter.name)
    assert (letter.original_sequence, letter.data, letter.error_type) == (3, b"{broken", "ValueError")


async def test_an_undecodable_message_is_dead_lettered_at_once(nats, streams):
    spec, dead_letter = streams
    sink = Recorder()
    consumer_spec = consumer(spec)
    js = await nats.jetstream()
    await js.publish(f"{spec.name}.0.user.event", b"{not json", stream=spec.name, headers={"X-Trace": "t1"})
    await publish(nats, spec, [event(1)])
    async with running(nats, consumer_spec, sink, dead_letter):
        await eventually(lambda: list_dead_letters(nats, dead_letter.name))
        await eventually(acks_are(nats, consumer_spec, (0, 2)))
    [letter] = await list_dead_letters(nats, dead_letter.name)
    assert (letter.deliveries, letter.error_type, letter.data) == (1, "Invalid", b"{not json")
    assert "not valid JSON" in letter.error
    assert letter.headers == {"X-Trace": "t1"}
    assert len(sink.stored) == 1


async def test_replay_puts_a_dead_letter_back_and_a_fixed_sink_processes_it(nats, streams):
    spec, dead_letter = streams
    poison = event(7)
    broken = True
    sink = Recorder(lambda batch: ValueError("not yet") if broken else None)
    consumer_spec = consumer(spec, max_deliver=1)
    await publish(nats, spec, [poison])
    async with running(nats, consumer_spec, sink, dead_letter):
        await eventually(lambda: list_dead_letters(nats, dead_letter.name))
        [letter] = await list_dead_letters(nats, dead_letter.name)
        broken = False
        replayed = await replay(nats, dead_letter.name, letter.sequence)
        await eventually(lambda: sink.stored == [poison.id])
    assert replayed == letter
    assert await list_dead_letters(nats, dead_letter.name) == []
    with pytest.raises(NotFound):
        await show_dead_letter(nats, dead_letter.name, letter.sequence)


async def test_stop_finishes_the_batch_in_hand_and_acks_it(nats, streams):
    spec, dead_letter = streams
    sink = Recorder(gate=asyncio.Event())
    consumer_spec = consumer(spec, idle_wait_s=0.02)  # stop is seen long before the gate opens
    await publish(nats, spec, [event(n) for n in range(4)])
    stop = asyncio.Event()
    processor = StreamProcessor(nats, consumer_spec, sink, dead_letter_stream=dead_letter)
    task = asyncio.create_task(processor.run(stop))
    await eventually(lambda: sum(map(len, sink.batches)) == 4)
    stop.set()
    done, _ = await asyncio.wait({task}, timeout=0.1)
    assert not done  # still finishing its batch
    sink.gate.set()
    await asyncio.wait_for(task, 5)
    assert len(sink.stored) == 4
    await eventually(acks_are(nats, consumer_spec, (0, 4)))  # sent and flushed; JetStream applies them after


async def test_concurrency_bounds_the_messages_fetched_and_not_yet_acked(nats, streams):
    spec, dead_letter = streams
    consumer_spec = consumer(spec, batch_size=5, concurrency=10)
    in_sink = high_water = 0
    server_high_water = 0

    async def slow(batch: list[Envelope]) -> None:
        nonlocal in_sink, high_water, server_high_water
        in_sink += len(batch)
        high_water = max(high_water, in_sink, processor.unacked)
        server_high_water = max(server_high_water, (await acks(nats, consumer_spec))[0])
        await asyncio.sleep(0.02)  # the sink's work
        in_sink -= len(batch)

    await publish(nats, spec, [event(n) for n in range(60)])
    async with running(nats, consumer_spec, slow, dead_letter) as processor:
        await eventually(acks_are(nats, consumer_spec, (0, 60)))
    assert 5 < high_water <= 10  # two batches at once, never more than 10 messages
    # JetStream's own count can lag by the acks of one batch still on their way to it (an ack is
    # published, not awaited, and the next fetch may reach the consumer first)
    assert server_high_water <= 10 + consumer_spec.batch_size


async def test_a_sink_whose_dependency_is_down_never_dead_letters(nats, streams):
    spec, dead_letter = streams
    outages = iter(range(3))  # the first three calls find the database down

    def down(batch: list[Envelope]) -> Exception | None:
        return Unavailable("PostgreSQL is unreachable") if next(outages, None) is not None else None

    sink = Recorder(down)
    consumer_spec = consumer(spec, max_deliver=1)
    events = [event(n) for n in range(2)]
    await publish(nats, spec, events)
    async with running(nats, consumer_spec, sink, dead_letter):
        await eventually(lambda: sorted(sink.stored) == sorted(e.id for e in events))
    assert await list_dead_letters(nats, dead_letter.name) == []


async def test_a_deleted_consumer_is_made_again_and_consumption_goes_on(nats, streams):
    spec, dead_letter = streams
    sink = Recorder()
    consumer_spec = consumer(spec)
    async with running(nats, consumer_spec, sink, dead_letter, reconnect_max_s=0.1, lag_refresh_s=0.1):
        await publish(nats, spec, [event(1)])
        await eventually(lambda: len(sink.stored) == 1)
        js = await nats.jetstream()
        await js.delete_consumer(spec.name, consumer_spec.name)
        later = event(2)
        await publish(nats, spec, [later])
        # A new consumer starts the stream over (the sink is idempotent): event 1 comes again.
        await eventually(lambda: later.id in sink.stored)
    assert consumer_errors(consumer_spec.name) >= 1


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"concurrency": 0}, {"max_deliver": 0}, {"backoff_s": ()}],
    ids=["batch_size", "concurrency", "max_deliver", "backoff_s"],
)
def test_a_consumer_spec_without_room_or_retries_is_refused(options):
    with pytest.raises(ValueError, match="must be >= 1; backoff_s not empty"):
        ConsumerSpec("c", "stream", **options)


async def test_a_processor_started_before_its_stream_exists_waits_for_it(nats, own_streams):
    spec, dead_letter = stream_specs(own_streams)["system-events"], dead_letter_spec(own_streams)
    sink = Recorder()
    consumer_spec = consumer(spec)
    async with running(nats, consumer_spec, sink, dead_letter, reconnect_max_s=0.05):
        await eventually(lambda: consumer_errors(consumer_spec.name) >= 2)  # no stream: no consumer
        await ensure_streams(await nats.jetstream(), [spec])
        events = [event(1), event(2)]
        await publish(nats, spec, events)
        await eventually(lambda: sink.stored == [e.id for e in events])
        await eventually(acks_are(nats, consumer_spec, (0, 2)))


async def test_a_batch_of_undecodable_messages_never_reaches_the_sink(nats, streams):
    spec, dead_letter = streams
    sink = Recorder()
    consumer_spec = consumer(spec, batch_wait_s=0.2)
    js = await nats.jetstream()
    for garbage in (b"{not json", b"[]"):
        await js.publish(f"{spec.name}.0.user.event", garbage, stream=spec.name)
    async with running(nats, consumer_spec, sink, dead_letter):
        await eventually(acks_are(nats, consumer_spec, (0, 2)))
    assert sink.batches == []
    assert [letter.data for letter in await list_dead_letters(nats, dead_letter.name)] == [
        b"{not json",
        b"[]",
    ]
    assert sample("sophia_stream_dead_lettered_total", consumer=consumer_spec.name, reason="undecodable") == 2


async def test_a_dead_letter_the_full_dead_letter_stream_refuses_is_kept_until_it_has_room(nats, streams):
    spec, dead_letter = streams
    full = replace(dead_letter, max_bytes=1)  # refuses every letter
    # Refused, the message is neither acked nor NAKed: it comes again after each ack wait. A short
    # one costs nothing here (a letter published twice is one: its Nats-Msg-Id is the original's).
    consumer_spec = consumer(spec, ack_wait_s=0.1)
    js = await nats.jetstream()
    await js.publish(f"{spec.name}.0.user.event", b"{not json", stream=spec.name)
    async with running(nats, consumer_spec, Recorder(), full):
        await eventually(lambda: consumer_errors(consumer_spec.name) >= 2)  # refused, then again
        assert await acks(nats, consumer_spec) == (1, 0)  # neither acked nor terminated: not lost
        await ensure_streams(js, [dead_letter])  # room again
        await eventually(acks_are(nats, consumer_spec, (0, 1)))
    [letter] = await list_dead_letters(nats, dead_letter.name)
    assert (letter.data, letter.error_type) == (b"{not json", "Invalid")


async def test_a_sink_working_past_the_ack_wait_keeps_its_batch_from_being_delivered_again(nats, streams):
    spec, dead_letter = streams
    progress: list[bytes] = []

    async def spy(message: Msg) -> None:
        progress.append(message.data)

    async def slow(batch: list[Envelope]) -> None:
        await eventually(lambda: len(progress) >= 6)  # 1.5 ack waits: without them, delivered again

    # Keep-alives every half ack wait: 0.25 s of slack for a loaded machine to send each in time.
    consumer_spec = consumer(spec, ack_wait_s=0.5)
    await publish(nats, spec, [event(1), event(2)])
    assert nats.client is not None
    acks_seen = await nats.client.subscribe(f"$JS.ACK.{spec.name}.{consumer_spec.name}.>", cb=spy)
    try:
        async with running(nats, consumer_spec, slow, dead_letter):
            await eventually(acks_are(nats, consumer_spec, (0, 2)))
    finally:
        await acks_seen.unsubscribe()
    assert progress[:6] == [b"+WPI"] * 6  # both messages, every half ack wait
    assert sample("sophia_stream_redelivered_total", consumer=consumer_spec.name) == 0


async def test_a_batch_of_packed_messages_goes_to_the_sink_in_runs_and_none_waiting_is_delivered_again(
    nats, streams
):
    """Two messages of three events each, a sink sized for four: two calls, one message each; the
    second waits out more than an ack wait behind the first and is kept alive meanwhile."""
    spec, dead_letter = streams
    calls: list[list[int]] = []

    async def slow(batch: list[Envelope]) -> None:
        calls.append([int(envelope.payload["n"]) for envelope in batch])
        if len(calls) == 1:  # the second run's own slowness is the test above's
            await asyncio.sleep(0.65)  # past the ack wait: the other message waits as long

    js = await nats.jetstream()
    for first in (0, 3):
        packed = [event(n) for n in range(first, first + 3)]
        await js.publish(spec.subject("u-0", "user.event"), b"\n".join(map(encode, packed)), stream=spec.name)
    consumer_spec = consumer(spec, ack_wait_s=0.5, batch_size=4, batch_wait_s=0.2)
    async with running(nats, consumer_spec, slow, dead_letter):
        await eventually(acks_are(nats, consumer_spec, (0, 2)))
    assert calls == [[0, 1, 2], [3, 4, 5]]
    assert sample("sophia_stream_redelivered_total", consumer=consumer_spec.name) == 0


async def test_a_batch_whose_nats_client_closed_under_its_sink_is_delivered_again(
    settings, nats, streams, logs_of
):
    spec, dead_letter = streams
    consumer_spec = consumer(spec, ack_wait_s=0.3)
    # The pull request open when the client closed is given up only after the timeout: keep it short.
    own = NatsConnection(settings.nats_url, timeout_s=0.25)
    logs = logs_of(processor_module)
    calls = 0

    async def sink(batch: list[Envelope]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # the connection closes under it: it can neither renew nor ack this batch
            assert own.client is not None
            await own.client.close()
            await eventually(lambda: logs.count("stream_keep_alive_failed") >= 1)

    await publish(nats, spec, [event(1)])
    async with own, running(own, consumer_spec, sink, dead_letter, reconnect_max_s=0.05):
        await eventually(acks_are(nats, consumer_spec, (0, 1)))  # on a client of its own again
    assert calls == 2
    assert logs.count("stream_verdict_failed") == 1
    assert sample("sophia_stream_redelivered_total", consumer=consumer_spec.name) == 1


async def test_a_processor_stopped_after_its_nats_client_closed_returns_leaving_its_batch_unacked(
    settings, nats, streams
):
    spec, dead_letter = streams
    gate = asyncio.Event()
    sink = Recorder(gate=gate)
    consumer_spec = consumer(spec, idle_wait_s=0.05)
    # The pull request open when the client closed is given up only after the timeout: keep it short.
    own = NatsConnection(settings.nats_url, timeout_s=0.25)
    await publish(nats, spec, [event(1)])
    stop = asyncio.Event()
    async with own:
        processor = StreamProcessor(own, consumer_spec, sink, dead_letter_stream=dead_letter)
        task = asyncio.create_task(processor.run(stop))
        await eventually(lambda: sink.batches)
        stop.set()
        assert own.client is not None
        await own.client.close()
        gate.set()
        await asyncio.wait_for(task, 5)
    assert len(sink.stored) == 1
    assert await acks(nats, consumer_spec) == (1, 0)  # JetStream delivers it again to the next one


async def test_cancelling_a_processor_cancels_the_sinks_in_hand_and_acks_nothing(nats, streams):
    spec, dead_letter = streams
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def endless(batch: list[Envelope]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    consumer_spec = consumer(spec)
    await publish(nats, spec, [event(1), event(2)])
    task = asyncio.create_task(
        StreamProcessor(nats, consumer_spec, endless, dead_letter_stream=dead_letter).run(asyncio.Event())
    )
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
    assert await acks(nats, consumer_spec) == (2, 0)


@pytest.mark.chaos
async def test_a_processor_outlives_its_nats_server_going_away_and_coming_back(tmp_path):
    server = EmbeddedNats(tmp_path / "nats")
    url = await server.start()
    try:
        async with NatsConnection(url, timeout_s=0.5) as connection:
            spec = StreamSpec("chaos-events", partitions=2)
            await ensure_streams(await connection.jetstream(), [spec])
            sink = Recorder()
            consumer_spec = consumer(spec)
            before, after = [event(n) for n in range(5)], [event(n) for n in range(5, 10)]
            options = {"reconnect_max_s": 0.2, "lag_refresh_s": 0.1}
            async with running(connection, consumer_spec, sink, "chaos-dead-letter", **options):
                await publish(connection, spec, before)
                await eventually(lambda: len(sink.stored) == 5)
                errors = consumer_errors(consumer_spec.name)
                await server.stop()
                await eventually(lambda: consumer_errors(consumer_spec.name) > errors)  # it noticed
                assert await server.start() == url  # the same port: the client reconnects by itself
                await retry(
                    lambda: publish(connection, spec, after), attempts=20, base_s=0.1, retry_on=FAILURES
                )
                await eventually(lambda: {e.id for e in before + after} <= set(sink.stored), 20)
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.stream.consumer.3.10.9.1700000000000000000.0",
        "$JS.ACK.domain.account-hash.stream.consumer.3.10.9.1700000000000000000.0.token",
        "$JS.ACK._.account-hash.stream.consumer.3.10.9.1700000000000000000.0",
    ],
    ids=["v1", "v2", "v2-no-domain-no-token"],
)
def test_the_delivery_count_is_read_as_nats_py_reads_it(reply):
    message = Msg(_client=None, reply=reply)  # type: ignore[arg-type]
    assert deliveries(message) == message.metadata.num_delivered == 3


@pytest.mark.chaos
async def test_a_processor_stopped_while_its_nats_server_hangs_returns_and_dead_letters_are_unavailable(
    tmp_path, logs_of
):
    logs = logs_of(processor_module)
    server = EmbeddedNats(tmp_path / "nats")
    url = await server.start()
    assert server.process is not None
    pid = server.process.pid
    assert pid is not None
    try:
        async with NatsConnection(url, timeout_s=0.3) as connection:
            spec = StreamSpec("hang-events", partitions=1)
            await ensure_streams(await connection.jetstream(), [spec])
            sink = Recorder()
            consumer_spec = consumer(spec, idle_wait_s=0.1)
            stop = asyncio.Event()
            processor = StreamProcessor(connection, consumer_spec, sink, dead_letter_stream="hang-letters")
            task = asyncio.create_task(processor.run(stop))
            await publish(connection, spec, [event(1)])
            await eventually(acks_are(connection, consumer_spec, (0, 1)))
            os.kill(pid, signal.SIGSTOP)  # the server hangs: its socket is open, nothing answers
            try:
                stop.set()
                await asyncio.wait_for(task, 5)  # its last flush times out instead of hanging
                with pytest.raises(Unavailable, match="NATS failed: TimeoutError"):
                    await list_dead_letters(connection, "hang-letters")
            finally:
                os.kill(pid, signal.SIGCONT)
        assert logs.count("stream_finish_failed") == 1
        assert len(sink.stored) == 1
    finally:
        await server.stop()


async def test_a_consumer_replacing_others_starts_at_the_oldest_message_any_of_them_still_owed(nats, streams):
    """Two consumers, one acked up to event 4, the other up to event 2: their successor begins at
    event 3 (what the slower one owed, the faster one's too: sinks are idempotent), not at the
    stream's start, and the two are gone. Started again, it keeps its place and its settings."""
    spec, dead_letter = streams
    events = [event(n) for n in range(6)]
    await publish(nats, spec, events)
    ahead, behind = consumer(spec), consumer(spec)
    js = await nats.jetstream()
    for old, acked in ((ahead, 4), (behind, 2)):
        await js.add_consumer(spec.name, old.config())
        pulled = await js.pull_subscribe_bind(old.name, spec.name)
        for message in await pulled.fetch(acked, timeout=5):
            await message.ack_sync()
        await pulled.unsubscribe()
        assert await acks(nats, old) == (0, acked)
    successor = consumer(spec, replaces=(ahead.name, behind.name, "never-there"))
    sink = Recorder()
    async with running(nats, successor, sink, dead_letter):
        await eventually(acks_are(nats, successor, (0, 6)))  # the stream's last, acked
    assert sink.stored == [e.id for e in events[2:]]
    for old in (ahead, behind):
        with pytest.raises(NotFoundError):
            await js.consumer_info(spec.name, old.name)
    again = Recorder()
    async with running(nats, successor, again, dead_letter):
        later = event(7)
        await publish(nats, spec, [later])
        await eventually(lambda: again.stored == [later.id])
    assert (await js.consumer_info(spec.name, successor.name)).config.opt_start_seq == 3


async def test_a_consumer_replacing_none_that_exist_starts_at_the_beginning(nats, streams):
    spec, dead_letter = streams
    events = [event(n) for n in range(3)]
    await publish(nats, spec, events)
    sink = Recorder()
    async with running(nats, consumer(spec, replaces=("gone-before",)), sink, dead_letter):
        await eventually(lambda: sink.stored == [e.id for e in events])
