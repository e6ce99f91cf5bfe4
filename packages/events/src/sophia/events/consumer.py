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

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from sophia.core.errors import Unavailable
from sophia.events.connection import NatsConnection
from sophia.shared.logging import get_logger
from sophia.shared.resilience import backoff_delays, honour_cancellation

log = get_logger(__name__)

NATS_FAILURES: tuple[type[BaseException], ...] = (NatsError, OSError, TimeoutError, Unavailable)
"""What ends a subscription and starts the reconnect: NATS away or refusing, a probe timing out."""

Subscription = JetStreamContext.PullSubscription


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
