"""Who listens to what in one process, and each listener's bounded queue of frames.

`Hub.publish(channel, seq, frame)` hands the same bytes to every subscription of the channel. A
subscription delivers each sequence once, in order (a frame at or before the last one it
delivered is dropped), and while it replays history it holds live frames back and releases those
past the replay afterwards: no gap and no duplicate where history meets the live feed. A client
whose queue holds `max_queue` frames is dropped (it may resume from its last position): one slow
reader never slows the others or grows memory without limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import Counter, Gauge

FRAMES_OUT = Counter("sophia_realtime_frames_total", "Frames queued for WebSocket clients")
SLOW_DROPPED = Counter("sophia_realtime_slow_consumers_total", "Clients disconnected for falling behind")
SUBSCRIPTIONS = Gauge("sophia_realtime_subscriptions", "Subscriptions, by channel family", ["family"])


class Client:
    """One WebSocket's side of the hub: its queue of frames and its subscriptions.

    Lean on purpose, since at 10,000 connections every object a connection holds counts: slotted,
    a list for the queue and a future only while someone waits (an `asyncio.Event` or a `deque`
    costs about 760 bytes each, empty)."""

    __slots__ = (
        "_frames",
        "_wakeup",
        "_writing",
        "_written",
        "behind",
        "max_queue",
        "on_drop",
        "subscriptions",
    )

    def __init__(self, *, max_queue: int, on_drop: Callable[[], None] = lambda: None) -> None:
        self.max_queue = max_queue
        self.subscriptions: dict[str, Subscription] = {}
        self.behind: str | None = None
        """Set (the reason) once the client was dropped for falling behind."""
        self.on_drop = on_drop
        """Called once when the client is dropped: its writer may be stuck on a socket the peer
        does not read, so the connection is closed from outside it."""
        self._frames: list[bytes] = []
        self._writing = False
        self._wakeup: asyncio.Future[None] | None = None
        """The writer's wait for a frame."""
        self._written: asyncio.Future[None] | None = None
        """A wait for everything queued to be written (a drain, a resume between its steps)."""

    def send(self, frame: bytes) -> None:
        if self.behind is not None:
            return
        if len(self._frames) >= self.max_queue:
            self.drop(f"more than {self.max_queue} frames behind")
            return
        self._frames.append(frame)
        FRAMES_OUT.inc()
        _wake(self._wakeup)

    def drop(self, reason: str) -> None:
        """Stop queueing for this client: its connection is closed with `reason` (it may resume)."""
        if self.behind is None:
            self.behind = reason
            self._frames = []
            SLOW_DROPPED.inc()
            _wake(self._wakeup)
            _wake(self._written)
            self.on_drop()

    @property
    def queued(self) -> int:
        return len(self._frames)

    async def next_frames(self) -> list[bytes]:
        """Every frame queued, once there is one (none once the client is behind). The caller
        writes them, then calls `written()`."""
        while not self._frames and self.behind is None:
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        frames, self._frames = self._frames, []
        self._writing = bool(frames)
        return frames

    def written(self) -> None:
        """The frames `next_frames` gave were written."""
        self._writing = False
        if not self._frames:
            _wake(self._written)

    async def all_written(self) -> None:
        """Until everything queued so far is written (or the client is dropped)."""
        while (self._frames or self._writing) and self.behind is None:
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
        self._held: list[tuple[int, bytes]] = []

    def offer(self, seq: int, frame: bytes) -> None:
        if self.replaying:
            self._held.append((seq, frame))
            if len(self._held) > self.client.max_queue:  # the live feed outran the replay
                self.client.drop(f"more than {self.client.max_queue} frames behind while catching up")
            return
        if seq > self.last_seq:
            self.last_seq = seq
            self.client.send(frame)

    def go_live(self) -> None:
        """The replay is sent: release what the live feed brought meanwhile, past it."""
        self.replaying = False
        held, self._held = self._held, []
        for seq, frame in held:
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

    def publish(self, channel: str, seq: int, frame: bytes) -> None:
        for subscription in tuple(self._by_channel.get(channel, ())):
            subscription.offer(seq, frame)
