"""The one reconnecting consumer loop every JetStream consumer of Sophia's runs in.

`await ConsumerLoop(nats, name=..., reconnect_max_s=...).run(subscribe, consume, stop)`: subscribe,
hand the subscription to `consume` until `stop` is set; on a NATS failure, unsubscribe (within the
connection's timeout), wait a backoff with full jitter (cut short by `stop`) and subscribe again.
`consume` calls `progressed()` once it has fetched, so a consumer that subscribes but never fetches
keeps backing off instead of retrying at the first delay. Cancellation is honoured at every turn,
including one Python 3.11's `wait_for` swallowed (see `honour_cancellation`).

`PullSubscription` is how every consumer receives: pull requests answered on an inbox of its own, the
messages collected as the connection reads them (`DeliveringClient.subscribe_direct`) and handed
over in batches by `take`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as InboxSubscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from sophia.events.connection import NATS_FAILURES, NatsConnection
from sophia.shared.logging import get_logger
from sophia.shared.resilience import backoff_delays, honour_cancellation

__all__ = [
    "NATS_FAILURES",
    "ConsumerConfig",
    "ConsumerLoop",
    "Message",
    "PullSubscription",
    "ensure_consumer",
    "explicit_ack_consumer",
]

log = get_logger(__name__)

Message = Msg
"""A message fetched from a subscription (acked, nak'd or kept alive by its consumer)."""

ENDED = frozenset({"404", "408", "409"})
"""Statuses of a pull request JetStream ended unfilled: no messages, expired, or a conflict (too many
requests waiting, a leadership change, the consumer deleted); what it still asked for will not come."""


def explicit_ack_consumer(
    name: str, *, ack_wait_s: float, max_ack_pending: int, filter_subject: str | None = None
) -> ConsumerConfig:
    """A durable pull consumer that acks each message itself and is never cut off by the server:
    no delivery limit, since Sophia's consumers count attempts and give up themselves."""
    return ConsumerConfig(
        name=name,
        durable_name=name,
        filter_subject=filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
    )


async def ensure_consumer(
    js: JetStreamContext, stream: str, config: ConsumerConfig, *, replaces: tuple[str, ...] = ()
) -> None:
    """Create the durable consumer `config` names on `stream`, or update its settings.

    `replaces`: consumers of the same stream it takes over from (their sinks now run in its). Created
    while any of them is there, it starts at the oldest message one of them has not acked, so
    nothing any of them still owed is skipped (what the others had done comes again, to idempotent
    sinks) and the stream's past is not delivered anew; then they are deleted. An existing
    consumer keeps where it started: JetStream refuses to change a consumer's deliver policy.
    Without `replaces` this is one `add_consumer`."""
    if replaces:
        try:
            current = await js.consumer_info(stream, str(config.durable_name))
            config = replace(
                config,
                deliver_policy=current.config.deliver_policy,
                opt_start_seq=current.config.opt_start_seq,
            )
        except NotFoundError:
            if (start := await _oldest_unacked(js, stream, replaces)) is not None:
                config = replace(config, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
    await js.add_consumer(stream, config)
    for name in replaces:
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(stream, name)
            log.info("consumer_retired", stream=stream, consumer=name, by=config.durable_name)


async def _oldest_unacked(js: JetStreamContext, stream: str, names: tuple[str, ...]) -> int | None:
    """The first stream sequence past the lowest ack floor of the consumers `names` that exist."""
    floors = []
    for name in names:
        with contextlib.suppress(NotFoundError):
            info = await js.consumer_info(stream, name)
            floors.append(info.ack_floor.stream_seq if info.ack_floor is not None else 0)
    return min(floors) + 1 if floors else None


@dataclass(slots=True)
class _Request:
    """A pull request JetStream has not filled or ended yet."""

    left: int
    """Messages it asked for that have not arrived."""
    deadline: float
    """Past it (its expiry and the connection's timeout), it is taken for lost."""


class PullSubscription:
    """A durable pull consumer bound to an inbox of its own: `await PullSubscription.bind(nats,
    stream, durable)`, then `take` batches until `unsubscribe`.

    nats-py's `fetch` awaits each message of a batch with a `wait_for` of its own, a task and a
    timer a message: consuming a stream that way cost 27 µs of CPU a message, 12 µs with a
    callback, and less again handed over as the connection reads them (`docs/streams.md`). Here
    pull requests go out for at most the room the caller has, counting what was asked and has not
    arrived yet; the connection's read loop hands every message and status to `_take_in`, in
    order; `take` hands over what has arrived. A request counts until it is filled, ended by JetStream (a
    status in `ENDED`) or past its expiry by the connection's timeout (a reconnect can lose one):
    so what is asked, arrived and taken and not yet acked never passes what the caller had room for.
    Any other status (no responders: the consumer is gone) fails the next `take` with `APIError`.
    """

    def __init__(
        self, client: Client, js: JetStreamContext, stream: str, durable: str, timeout_s: float
    ) -> None:
        self._client, self._js = client, js
        self.stream, self.durable, self.timeout_s = stream, durable, timeout_s
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = client.new_inbox()
        self._inbox_subscription: InboxSubscription | None = None
        self._ready: list[Msg] = []
        self._open: deque[_Request] = deque()  # oldest first: JetStream fills them in that order
        self._want = 1
        self._arrived = asyncio.Event()
        self._error: APIError | None = None

    @classmethod
    async def bind(cls, nats: NatsConnection, stream: str, durable: str) -> PullSubscription:
        js = await nats.jetstream()  # connects first if needed
        client = nats.client
        assert client is not None  # connected by jetstream()
        pull = cls(client, js, stream, durable, nats.timeout_s)
        pull._inbox_subscription = await client.subscribe_direct(pull._inbox, pull._take_in)
        return pull

    def _take_in(self, message: Msg) -> None:
        if message.reply:  # a message of the stream (a status has no ack subject)
            self._ready.append(message)
            if self._open:
                self._open[0].left -= 1
                if self._open[0].left <= 0:
                    self._open.popleft()
        else:
            headers = message.headers or {}
            status = headers.get("Status", "")
            if status in ENDED:
                if self._open:
                    self._open.popleft()
            else:
                description = headers.get("Description") or "pull refused"
                self._error = APIError(code=int(status or 0), description=description)
        if len(self._ready) >= self._want or not self._open or self._error is not None:
            self._arrived.set()

    async def take(
        self, room: int, *, wait_s: float, fill_s: float = 0.0, max_bytes: int | None = None
    ) -> list[Msg]:
        """At most `room` messages: what has arrived, else the first to arrive within `wait_s`, and
        then what else arrives within `fill_s`, until `room` have or nothing more is asked for.
        An empty list: nothing came in `wait_s`. `max_bytes` bounds what a pull request brings
        (JetStream ends it there, with a 409); it must exceed the largest message, which would
        otherwise never come."""
        self._raise_error()
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._open and self._open[0].deadline < now:  # lost in a reconnect, or its status was
            self._open.popleft()
        outstanding = len(self._ready) + sum(request.left for request in self._open)
        # Topped up only once half the room is free (or nothing is asked): each pull request is a
        # message to JetStream and, unfilled, a 408 back at its expiry, and topping up after every
        # batch kept 15 or so open per consumer at 100 writes a second (docs/streams.md).
        if (ask := room - outstanding) > 0 and (not self._open or outstanding <= room // 2):
            request = {"batch": ask, "expires": int(wait_s * 1e9)}
            if max_bytes is not None:
                request["max_bytes"] = max(max_bytes, 2 * self._client.max_payload)
            payload = orjson.dumps(request)
            await self._client.publish(self._next, payload, reply=self._inbox)
            self._open.append(_Request(ask, now + wait_s + self.timeout_s))
        if not self._ready:
            await self._until(1, wait_s + self.timeout_s)
        if self._ready and fill_s > 0:
            await self._until(room, fill_s)
        self._raise_error()
        taken, self._ready = self._ready[:room], self._ready[room:]
        return taken

    async def _until(self, count: int, timeout_s: float) -> None:
        self._want = count
        self._arrived.clear()
        if len(self._ready) >= count or not self._open or self._error is not None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._arrived.wait()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def consumer_info(self) -> ConsumerInfo:
        info: ConsumerInfo = await self._js.consumer_info(self.stream, self.durable)
        return info

    async def unsubscribe(self) -> None:
        """Stop receiving, and hand back what arrived and was never taken (NAK: JetStream delivers it
        again at once, not after the ack wait), as every consumer's stop and reconnect should."""
        if self._inbox_subscription is not None:
            subscription, self._inbox_subscription = self._inbox_subscription, None
            await subscription.unsubscribe()  # its direct route goes with it
        held, self._ready = self._ready, []
        for message in held:
            await message.nak()


class ConsumerLoop:
    """Subscribe, consume, reconnect with backoff; `failures` counts failures since progress."""

    def __init__(
        self,
        nats: NatsConnection,
        *,
        name: str,
        reconnect_max_s: float,
        on_failure: Callable[[BaseException], None] = lambda error: None,
    ) -> None:
        self.nats = nats
        self.name = name
        self.on_failure = on_failure
        self.failures = 0
        self._delays = backoff_delays(12, 0.1, reconnect_max_s)

    def progressed(self) -> None:
        """The consumer fetched: the next failure backs off from the start again."""
        self.failures = 0

    async def run(
        self,
        subscribe: Callable[[], Awaitable[PullSubscription]],
        consume: Callable[[PullSubscription], Awaitable[None]],
        stop: asyncio.Event,
    ) -> None:
        while not stop.is_set():
            honour_cancellation()
            subscription = None
            try:
                subscription = await subscribe()
                await consume(subscription)
            except NATS_FAILURES as error:
                honour_cancellation()  # a swallowed cancel can surface as a NATS failure
                self.on_failure(error)
                delay = self._delays[min(self.failures, len(self._delays) - 1)]
                self.failures += 1
                log.warning("consumer_failed", consumer=self.name, error=repr(error), retry_s=round(delay, 3))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            finally:
                if subscription is not None:
                    with contextlib.suppress(*NATS_FAILURES):
                        async with asyncio.timeout(self.nats.timeout_s):
                            await subscription.unsubscribe()
