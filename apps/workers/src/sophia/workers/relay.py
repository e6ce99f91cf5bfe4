"""The outbox relay: catalog events from `sophia_core.outbox` to JetStream, each exactly once.

A batch is claimed `FOR UPDATE SKIP LOCKED`, so several relays share the backlog without sending
an event twice. Every event goes out with `Nats-Msg-Id` = its outbox id, and JetStream drops a
second copy within its duplicate window: a relay that dies between JetStream's ack and its own
delete re-sends nothing new. Rows are deleted only once JetStream has acknowledged them, in the
transaction that claimed them; the ones that failed stay for the next round.

The relay sleeps until a trigger's NOTIFY wakes it (a dedicated connection LISTENs), and polls
every `SOPHIA_OUTBOX_POLL_S` in case a notification was missed. NATS down: publishing fails, rows
stay, the relay backs off (with jitter) and catches up when NATS returns; writes never wait on it.

Order: events of one key keep their order with one relay (its batches go out in id order on one
connection). Several relays running at once trade that for availability.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Mapping
from types import TracebackType

from sophia.core.errors import Unavailable
from sophia.core.event_types import EVENT_TYPES
from sophia.core.events import Envelope, uuid7
from sophia.database import Database, outbox
from sophia.database.listener import Listener
from sophia.database.outbox import OutboxEvent
from sophia.events.codec import encode
from sophia.events.connection import NATS_FAILURES, NatsConnection
from sophia.events.streams import StreamSpec, ensure_streams
from sophia.shared.logging import get_logger
from sophia.shared.resilience import backoff_delays, honour_cancellation
from sophia.workers.metrics import OUTBOX_DEPTH, RELAY_BATCH_SECONDS, RELAY_FAILURES, RELAYED

DEPTH_OBSERVE_INTERVAL_S = 1.0

log = get_logger(__name__)

SOURCE = "catalog"
PUBLISH_FAILURES = NATS_FAILURES


def envelope_of(event: OutboxEvent) -> Envelope:
    """The event as it goes on the bus; the same bytes every time the row is published (its id
    is a UUIDv7 made of the row's time and outbox id)."""
    event_type = EVENT_TYPES.get(event.event_type)
    return Envelope(
        id=str(uuid7(int(event.created_at.timestamp() * 1000), event.id)),
        type=event.event_type,
        schema_version=event_type.schema_version if event_type else 1,
        occurred_at=event.created_at,
        source=SOURCE,
        key=event.key,
        payload=event.payload,
    )


class OutboxRelay:
    """`async with OutboxRelay(...) as relay: await relay.run()`; or `relay_once()` for one batch."""

    def __init__(
        self,
        database: Database,
        nats: NatsConnection,
        streams: Mapping[str, StreamSpec],
        *,
        batch: int = 500,
        poll_s: float = 1.0,
        backoff_max_s: float = 5.0,
    ) -> None:
        self.database = database
        self.nats = nats
        self.streams = streams
        self.batch = batch
        self.poll_s = poll_s
        self.backoff_max_s = backoff_max_s
        self.wake = asyncio.Event()
        self._listener = Listener(
            database.dsn or "",
            outbox.NOTIFY_CHANNEL,
            self.wake.set,
            timeout_s=database.settings.engine_timeout_s,
        )
        self._depth_observed_at = -DEPTH_OBSERVE_INTERVAL_S
        self._streams_ready = False

    async def __aenter__(self) -> OutboxRelay:
        await self._listen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._unlisten()

    async def _listen(self) -> None:
        """Woken by the outbox's NOTIFY; without it (PostgreSQL away) the relay polls."""
        failure = await self._listener.open()
        if failure is not None:
            log.warning("outbox_listen_failed", error=failure.__name__)

    async def _unlisten(self) -> None:
        await self._listener.close()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until `stop` is set (the batch in flight finishes first) or cancelled: drain, wait
        for a wake-up or the poll, again."""
        stop = stop or asyncio.Event()
        failures = 0
        delays = backoff_delays(12, 0.1, self.backoff_max_s)
        while not stop.is_set():
            honour_cancellation()
            self.wake.clear()
            try:
                relayed = await self.relay_once()
            except PUBLISH_FAILURES as error:
                RELAY_FAILURES.labels(type(error).__name__).inc()
                self._streams_ready = False
                with contextlib.suppress(Unavailable):
                    await self._observe_depth()
                delay = delays[min(failures, len(delays) - 1)]
                failures += 1
                log.warning("outbox_relay_failed", error=type(error).__name__, retry_s=round(delay, 3))
                await _first(stop.wait(), asyncio.sleep(delay))
                continue
            failures = 0
            if relayed >= self.batch:
                continue  # a full batch: more is likely waiting
            await self._listen()  # back after a Postgres outage
            await _first(stop.wait(), self.wake.wait(), asyncio.sleep(self.poll_s))

    async def relay_once(self) -> int:
        """Publish one batch and delete what JetStream acknowledged; the number published.

        Raises when something could not be published (after deleting what could)."""
        started = time.perf_counter()
        async with self.database.connection() as connection, connection.transaction():
            events = await outbox.claim(connection, self.batch)
            if not events:
                OUTBOX_DEPTH.set(0)
                return 0
            js = await self.nats.jetstream()
            if not self._streams_ready:
                await ensure_streams(js, self.streams.values())
                self._streams_ready = True
            results = await asyncio.gather(
                *(self._publish(js, event) for event in events), return_exceptions=True
            )
            published = [event for event, result in zip(events, results, strict=True) if result is None]
            await outbox.delete(connection, [event.id for event in published])
        for event in published:
            RELAYED.labels(event.topic).inc()
        RELAY_BATCH_SECONDS.observe(time.perf_counter() - started)
        failed = [result for result in results if isinstance(result, BaseException)]
        if failed:
            self._streams_ready = False  # NATS may have come back without its streams
            await self._observe_depth()
            raise failed[0]
        if len(events) < self.batch:
            OUTBOX_DEPTH.set(0)
        else:
            await self._observe_depth()
        return len(published)

    async def _observe_depth(self) -> None:
        """The backlog gauge, at most once a second: its cost stays the same whatever the backlog."""
        now = time.monotonic()
        if now - self._depth_observed_at < DEPTH_OBSERVE_INTERVAL_S:
            return
        self._depth_observed_at = now
        async with self.database.connection() as connection:
            OUTBOX_DEPTH.set((await outbox.depth(connection)).events)

    async def _publish(self, js: object, event: OutboxEvent) -> None:
        spec = self.streams[event.topic]
        await js.publish(  # type: ignore[attr-defined]
            spec.subject(event.key, event.event_type),
            encode(envelope_of(event)),
            stream=spec.name,
            headers={"Nats-Msg-Id": str(event.id)},
        )


async def _first(*waits: Coroutine[object, object, object]) -> None:
    """Until the first of `waits` is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
