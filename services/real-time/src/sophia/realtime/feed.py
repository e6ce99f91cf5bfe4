"""From JetStream to the hub: one ordered consumer per stream and process, and history on demand.

Each process reads each stream once (an ordered push consumer from where the stream stood when it
started: no gap before the first live event), parses each event once to find its channels, builds
one publication frame per channel from the stored bytes, and hands it to the hub only if some
client listens. History for a resume is read by a short-lived ordered consumer from the client's
position up to where the stream stands.

A position counts events, not messages: a message may carry several events (the publisher packs
those of one subject, `sophia.events.codec`), so the event at `index` of the message at JetStream
sequence `seq` is at `seq * PACK_SPAN + index`. A stream's epoch is its creation time and that
span: a client's position from before the stream was made again (or from another deployment, or
from before positions counted events) has another epoch, and gets a resync instead of a silent
gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

import orjson
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import Histogram

from sophia.events.codec import PACK_SPAN, unpack
from sophia.events.connection import NatsConnection
from sophia.events.streams import StreamSpec
from sophia.realtime.channels import channels_of
from sophia.realtime.hub import Hub
from sophia.realtime.protocol import publication
from sophia.shared.logging import get_logger

log = get_logger(__name__)

FANOUT_SECONDS = Histogram(
    "sophia_realtime_fanout_seconds",
    "From an event stored in JetStream to its frames queued for every subscriber",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REPLAY_MAX_MESSAGES = 100_000
"""The most messages of a stream one resume reads; further behind, the client gets a resync."""
REPLAY_MAX_EVENTS = 100_000
"""The most events one resume reads (a message carries up to 256): past them, a resync, so that no
resume holds more than this many in memory."""
REPLAY_MAX_BYTES = 64 * 1024 * 1024
"""The most bytes of frames one resume holds: its history is put together in memory before it is
sent (events may be up to NATS's max_payload each, 1 MiB, so `REPLAY_MAX_EVENTS` alone let one
resume hold GBs, as much as the stream keeps); past them, a resync."""
REPLAY_IDLE_S = 2.0


class TooFarBehind(Exception):
    """A resume whose history is past `REPLAY_MAX_EVENTS` or `REPLAY_MAX_BYTES`: `reason` says
    which, in the resync the client gets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def too_many_bytes() -> TooFarBehind:
    return TooFarBehind(f"more than {REPLAY_MAX_BYTES:,} bytes of history behind")


@dataclass(frozen=True, slots=True)
class StreamState:
    epoch: str
    first_seq: int
    last_seq: int
    """JetStream's sequences of the first and the last message stored."""

    @property
    def last(self) -> int:
        """A position after every event of the last message (and before any of the next)."""
        return self.last_seq * PACK_SPAN + PACK_SPAN - 1

    def not_resumable(self, epoch: str, after: int) -> str | None:
        """Why a resume after position `after` of `epoch` cannot be served, or None."""
        seq, index = divmod(after, PACK_SPAN)
        if epoch != self.epoch:
            return "the stream was made again since that position (another epoch)"
        if after > self.last:
            return "that position is ahead of the stream"
        # What follows `after` is in its own message (gone once that message is) unless `after` is
        # the end of one: a position that ends a message's span (a live subscriber's, at start).
        next_seq = seq + 1 if index == PACK_SPAN - 1 else seq
        if next_seq < self.first_seq:
            return "that position is older than the stream's history"
        if self.last_seq - seq > REPLAY_MAX_MESSAGES:
            return f"more than {REPLAY_MAX_MESSAGES:,} messages behind"
        return None


