"""Publishing envelopes to their streams with backpressure: refuse while a stream is nearly full.

A stream refuses messages once full (`discard: new`), so a batch could be half taken. To make that
rare, the publisher looks at each stream's fill (cached for a second) and refuses the whole batch
up front at `refuse_at` of its limit: `Unavailable` with Retry-After, which the API answers as 503.
Each event goes out with `Nats-Msg-Id` = its id, so a client that resends a batch with the same
ids after a failure adds nothing twice (JetStream's duplicate window, then the sink's primary key).

Publishing is pipelined: every message of a batch is written at once (`publish_async`, at most
`max_pending` awaiting their acks) and the acks are awaited together, under one deadline that
grows with the batch. A request per message (`js.publish`) cost a future, a timer and a task per
event: 37 % of the API's CPU per event in `bench/events`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError

from sophia.core.errors import Invalid, Unavailable
from sophia.core.event_types import EVENT_TYPES
from sophia.core.events import Envelope
from sophia.events.codec import encode
from sophia.events.connection import NatsConnection
from sophia.events.streams import StreamSpec, ensure_streams

PUBLISH_CHUNK = 1_000
"""Each started thousand events of a batch adds the connection's timeout to the batch's deadline."""
MAX_PENDING = 20_000
"""Publishes awaiting their acks per process: two of the largest batches at once without waiting
(nats-py's default of 4,000 made two 2,000-event requests queue on its semaphore)."""
FILL_TTL_S = 1.0
FULL_RETRY_AFTER_S = 5


class EventPublisher:
    """`await publisher.publish(envelopes)`: all acknowledged by JetStream, or an error."""

    def __init__(
        self, nats: NatsConnection, streams: Mapping[str, StreamSpec], *, refuse_at: float = 0.9
    ) -> None:
        self.nats = nats
        self.streams = streams
        self.refuse_at = refuse_at
        self._fill: dict[str, tuple[float, float]] = {}
        self._ready = False
        self._pipeline: tuple[Client, JetStreamContext] | None = None

    def spec_of(self, envelope: Envelope) -> StreamSpec:
        event_type = EVENT_TYPES.get(envelope.type)
        if event_type is None or event_type.stream not in self.streams:
            raise Invalid(f"No stream takes events of type {envelope.type!r}.")
        return self.streams[event_type.stream]

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        js = await self.nats.jetstream()
        try:
            if not self._ready:
                await ensure_streams(js, self.streams.values())
                self._ready = True
            targets = [(self.spec_of(envelope), envelope) for envelope in envelopes]
            for name in {spec.name for spec, _ in targets}:
                await self._check_room(js, name)
            await self._publish_all(targets)
        except APIError as error:
            self._fill.clear()
            raise Unavailable(
                f"JetStream refused the events ({error.description}); send the batch again, same ids.",
                retry_after_s=FULL_RETRY_AFTER_S,
            ) from error
        except (NatsError, OSError, TimeoutError) as error:
            raise Unavailable(f"NATS is unreachable: {type(error).__name__}", retry_after_s=2) from error

    async def _publish_all(self, targets: list[tuple[StreamSpec, Envelope]]) -> None:
        """Write every message, then await every ack; the first refusal (or the deadline) raises.

        Acks still out at the deadline are cancelled, which frees their places in the pipeline."""
        js = self._pipelined()
        acks: list[asyncio.Future[PubAck]] = []
        try:
            async with asyncio.timeout(self.nats.timeout_s * math.ceil(len(targets) / PUBLISH_CHUNK)):
                for spec, envelope in targets:
                    subject = spec.subject(envelope.key, envelope.type)
                    headers = {"Nats-Msg-Id": envelope.id}
                    acks.append(await js.publish_async(subject, encode(envelope), headers=headers))
                await asyncio.wait(acks)
        finally:
            for ack in acks:
                ack.cancel()
        for ack in acks:
            if (error := ack.exception()) is not None:
                raise error

    def _pipelined(self) -> JetStreamContext:
        """One JetStream context per client for pipelined publishing: each has its own reply
        subscription, so a context per batch would leave a subscription behind every time."""
        client = self.nats.client
        assert client is not None, "jetstream() connected first"
        if self._pipeline is None or self._pipeline[0] is not client:
            context = client.jetstream(timeout=self.nats.timeout_s, publish_async_max_pending=MAX_PENDING)
            self._pipeline = (client, context)
        return self._pipeline[1]

    async def _check_room(self, js: JetStreamContext, stream: str) -> None:
        now = time.monotonic()
        checked = self._fill.get(stream)
        if checked is None or now - checked[0] > FILL_TTL_S:
            info = await js.stream_info(stream)
            limit = info.config.max_bytes or 0
            fill = info.state.bytes / limit if limit > 0 else 0.0
            checked = self._fill[stream] = (now, fill)
        if checked[1] >= self.refuse_at:
            raise Unavailable(
                f"The {stream} stream is {checked[1]:.0%} full; events are refused until consumers catch up.",
                retry_after_s=FULL_RETRY_AFTER_S,
            )
