"""The one reconnecting consumer loop every JetStream consumer of Sophia's runs in.

`await ConsumerLoop(nats, name=..., reconnect_max_s=...).run(subscribe, consume, stop)`: subscribe,
hand the subscription to `consume` until `stop` is set; on a NATS failure, unsubscribe (within the
connection's timeout), wait a backoff with full jitter (cut short by `stop`) and subscribe again.
`consume` calls `progressed()` once it has fetched, so a consumer that subscribes but never fetches
keeps backing off instead of retrying at the first delay. Cancellation is honoured at every turn,
including one Python 3.11's `wait_for` swallowed (see `honour_cancellation`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from sophia.events.connection import NATS_FAILURES, NatsConnection
from sophia.shared.logging import get_logger
from sophia.shared.resilience import backoff_delays, honour_cancellation

__all__ = [
    "NATS_FAILURES",
    "ConsumerConfig",
    "ConsumerLoop",
    "Message",
    "Subscription",
    "explicit_ack_consumer",
]

log = get_logger(__name__)

Subscription = JetStreamContext.PullSubscription
Message = Msg
"""A message fetched from a subscription (acked, nak'd or kept alive by its consumer)."""


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
        subscribe: Callable[[], Awaitable[Subscription]],
        consume: Callable[[Subscription], Awaitable[None]],
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
