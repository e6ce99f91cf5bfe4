"""Publishing envelopes to their streams with backpressure: refuse while a stream is nearly full.

A stream refuses messages once full (`discard: new`), so a batch could be half taken. To make that
rare, the publisher looks at each stream's fill (cached for a second) and refuses the whole batch
up front at `refuse_at` of its limit: `Unavailable` with Retry-After, which the API answers as 503.
Each event goes out with `Nats-Msg-Id` = its id, so a client that resends a batch with the same
ids after a failure adds nothing twice (JetStream's duplicate window, then the sink's primary key).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError

from sophia.core.errors import Invalid, Unavailable
from sophia.core.event_types import EVENT_TYPES
from sophia.core.events import Envelope
from sophia.events.codec import encode
from sophia.events.connection import NatsConnection
from sophia.events.streams import StreamSpec, ensure_streams

PUBLISH_CHUNK = 1_000
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
            for start in range(0, len(targets), PUBLISH_CHUNK):
                chunk = targets[start : start + PUBLISH_CHUNK]
                await asyncio.gather(*(self._publish(js, spec, envelope) for spec, envelope in chunk))
        except APIError as error:
            self._fill.clear()
            raise Unavailable(
                f"JetStream refused the events ({error.description}); send the batch again, same ids.",
                retry_after_s=FULL_RETRY_AFTER_S,
            ) from error
        except (NatsError, OSError, TimeoutError) as error:
            raise Unavailable(f"NATS is unreachable: {type(error).__name__}", retry_after_s=2) from error

    async def _publish(self, js: JetStreamContext, spec: StreamSpec, envelope: Envelope) -> None:
        subject = spec.subject(envelope.key, envelope.type)
        headers = {"Nats-Msg-Id": envelope.id}
        await js.publish(subject, encode(envelope), stream=spec.name, headers=headers)

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