class StreamFeed:
    """The live feed of one stream into the hub, and its history (`replay`)."""

    def __init__(
        self, nats: NatsConnection, spec: StreamSpec, family_stream: str, hub: Hub, *, history_events: int
    ) -> None:
        self.nats = nats
        self.spec = spec
        self.family_stream = family_stream
        """The stream's unprefixed name (what `channels_of` knows it by)."""
        self.hub = hub
        self.epoch = ""
        self.live_seq = 0
        """The position of the last event handed to the hub."""
        self._recent: deque[tuple[int, bytes, tuple[str, ...]]] = deque(maxlen=history_events)
        """The last `history_events` events the feed brought (position, stored bytes, channels):
        most resumes are served from here without reading JetStream."""
        self._recent_after = 0
        """`_recent` holds every event after this position."""
        self._subscription: object | None = None

    async def state(self) -> StreamState:
        js = await self.nats.jetstream()
        info = await js.stream_info(self.spec.name)
        created = info.created
        created_us = int(created.timestamp() * 1_000_000) if created is not None else 0
        return StreamState(f"{created_us}-{PACK_SPAN}", int(info.state.first_seq), int(info.state.last_seq))

    async def start(self) -> None:
        js = await self.nats.jetstream()
        state = await self.state()
        self.epoch, self.live_seq = state.epoch, state.last
        self._recent.clear()
        self._recent_after = state.last
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=state.last_seq + 1
        )
        self._subscription = await js.subscribe(
            f"{self.spec.name}.>", cb=self._on_message, ordered_consumer=True, config=config
        )
        log.info(
            "realtime_feed_started", stream=self.spec.name, epoch=self.epoch, from_seq=state.last_seq + 1
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()  # type: ignore[attr-defined]
            self._subscription = None

    async def _on_message(self, message: Msg) -> None:
        seq = message.metadata.sequence.stream
        start = seq * PACK_SPAN
        if start <= self.live_seq:  # seen (an ordered consumer starts over after a gap)
            return
        events = unpack(message.data)
        if len(events) > PACK_SPAN:  # not packed by Sophia: more than a position can count
            log.warning("realtime_message_too_long", stream=self.spec.name, seq=seq, events=len(events))
            events = events[:PACK_SPAN]
        for index, data in enumerate(events):
            self._on_event(start + index, data)
        stored = message.metadata.timestamp
        if stored is not None:
            FANOUT_SECONDS.observe(max(0.0, time.time() - stored.timestamp()))

    def _on_event(self, position: int, data: bytes) -> None:
        self.live_seq = position
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("realtime_event_unreadable", stream=self.spec.name, position=position)
            return
        if not isinstance(event, dict):
            return
        channels = tuple(channels_of(self.family_stream, event))
        if len(self._recent) == self._recent.maxlen:  # the oldest is dropped for this one
            self._recent_after = self._recent[0][0] if self._recent else position
        self._recent.append((position, data, channels))
        for channel in channels:
            if self.hub.listened(channel):
                self.hub.publish(channel, position, publication(channel, self.epoch, position, data))

    def recent(self, channel: str, after_seq: int) -> list[tuple[int, bytes]] | None:
        """The publications of `channel` after position `after_seq` up to `live_seq`, from memory;
        None if memory does not reach back that far (read the stream: `replay`); `TooFarBehind`
        past `REPLAY_MAX_BYTES` of them."""
        if after_seq > self.live_seq:  # ahead of this feed: the stream says whether it is real
            return None
        if after_seq == self.live_seq:
            return []
        if after_seq < self._recent_after:
            return None
        frames: list[tuple[int, bytes]] = []
        held = 0
        for position, data, channels in self._recent:
            if position > after_seq and channel in channels:
                frame = publication(channel, self.epoch, position, data)
                held += len(frame)
                if held > REPLAY_MAX_BYTES:
                    raise too_many_bytes()
                frames.append((position, frame))
        return frames

    async def replay(self, channel: str, after_seq: int, until_seq: int) -> list[tuple[int, bytes]]:
        """The publications of `channel` with positions in (`after_seq`, `until_seq`], in order;
        `TooFarBehind` when that is more than `REPLAY_MAX_EVENTS` events of the stream or more
        than `REPLAY_MAX_BYTES` of publications."""
        frames: list[tuple[int, bytes]] = []
        first = max(after_seq // PACK_SPAN, 1)  # the message of `after_seq` may hold more events
        if until_seq <= after_seq or until_seq // PACK_SPAN < first:
            return frames  # no message to read (a stream with none yet: JetStream numbers from 1)
        read = held = 0
        js = await self.nats.jetstream()
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first)
        subscription = await js.subscribe(f"{self.spec.name}.>", ordered_consumer=True, config=config)
        try:
            while True:
                try:
                    message = await subscription.next_msg(timeout=REPLAY_IDLE_S)
                except TimeoutError:  # nothing more stored (the rest was deleted): done
                    break
                start = message.metadata.sequence.stream * PACK_SPAN
                if start > until_seq:
                    break
                events = unpack(message.data)[:PACK_SPAN]
                read += len(events) - max(0, min(after_seq - start + 1, len(events)))  # after `after_seq`
                if read > REPLAY_MAX_EVENTS:
                    raise TooFarBehind(f"more than {REPLAY_MAX_EVENTS:,} events behind")
                for index, data in enumerate(events):
                    position = start + index
                    if after_seq < position <= until_seq and self._carries(channel, data):
                        frame = publication(channel, self.epoch, position, data)
                        held += len(frame)
                        if held > REPLAY_MAX_BYTES:
                            raise too_many_bytes()
                        frames.append((position, frame))
                if start + PACK_SPAN > until_seq:
                    break
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        return frames

    def _carries(self, channel: str, data: bytes) -> bool:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        return isinstance(event, dict) and channel in channels_of(self.family_stream, event)


async def wait_started(feeds: list[StreamFeed], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        await asyncio.gather(*(feed.start() for feed in feeds))
