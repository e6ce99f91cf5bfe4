"""Publishing envelopes to their streams with backpressure: refuse while a stream is nearly full.

A stream refuses messages once full (`discard: new`), so a batch could be half taken. To make that
rare, the publisher looks at each stream's fill (cached for a second) and refuses the whole batch
up front at `refuse_at` of its limit: `Unavailable` with Retry-After, which the API answers as 503.
The events of one subject travel several to a message (`pack`: NATS's cost and every consumer's
is per message, not per byte). A message carries a `Nats-Msg-Id` made of its events' ids, so a
client that resends a batch with the same ids after a failure adds nothing twice: the same batch
packs into the same messages, which JetStream's duplicate window drops; whatever else overlaps
(the same events in another batch) is dropped by the sink's primary key.

How: JetStream atomic batches where the stream allows them (nats-server 2.12+, `allow_atomic`).
Up to 1,000 messages of one stream go out as plain publishes carrying `Nats-Batch-Id` and
`Nats-Batch-Sequence`; only the first and the committing last one are requests, and JetStream
stores all of them or none (why, with figures: docs/decisions/0004-atomic-batches.md). Batches of
one stream go in order, so a key's
events keep their order. A batch JetStream refuses as a whole for a reason that concerns single
messages (an id it already holds: the client is resending; too many batches in flight) is sent
again pipelined: every message with its own ack, written all at once, so the duplicates are
dropped one by one and the rest stored. The acks are our own (`PipelinedAcks`): nats-py's
`publish_async` never completes the ack of a refused message.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError

from sophia.core.errors import Invalid, Unavailable
from sophia.core.event_types import EVENT_TYPES
from sophia.core.events import Envelope
from sophia.events.codec import PACK_BYTES, PACK_EVENTS, encode
from sophia.events.connection import NatsConnection
from sophia.events.streams import StreamSpec, ensure_streams, partition_of
from sophia.events.wire import batch_frame, write_frames

PUBLISH_CHUNK = 1_000
"""Each started thousand messages of a batch adds the connection's timeout to the batch's deadline.
Also JetStream's largest atomic batch."""

ATOMIC_IN_FLIGHT = 8
"""Atomic batches one process has open at once (JetStream allows 50 per stream)."""
RESEND_ONE_BY_ONE = frozenset({10201, 10210})
"""JetStream's codes for "the batch holds an id already stored" and "too many batches in flight"."""
NO_RESPONDERS = "503"
"""The status NATS answers a request with when no stream listens on its subject."""
FILL_TTL_S = 1.0
FULL_RETRY_AFTER_S = 5


