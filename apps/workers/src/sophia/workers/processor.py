"""Stream processors: durable pull consumers that hand micro-batches of events to an idempotent sink.

A processor fetches up to `batch_size` messages, waiting at most `batch_wait_s` after the first
for the batch to fill, calls its sink with their envelopes (a message carries one or several:
`codec.unpack`) and acks them only once the sink has
returned. A crash before that leaves them un-acked and JetStream delivers them again, which is
why a sink must be idempotent (ON CONFLICT on the event id). With `concurrency` above
`batch_size` several batches are in their sinks at once (and their order between them is not
kept); never more than about `concurrency` events are fetched and not yet acked (a message
carries one or several; a pull brings at most `batch_size` messages and `max_bytes`).

Failures: a batch whose sink raised is retried message by message, so one poison message does
not hold back the rest. A message that fails alone is NAKed with the backoff for its delivery
count; on its `max_deliver`-th delivery it goes to the dead-letter stream with its error and is
terminated. A message that is not an envelope goes there at once. A sink raising `Unavailable`
says its own dependency is down, not that the events are bad: the batch is NAKed with backoff
and nothing is dead-lettered for it.

NATS going away: the processor backs off (full jitter), resubscribes and carries on; what was in
flight is delivered again. `run(stop)` returns once `stop` is set and the batches in hand are
finished and acked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sophia.core.errors import Invalid, Unavailable
from sophia.core.events import Envelope
from sophia.events.codec import count_events, decode_all, unpack
from sophia.events.connection import NATS_FAILURES, NatsConnection
from sophia.events.consumer import (
    ConsumerConfig,
    ConsumerLoop,
    Message,
    PullSubscription,
    ensure_consumer,
    explicit_ack_consumer,
)
from sophia.events.dead_letter import ensure_dead_letter, publish_dead_letter
from sophia.events.streams import StreamSpec
from sophia.events.wire import ack_all
from sophia.shared.logging import get_logger
from sophia.shared.resilience import honour_cancellation
from sophia.workers import metrics
from sophia.workers.sinks import RawSink, Sink

__all__ = ["ConsumerSpec", "RawSink", "Sink", "StreamProcessor"]

log = get_logger(__name__)

V1_ACK_TOKENS = 9

Items = Sequence[Envelope | bytes]
"""What one message holds for a sink: its envelopes, or their bytes (`ConsumerSpec.raw`)."""


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """One durable pull consumer and how it batches, bounds and retries."""

    name: str
    stream: str
    """The stream's NATS name (`StreamSpec.name`)."""
    filter_subject: str | None = None
    batch_size: int = 100
    """The most messages fetched for one batch, and the most events one call of an envelope sink
    gets (a message carries one or several: a batch goes to the sink in runs of whole messages of
    at most this many events, or one message of more). A raw sink gets the whole batch."""
    batch_wait_s: float = 0.05
    """How long a batch waits to fill once its first message is in."""
    concurrency: int = 100
    """The most events fetched and not yet acked at once (a batch may pass it by what one pull
    brings: at most `batch_size` messages and `max_bytes`)."""
    max_deliver: int = 5
    ack_wait_s: float = 30.0
    """How long JetStream waits for a verdict; a sink still working renews it every half of it."""
    backoff_s: tuple[float, ...] = (0.5, 2.0, 10.0)
    """NAK delays by delivery count (the last one repeats)."""
    idle_wait_s: float = 1.0
    """How long one fetch waits for a first message (and so the longest `stop` waits on an idle one)."""
    max_bytes: int | None = None
    """The most bytes one pull brings (at least twice NATS's largest message): with messages of up
    to 256 events, what bounds a batch in memory."""
    raw: bool = False
    """Hand the sink the messages' bytes (a `RawSink`) instead of decoded envelopes: for a sink
    that lets PostgreSQL parse them. A bad message then fails its batch instead of being
    dead-lettered at once, and is found by the one-at-a-time retry."""
    replaces: tuple[str, ...] = ()
    """Consumers of the same stream this one took over from: created, it starts where the
    furthest behind of them was, and they are deleted (`ensure_consumer`)."""

    def __post_init__(self) -> None:
        if min(self.batch_size, self.concurrency, self.max_deliver) < 1 or not self.backoff_s:
            raise ValueError("batch_size, concurrency and max_deliver must be >= 1; backoff_s not empty")

    def config(self) -> ConsumerConfig:
        # No delivery limit: the processor, not the server, gives up on a message, and files it.
        return explicit_ack_consumer(
            self.name,
            ack_wait_s=self.ack_wait_s,
            max_ack_pending=max(self.concurrency, 1000),
            filter_subject=self.filter_subject,
        )

    def backoff_after(self, deliveries: int) -> float:
        return self.backoff_s[min(max(deliveries, 1), len(self.backoff_s)) - 1]


