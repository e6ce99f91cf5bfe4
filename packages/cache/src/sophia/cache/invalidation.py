"""Invalidation messages on Redis pub/sub, and the listener that applies other processes' to L1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
import redis.asyncio as redis
from redis.asyncio.client import PubSub

from sophia.cache.l2 import REDIS_FAILURES
from sophia.shared.logging import get_logger
from sophia.shared.resilience import backoff_delays, honour_cancellation

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Invalidation:
    """Keys and tags to drop, and the cache instance that sent it; `epoch` set: drop everything,
    and read Redis in that epoch from now on."""

    origin: str
    keys: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    epoch: int | None = None

    def encode(self) -> bytes:
        body = {"origin": self.origin, "keys": self.keys, "tags": self.tags, "epoch": self.epoch}
        return orjson.dumps(body)

    @classmethod
    def decode(cls, data: bytes) -> Invalidation | None:
        try:
            body = orjson.loads(data)
            epoch = body.get("epoch")
            return cls(
                str(body["origin"]),
                tuple(body["keys"]),
                tuple(body["tags"]),
                None if epoch is None else int(epoch),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


class InvalidationListener:
    """Subscribes to `channels` and hands each message to `apply`, reconnecting with backoff.

    `tried` is set once the first subscription has succeeded or failed; `subscribed` while it holds.

    redis-py renews a dropped subscription by itself on a new connection; the confirmation that
    arrives then is taken for the gap it is. A subscription counts once Redis has confirmed every
    channel (redis-py only sends the command: a server that is shutting down can still accept the
    connection and never answer).
    `on_subscribed(after_gap)` runs after each successful subscription, before any message is
    handled; `after_gap` is true after a failure: messages sent meanwhile are lost, so the owner
    should drop what they might have invalidated. If it raises one of `REDIS_FAILURES` the gap
    stays open: the listener reconnects and calls it again with `after_gap` true.
    """

    def __init__(
        self,
        client: redis.Redis,
        channels: tuple[str, ...],
        apply: Callable[[Invalidation], None],
        on_subscribed: Callable[[bool], Awaitable[None]],
        *,
        reconnect_max_s: float = 1.0,
        confirm_timeout_s: float = 2.0,
    ) -> None:
        self.client = client
        self.channels = channels
        self.apply = apply
        self.on_subscribed = on_subscribed
        self.reconnect_max_s = reconnect_max_s
        self.confirm_timeout_s = confirm_timeout_s
        self.subscribed = asyncio.Event()
        self.tried = asyncio.Event()
        self.reconnects = 0
        self._failures = 0

    async def run(self) -> None:
        delays = backoff_delays(10, 0.05, self.reconnect_max_s)
        while True:
            honour_cancellation()
            try:
                await self._listen()
            except REDIS_FAILURES as error:
                self.subscribed.clear()
                self.tried.set()
                delay = delays[min(self._failures, len(delays) - 1)]
                self._failures += 1
                log.warning(
                    "cache_listener_disconnected", error=type(error).__name__, retry_s=round(delay, 3)
                )
                await asyncio.sleep(delay)

    async def _listen(self) -> None:
        pubsub = self.client.pubsub()
        try:
            deadline = asyncio.get_running_loop().time() + self.confirm_timeout_s
            async with asyncio.timeout_at(deadline):
                await pubsub.subscribe(*self.channels)
            await _confirmed(pubsub, len(self.channels), deadline)
            after_gap = self._failures > 0
            await self.on_subscribed(after_gap)
            if after_gap:
                self._failures = 0
                self.reconnects += 1
            self.subscribed.set()
            self.tried.set()
            while True:
                # redis-py waits for each message under a timeout that can swallow a cancellation
                # arriving as it expires (Python 3.11): the cache's exit then waited for ever
                honour_cancellation()
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message.get("type") == "subscribe":  # redis-py reconnected and subscribed again
                    # by itself: what was published meanwhile is lost, a gap like any other
                    raise ConnectionError("the subscription was renewed on a new connection")
                if message.get("type") != "message":
                    continue
                invalidation = Invalidation.decode(message["data"])
                if invalidation is not None:
                    try:
                        self.apply(invalidation)
                    except Exception:  # one bad message must not end the subscription
                        log.exception("cache_invalidation_failed", channel=message.get("channel"))
        finally:
            with contextlib.suppress(*REDIS_FAILURES):
                await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]


async def _confirmed(pubsub: PubSub, channels: int, deadline: float) -> None:
    """Wait until `deadline` (the loop's clock) for Redis to confirm `channels` subscriptions (no
    message can come before them). Each read is bounded by the time left, not cancelled: redis-py's
    own timeout can swallow a cancellation that arrives as it expires."""
    loop = asyncio.get_running_loop()
    confirmed = 0
    while confirmed < channels:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError(f"Redis confirmed {confirmed} of {channels} subscriptions before the deadline")
        message = await pubsub.get_message(timeout=left)
        if message is not None and message.get("type") == "subscribe":
            confirmed += 1