class EventPublisher:
    """`await publisher.publish(envelopes)`: all acknowledged by JetStream, or an error."""

    def __init__(
        self,
        nats: NatsConnection,
        streams: Mapping[str, StreamSpec],
        *,
        refuse_at: float = 0.9,
        info_ttl_s: float = FILL_TTL_S,
        atomic: bool = True,
    ) -> None:
        self.nats = nats
        self.streams = streams
        self.refuse_at = refuse_at
        self.atomic = atomic
        """Several messages to one stream go as one atomic batch where the stream allows it (the
        events API's all or nothing). The outbox relay needs no batch: it deletes only what was
        acknowledged and sends the rest again under the same message ids, which JetStream drops
        as copies; and a batch's commit cost JetStream more than the publishes (docs/streams.md)."""
        self.info_ttl_s = info_ttl_s
        """How long a stream's fill (and whether it takes atomic batches) is trusted."""
        self._fill: dict[str, tuple[float, float]] = {}
        self._atomic: dict[str, bool] = {}
        self._atomic_slots = asyncio.Semaphore(ATOMIC_IN_FLIGHT)
        self._ready = False
        self._pipeline: PipelinedAcks | None = None

    def spec_of(self, envelope: Envelope) -> StreamSpec:
        event_type = EVENT_TYPES.get(envelope.type)
        if event_type is None or event_type.stream not in self.streams:
            raise Invalid(f"No stream takes events of type {envelope.type!r}.")
        return self.streams[event_type.stream]

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        by_stream: dict[str, list[tuple[StreamSpec, Envelope]]] = {}
        for envelope in envelopes:
            spec = self.spec_of(envelope)
            by_stream.setdefault(spec.name, []).append((spec, envelope))
        await self._publish_streams(by_stream)

    async def publish_to(self, stream: str, envelopes: Sequence[Envelope]) -> None:
        """`envelopes` to the stream `stream` names (a key of `streams`), whatever their types say:
        for the outbox relay, whose rows name their stream."""
        spec = self.streams[stream]
        await self._publish_streams({spec.name: [(spec, envelope) for envelope in envelopes]})

    async def _publish_streams(self, by_stream: dict[str, list[tuple[StreamSpec, Envelope]]]) -> None:
        js = await self.nats.jetstream()
        try:
            if not self._ready:
                await ensure_streams(js, self.streams.values())
                self._ready = True
            for name in by_stream:
                await self._check_room(js, name)
            await asyncio.gather(
                *(self._publish_stream(name, targets) for name, targets in by_stream.items())
            )
        except APIError as error:
            self._forget()
            raise Unavailable(
                f"JetStream refused the events ({error.description}); send the batch again, same ids.",
                retry_after_s=FULL_RETRY_AFTER_S,
            ) from error
        except NoStreamResponseError as error:
            self._forget()
            raise Unavailable(
                "No stream took the events (one was deleted?); it is made again for the next batch.",
                retry_after_s=1,
            ) from error
        except (NatsError, OSError, TimeoutError) as error:
            self._forget()
            raise Unavailable(f"NATS is unreachable: {type(error).__name__}", retry_after_s=2) from error

    def _forget(self) -> None:
        """After a failure, trust nothing learned of the streams: the next batch looks again and
        makes any stream that is gone (deleted by an operator, a server that lost its store)."""
        self._fill.clear()
        self._ready = False

    async def _publish_stream(self, stream: str, targets: list[tuple[StreamSpec, Envelope]]) -> None:
        messages = pack(targets)
        for start in range(0, len(messages), PUBLISH_CHUNK):
            chunk = messages[start : start + PUBLISH_CHUNK]
            # One message is all or nothing by itself; an atomic batch of one would cost JetStream
            # a batch's commit (and its flush) for nothing.
            if self.atomic and self._atomic.get(stream) and len(chunk) > 1:
                try:
                    async with self._atomic_slots, asyncio.timeout(self.nats.timeout_s):
                        await self._publish_atomic(chunk)
                    continue
                except APIError as error:
                    if error.err_code not in RESEND_ONE_BY_ONE:
                        raise
            await self._publish_all(chunk)

    async def _publish_atomic(self, messages: list[Packed]) -> None:
        """One all-or-nothing batch: a request opens it, plain publishes fill it, a request commits."""
        client = self.nats.client
        assert client is not None, "jetstream() connected first"
        batch_id, last = uuid.uuid4().hex, len(messages)

        async def request(sequence: int) -> dict[str, Any]:
            subject, message_id, payload = messages[sequence - 1]
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(sequence)}
            headers["Nats-Msg-Id"] = message_id
            if sequence == last:
                headers["Nats-Batch-Commit"] = "1"
            reply = await client.request(subject, payload, headers=headers, timeout=self.nats.timeout_s)
            answer: dict[str, Any] = orjson.loads(reply.data) if reply.data else {}
            if "error" in answer:
                raise APIError.from_error(answer["error"])
            return answer

        answer = await request(1)  # opens the batch
        frames = [
            batch_frame(subject, batch_id, sequence, message_id, payload, client.max_payload)
            for sequence, (subject, message_id, payload) in enumerate(messages[1:-1], 2)
        ]
        await write_frames(client, frames)  # the middle, as one write (none for two or fewer)
        if last > 1:
            answer = await request(last)  # commits it
        if answer.get("count") != last:
            committed = answer.get("count")
            raise Unavailable(f"JetStream committed {committed} of {last} messages.", retry_after_s=1)

    async def _publish_all(self, messages: list[Packed]) -> None:
        """Write every message, then await every ack; the first refusal (or the deadline) raises.

        Acks still out at the deadline are cancelled, which forgets them."""
        pipeline = await self._pipelined()
        acks: list[asyncio.Future[None]] = []
        try:
            async with asyncio.timeout(self.nats.timeout_s * math.ceil(len(messages) / PUBLISH_CHUNK)):
                for subject, message_id, payload in messages:
                    acks.append(await pipeline.publish(subject, payload, {"Nats-Msg-Id": message_id}))
                await asyncio.wait(acks)
        finally:
            for ack in acks:
                ack.cancel()
        for ack in acks:
            if (error := ack.exception()) is not None:
                raise error

    async def _pipelined(self) -> PipelinedAcks:
        """One reply subscription per client (a new one after the client is replaced)."""
        client = self.nats.client
        assert client is not None, "jetstream() connected first"
        if self._pipeline is None or self._pipeline.client is not client:
            self._pipeline = await PipelinedAcks.subscribe(client)
        return self._pipeline

    async def _check_room(self, js: JetStreamContext, stream: str) -> None:
        now = time.monotonic()
        checked = self._fill.get(stream)
        if checked is None or now - checked[0] >= self.info_ttl_s:
            info = await js.stream_info(stream)
            self._atomic[stream] = bool(info.config.allow_atomic)
            limit = info.config.max_bytes or 0
            fill = info.state.bytes / limit if limit > 0 else 0.0
            checked = self._fill[stream] = (now, fill)
        if checked[1] >= self.refuse_at:
            raise Unavailable(
                f"The {stream} stream is {checked[1]:.0%} full; events are refused until consumers catch up.",
                retry_after_s=FULL_RETRY_AFTER_S,
            )


