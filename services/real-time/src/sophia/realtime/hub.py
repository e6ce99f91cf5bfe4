"""Who listens to what in one process, and each listener's bounded backlog of frames.

`Hub.publish(channel, seq, frame)` hands the same bytes to every subscription of the channel. A
subscription delivers each sequence once, in order (a frame at or before the last one it
delivered is dropped), and while it replays history it holds live frames back and releases those
past the replay afterwards: no gap and no duplicate where history meets the live feed.

A client's frames are written to its connection at once, without awaiting (server.py's
`Connection.write_frame`): no task and no queue per connection. Only while the connection's transport
holds more than its write limit unsent (flow control: the peer reads slower than it is sent to)
do frames wait, in order, in the client's backlog, written as the transport drains. A client
whose backlog holds `max_queue` frames is dropped (it may resume from its last position): one
slow reader never slows the others or grows memory without limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from prometheus_client import Counter, Gauge

FRAMES_OUT = Counter("sophia_realtime_frames_total", "Frames queued for WebSocket clients")
SLOW_DROPPED = Counter("sophia_realtime_slow_consumers_total", "Clients disconnected for falling behind")
BYTES_OUT = Counter(
    "sophia_realtime_bytes_total", "Bytes of the frames written or queued for WebSocket clients"
)
BACKLOG = Gauge(
    "sophia_realtime_backlog_frames", "Frames waiting in clients' backlogs (their transports full)"
)
SUBSCRIPTIONS = Gauge("sophia_realtime_subscriptions", "Subscriptions, by channel family", ["family"])


class Link(Protocol):
    """Where a client's frames go: its WebSocket connection (server.py's `Connection`)."""

    @property
    def paused(self) -> bool:
        """Whether the transport holds more than its write limit unsent (asyncio flow control)."""
        ...

    def write_frame(self, frame: bytes) -> bool:
        """Write `frame` as a text frame now, without waiting; False once the connection is closed."""
        ...


def _ignore(client: Client) -> None:
    pass


class Client:
    """One WebSocket's side of the hub: its subscriptions, and its backlog while its transport is full.

    Lean on purpose, since at 10,000 connections every object a connection holds counts: slotted,
    no task, the backlog a list made only while the transport pushes back, a future only while
    someone waits for it to empty (an `asyncio.Event` or a `deque` costs about 760 bytes each,
    empty)."""

    __slots__ = ("_backlog", "_written", "behind", "closed", "link", "max_queue", "on_drop", "subscriptions")

    def __init__(self, link: Link, *, max_queue: int, on_drop: Callable[[Client], None] = _ignore) -> None:
        self.link = link
        self.max_queue = max_queue
        self.subscriptions: dict[str, Subscription] = {}
        self.behind: str | None = None
        """Set (the reason) once the client was dropped for falling behind."""
        self.closed = False
        """Set once its connection is gone: nothing more is written."""
        self.on_drop = on_drop
        """Called once when the client is dropped: its connection is closed from there."""
        self._backlog: list[bytes] | None = None
        """Frames waiting for the transport to drain, in order; None while it takes them."""
        self._written: asyncio.Future[None] | None = None
        """A wait for the backlog to be written (a drain, a resume between its steps)."""

    def send(self, frame: bytes) -> None:
        if self.behind is not None or self.closed:
            return
        backlog = self._backlog
        if backlog is None:
            if not self.link.paused:
                if self.link.write_frame(frame):
                    FRAMES_OUT.inc()
                    BYTES_OUT.inc(len(frame))
                return
            self._backlog = backlog = []
        elif len(backlog) >= self.max_queue:
            self.drop(f"more than {self.max_queue} frames behind")
            return
        backlog.append(frame)
        FRAMES_OUT.inc()
        BYTES_OUT.inc(len(frame))
        BACKLOG.inc()

    def drop(self, reason: str) -> None:
        """Stop writing to this client: its connection is closed with `reason` (it may resume)."""
        if self.behind is None and not self.closed:
            self.behind = reason
            self._forget_backlog()
            SLOW_DROPPED.inc()
            _wake(self._written)
            self.on_drop(self)

    @property
    def queued(self) -> int:
        """Frames waiting for the transport to drain."""
        return len(self._backlog) if self._backlog is not None else 0

    def drained(self) -> None:
        """The transport took its unsent bytes below its low-water mark: write the backlog, in
        order, until it pushes back again."""
        backlog = self._backlog
        if backlog is None or self.behind is not None or self.closed:
            return
        link, written = self.link, 0
        for frame in backlog:
            if link.paused:
                break
            link.write_frame(frame)
            written += 1
        BACKLOG.dec(written)
        if written == len(backlog):
            self._backlog = None
            _wake(self._written)
        elif written:
            del backlog[:written]

    def lost(self) -> None:
        """The connection is gone: drop the backlog, wake whoever waits for it."""
        self.closed = True
        self._forget_backlog()
        _wake(self._written)

    def _forget_backlog(self) -> None:
        if self._backlog is not None:
            BACKLOG.dec(len(self._backlog))
            self._backlog = None

    async def all_written(self) -> None:
        """Until everything sent so far is handed to the transport (or the client is dropped or gone)."""
        while self._backlog is not None and self.behind is None and not self.closed:
            if self._written is None or self._written.done():
                self._written = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._written)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Subscription:
    """One client's subscription to one channel, at a position of the channel's stream."""

    __slots__ = ("_held", "channel", "client", "family", "last_seq", "replaying")

    def __init__(self, client: Client, channel: str, family: str, last_seq: int, *, replaying: bool) -> None:
        self.client = client
        self.channel = channel
        self.family = family
        self.last_seq = last_seq
        self.replaying = replaying
        self._held: list[tuple[int, bytes]] | None = [] if replaying else None
        """Live frames held back while the subscription replays history (None once live)."""

    def offer(self, seq: int, frame: bytes) -> None:
        if self.replaying:
            if self.client.behind is not None or self.client.closed:
                return  # dropped: nothing will be released, its connection is closing
            held = self._held
            if held is None:
                self._held = held = []
            held.append((seq, frame))
            if len(held) > self.client.max_queue:  # the live feed outran the replay
                self.client.drop(f"more than {self.client.max_queue} frames behind while catching up")
            return
        if seq > self.last_seq:
            self.last_seq = seq
            self.client.send(frame)

    def go_live(self) -> None:
        """The replay is sent: release what the live feed brought meanwhile, past it."""
        self.replaying = False
        held, self._held = self._held, None
        for seq, frame in held or ():
            self.offer(seq, frame)


class Hub:
    """Subscriptions by channel, in this process."""

    def __init__(self) -> None:
        self._by_channel: dict[str, set[Subscription]] = {}

    def add(self, subscription: Subscription) -> None:
        self._by_channel.setdefault(subscription.channel, set()).add(subscription)
        subscription.client.subscriptions[subscription.channel] = subscription
        SUBSCRIPTIONS.labels(subscription.family).inc()

    def remove(self, subscription: Subscription) -> None:
        listeners = self._by_channel.get(subscription.channel)
        if listeners is not None and subscription in listeners:
            listeners.discard(subscription)
            if not listeners:
                del self._by_channel[subscription.channel]
            SUBSCRIPTIONS.labels(subscription.family).dec()
        subscription.client.subscriptions.pop(subscription.channel, None)

    def listened(self, channel: str) -> bool:
        return channel in self._by_channel

    def subscriptions_by_family(self) -> dict[str, int]:
        """Subscriptions now, by channel family (a channel's name up to its first `:`)."""
        counts: dict[str, int] = {}
        for channel, listeners in self._by_channel.items():
            family = channel.split(":", 1)[0]
            counts[family] = counts.get(family, 0) + len(listeners)
        return counts

    def publish(self, channel: str, seq: int, frame: bytes) -> None:
        for subscription in tuple(self._by_channel.get(channel, ())):
            subscription.offer(seq, frame)