def deliveries(message: Message) -> int:
    """How often JetStream has delivered `message`, read off its ack subject alone:
    `$JS.ACK.<stream>.<consumer>.<delivered>...` (9 tokens), or with a domain and an account hash
    before the stream (12). nats-py's `metadata` builds a datetime and two dataclasses per message,
    6 % of the workers' CPU under load for the one number every message needs."""
    tokens = (message.reply or "").split(".")
    return int(tokens[4] if len(tokens) == V1_ACK_TOKENS else tokens[6])


class StreamProcessor:
    """`await StreamProcessor(nats, spec, sink, dead_letter_stream=...).run(stop)` until `stop`.

    `dead_letter_stream` is a `StreamSpec` (created or updated at start, see `dead_letter_spec`)
    or a bare name (created with the dead-letter defaults if missing)."""

    def __init__(
        self,
        nats: NatsConnection,
        spec: ConsumerSpec,
        sink: Sink | RawSink,
        *,
        dead_letter_stream: str | StreamSpec,
        reconnect_max_s: float = 5.0,
        lag_refresh_s: float = 5.0,
    ) -> None:
        self.nats = nats
        self.spec = spec
        self.sink = sink
        self.dead_letter_stream = dead_letter_stream
        self.reconnect_max_s = reconnect_max_s
        self.lag_refresh_s = lag_refresh_s
        self.unacked = 0
        self._dead_letter_name = (
            dead_letter_stream.name if isinstance(dead_letter_stream, StreamSpec) else dead_letter_stream
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._consumer_loop: ConsumerLoop
        self._lag_due = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish and ack the batches in hand and return."""
        try:
            await self._consume_until(stop)
            await asyncio.gather(*self._tasks)
            await self._finish()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _consume_until(self, stop: asyncio.Event) -> None:
        def count(error: BaseException) -> None:
            metrics.CONSUMER_ERRORS.labels(self.spec.name, type(error).__name__).inc()

        self._consumer_loop = ConsumerLoop(
            self.nats, name=self.spec.name, reconnect_max_s=self.reconnect_max_s, on_failure=count
        )
        await self._consumer_loop.run(
            self._subscribe, lambda subscription: self._consume(subscription, stop), stop
        )

    async def _subscribe(self) -> PullSubscription:
        js = await self.nats.jetstream()
        self._dead_letter_name = await ensure_dead_letter(js, self.dead_letter_stream)
        await ensure_consumer(js, self.spec.stream, self.spec.config(), replaces=self.spec.replaces)
        self._lag_due = 0.0
        return await PullSubscription.bind(self.nats, self.spec.stream, self.spec.name)

    async def _consume(self, subscription: PullSubscription, stop: asyncio.Event) -> None:
        while not stop.is_set():
            honour_cancellation()
            await self._refresh_lag(subscription)  # also notices a consumer or server gone
            room = min(self.spec.batch_size, self.spec.concurrency - self.unacked)
            if room <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            messages = await subscription.take(
                room,
                wait_s=self.spec.idle_wait_s,
                fill_s=self.spec.batch_wait_s,
                max_bytes=self.spec.max_bytes,
            )
            honour_cancellation()  # before its sink starts: fetched and un-acked, it comes again
            self._consumer_loop.progressed()
            if messages:
                self._start(messages)

    async def _refresh_lag(self, subscription: PullSubscription) -> None:
        now = time.monotonic()
        if now < self._lag_due:
            return
        self._lag_due = now + self.lag_refresh_s
        info = await subscription.consumer_info()
        metrics.CONSUMER_LAG.labels(self.spec.name).set(info.num_pending or 0)

    def _start(self, messages: list[Message]) -> None:
        name = self.spec.name
        events = sum(count_events(message.data) for message in messages)
        self.unacked += events
        metrics.CONSUMED.labels(name).inc(len(messages))
        metrics.BATCH_SIZE.labels(name).observe(len(messages))
        if redelivered := sum(deliveries(message) > 1 for message in messages):
            metrics.REDELIVERED.labels(name).inc(redelivered)
        task = asyncio.create_task(self._process(messages, events))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, messages: list[Message], events: int) -> None:
        try:
            decoded: list[tuple[Message, Items]] = []
            for message in messages:
                if self.spec.raw:
                    decoded.append((message, unpack(message.data)))
                    continue
                try:
                    decoded.append((message, decode_all(message.data)))
                except Invalid as error:  # it can never succeed: no point retrying it
                    await self._dead_letter(message, error, "undecodable")
            await self._deliver_all(decoded)
        except NATS_FAILURES as error:
            metrics.CONSUMER_ERRORS.labels(self.spec.name, type(error).__name__).inc()
            log.warning("stream_verdict_failed", consumer=self.spec.name, error=type(error).__name__)
        finally:
            self.unacked -= events

    async def _deliver_all(self, decoded: list[tuple[Message, Items]]) -> None:
        """Every run of the batch, one after the other, the whole batch kept alive meanwhile."""
        messages = [message for message, _ in decoded]
        keep_alive = asyncio.create_task(self._keep_alive(messages))
        try:
            for part in self._parts(decoded):
                await self._deliver(part)
        finally:
            keep_alive.cancel()
            await asyncio.gather(keep_alive, return_exceptions=True)

    def _parts(self, decoded: list[tuple[Message, Items]]) -> list[list[tuple[Message, Items]]]:
        """`decoded` in runs of whole messages of at most `batch_size` events (a message of more is
        a run of its own): a sink is handed about the events its spec sizes it for, however many
        each message carries. A raw sink gets the batch whole: it hands bytes to one COPY, whose
        cost is per statement (the event sink in runs of 1,000 spent 4 to 5 µs more an event in
        `bench/events` than in one COPY a batch)."""
        if self.spec.raw:
            return [decoded] if decoded else []
        parts: list[list[tuple[Message, Items]]] = []
        size = 0
        for message, items in decoded:
            if not parts or size + len(items) > self.spec.batch_size:
                parts.append([])
                size = 0
            parts[-1].append((message, items))
            size += len(items)
        return parts

    async def _deliver(self, decoded: list[tuple[Message, Items]]) -> None:
        messages = [message for message, _ in decoded]
        try:
            await self._call_sink(messages, [item for _, items in decoded for item in items])
        except Exception as error:
            log.warning("stream_batch_failed", consumer=self.spec.name, size=len(messages), error=repr(error))
            if len(decoded) == 1 or isinstance(error, Unavailable):
                for message in messages:
                    await self._fail(message, error)
                return
            await self._isolate(decoded)
            return
        await self._ack(messages)

    async def _isolate(self, decoded: list[tuple[Message, Items]]) -> None:
        """The batch again, one message at a time: the good ones proceed, the bad one fails alone
        (with the events it carries: a message is acked, retried or dead-lettered whole)."""
        for message, items in decoded:
            try:
                await self._call_sink([message], items)
            except Exception as error:
                await self._fail(message, error)
            else:
                await self._ack([message])

    async def _call_sink(self, messages: list[Message], items: Items) -> None:
        started = time.perf_counter()
        try:
            await self.sink(items)  # type: ignore[arg-type]  # envelopes, or bytes when spec.raw
        finally:
            metrics.PROCESSING_SECONDS.labels(self.spec.name).observe(time.perf_counter() - started)

    async def _keep_alive(self, messages: list[Message]) -> None:
        """Tell JetStream the batch is still being worked on (a slow sink, or runs of it waiting their
        turn), so it does not deliver any of it again; what has its verdict is left alone."""
        while True:
            await asyncio.sleep(self.spec.ack_wait_s / 2)
            try:
                async with asyncio.timeout(self.nats.timeout_s):
                    for message in messages:
                        if not message._ackd:  # nats-py's mark of an ack, NAK or term sent
                            await message.in_progress()
            except NATS_FAILURES as error:
                log.info("stream_keep_alive_failed", consumer=self.spec.name, error=type(error).__name__)
                return

    async def _ack(self, messages: list[Message]) -> None:
        """Every message acked in one write, or none (any connection may ack: the shared one)."""
        async with asyncio.timeout(self.nats.timeout_s):
            await ack_all(self.nats.client, messages)
        metrics.ACKED.labels(self.spec.name).inc(len(messages))
        events = sum(count_events(message.data) for message in messages)
        metrics.EVENTS_ACKED.labels(self.spec.name).inc(events)

    async def _fail(self, message: Message, error: Exception) -> None:
        metrics.FAILED.labels(self.spec.name).inc()
        deliveries = message.metadata.num_delivered
        if isinstance(error, Unavailable) or deliveries < self.spec.max_deliver:
            async with asyncio.timeout(self.nats.timeout_s):
                await message.nak(delay=self.spec.backoff_after(deliveries))
            return
        await self._dead_letter(message, error, "max_deliver")

    async def _dead_letter(self, message: Message, error: Exception, reason: str) -> None:
        js = await self.nats.jetstream()
        async with asyncio.timeout(self.nats.timeout_s):
            await publish_dead_letter(js, self._dead_letter_name, message, self.spec.name, error)
            await message.term()
        metrics.DEAD_LETTERED.labels(self.spec.name, reason).inc()
        sequence = message.metadata.sequence.stream
        log.warning("stream_dead_lettered", consumer=self.spec.name, sequence=sequence, reason=reason)

    async def _finish(self) -> None:
        """Make sure the last acks (and the NAKs of what the subscription held: `unsubscribe`) left
        this process before it exits."""
        client = self.nats.client
        try:
            async with asyncio.timeout(self.nats.timeout_s):
                if client is not None and client.is_connected:
                    await client.flush(timeout=max(int(self.nats.timeout_s), 1))
        except NATS_FAILURES as error:  # JetStream delivers what it did not hear of again
            log.warning("stream_finish_failed", consumer=self.spec.name, error=type(error).__name__)