Packed = tuple[str, str, bytes]
"""A message to publish: its subject, its `Nats-Msg-Id` and its body."""


def pack(targets: Sequence[tuple[StreamSpec, Envelope]]) -> list[Packed]:
    """The envelopes as messages: consecutive events of one subject (one partition, one type)
    several to a message, in order, one JSON envelope a line (at most `PACK_EVENTS` and about
    `PACK_BYTES`).

    Each partition of a stream is a lane: an event closes its lane's open message when that one is
    of another subject (another type), full, or would grow past `PACK_BYTES`, so the messages of a
    lane keep its events' order, and a key (whose events all share its partition) keeps its order
    across types (an upsert, a delete, an upsert). A message of one envelope is that envelope
    alone, with its id as `Nats-Msg-Id`; a message of several takes an id made of theirs
    (`pack_id`), so the same batch sent again packs into the same messages and JetStream drops
    them as duplicates."""
    messages: list[Packed] = []
    lanes: dict[tuple[str, int], _Open] = {}
    for spec, envelope in targets:
        subject = spec.subject(envelope.key, envelope.type)
        body = encode(envelope)
        lane = (spec.name, partition_of(envelope.key, spec.partitions))
        current = lanes.get(lane)
        if current is not None and not current.takes(subject, len(body)):
            messages.append(current.close())
            current = None
        if current is None:
            current = lanes[lane] = _Open(subject)
        current.add(envelope.id, body)
    messages += [current.close() for current in lanes.values()]
    return messages


class _Open:
    """A message being filled: its subject, its events' ids and bodies, their bytes."""

    __slots__ = ("bodies", "ids", "size", "subject")

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.ids: list[str] = []
        self.bodies: list[bytes] = []
        self.size = 0

    def takes(self, subject: str, size: int) -> bool:
        return subject == self.subject and len(self.bodies) < PACK_EVENTS and self.size + size <= PACK_BYTES

    def add(self, event_id: str, body: bytes) -> None:
        self.ids.append(event_id)
        self.bodies.append(body)
        self.size += len(body) + 1

    def close(self) -> Packed:
        return _packed(self.subject, self.ids, self.bodies)


def _packed(subject: str, ids: list[str], bodies: list[bytes]) -> Packed:
    if len(bodies) == 1:
        return subject, ids[0], bodies[0]
    return subject, pack_id(ids), b"\n".join(bodies)


def pack_id(ids: Sequence[str]) -> str:
    """The `Nats-Msg-Id` of a message of several events: a hash of their ids, in order."""
    return "pack-" + hashlib.blake2b("\n".join(ids).encode(), digest_size=16).hexdigest()


class PipelinedAcks:
    """JetStream publishes acked one by one without waiting in between: each message carries a reply
    subject of its own under one inbox subscription, and its future ends with the ack (a duplicate
    is an ack too) or with JetStream's refusal as an `APIError`."""

    def __init__(self, client: Client, prefix: str) -> None:
        self.client, self._prefix = client, prefix
        self._futures: dict[str, asyncio.Future[None]] = {}
        self._tokens = itertools.count()

    @classmethod
    async def subscribe(cls, client: Client) -> PipelinedAcks:
        acks = cls(client, client.new_inbox() + ".")
        await client.subscribe(acks._prefix + "*", cb=acks._answer)
        return acks

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future[None]:
        token = str(next(self._tokens))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        future.add_done_callback(lambda _: self._futures.pop(token, None))
        await self.client.publish(subject, payload, reply=self._prefix + token, headers=headers)
        return future

    async def _answer(self, message: Msg) -> None:
        future = self._futures.get(message.subject[len(self._prefix) :])
        if future is None or future.done():  # cancelled at its deadline
            return
        if message.headers and message.headers.get("Status") == NO_RESPONDERS:
            future.set_exception(NoStreamResponseError())
            return
        answer = orjson.loads(message.data) if message.data else {}
        if error := answer.get("error"):
            future.set_exception(
                APIError(
                    code=error.get("code"),
                    description=error.get("description"),
                    err_code=error.get("err_code"),
                )
            )
        else:
            future.set_result(None)
